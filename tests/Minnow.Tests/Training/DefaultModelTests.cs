using Minnow.Loading;
using Minnow.Models;
using Minnow.Tokenizers;
using Minnow.Training;
using Xunit.Abstractions;

namespace Minnow.Tests.Training;

/// <summary>
/// The shipped models/default (trained by scripts/train-default-model.sh) must load in the inference engine and
/// predict its held-out text (the last 5% of the training file, never trained on) far better than chance.
/// </summary>
public unsafe class DefaultModelTests(ITestOutputHelper output)
{
    private const int Context = 128;

    /// <summary>Held-out windows (129 tokens: 128 inputs, 128 targets) scored by the inference engine (slow in Debug builds).</summary>
    private const int EngineWindows = 2;

    /// <summary>Held-out windows scored by the training engine's forward pass.</summary>
    private const int Windows = 24;

    /// <summary>
    /// The shipped model's measured mean NLL is 3.862 nats over the engine's windows and 4.060 nats (perplexity 57.9)
    /// over the 24 windows; the bounds leave a margin of 0.1 nats for kernel changes but fail if the model is
    /// replaced by a worse one or loading breaks. Chance is ln 2048 = 7.62.
    /// </summary>
    private const double MaxEngineMeanNll = 3.96;

    private const double MaxMeanNll = 4.16;

    private static string Folder => Path.Combine(SharedData.RepositoryRoot, "models", "default");

    private static int[] HeldOutTokens(int count)
    {
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(Folder, "tokenizer.json"));
        var ids = tokenizer.Encode(File.ReadAllText(Path.Combine(Folder, "held-out.txt")), addSpecial: false);
        Assert.True(ids.Count >= count, $"held-out.txt has only {ids.Count} tokens");
        return ids.Take(count).ToArray();
    }

    [Fact]
    public void DefaultModel_IsASmallTiedLlamaWithItsTokenizer()
    {
        using var model = ModelLoader.LoadModel(Folder);
        var c = model.Config;
        Assert.Equal(Architecture.Llama, c.Architecture);
        Assert.Equal(2048, c.VocabSize);
        Assert.Equal(0, c.HiddenSize % 256);
        Assert.Equal(0, c.IntermediateSize % 256);
        Assert.True(c.TieEmbeddings);
        Assert.InRange(model.Weights.ParameterCount, 1_000_000, 8_000_000);
        long bytes = Directory.GetFiles(Folder).Sum(f => new FileInfo(f).Length);
        Assert.True(bytes < 16_000_000, $"models/default holds {bytes} bytes");
        Assert.Equal(2048, ByteLevelBpe.Load(Path.Combine(Folder, "tokenizer.json")).VocabSize);
    }

    [Fact]
    public void DefaultModel_HeldOutLoss_IsFarBelowChanceInBothEngines()
    {
        var tokens = HeldOutTokens((Windows * Context) + 1);
        using var model = ModelLoader.LoadModel(Folder);
        int vocab = model.Config.VocabSize;
        var logits = new float[Context * vocab];
        double total = 0;
        for (int w = 0; w < EngineWindows; w++)
        {
            var window = tokens.AsSpan(w * Context, Context + 1);
            using var cache = new KvCache(model.Config, Context);
            fixed (float* p = logits)
            {
                model.Forward(window[..Context], cache, p, allLogits: true);
            }

            for (int t = 0; t < Context; t++)
            {
                var row = logits.AsSpan(t * vocab, vocab);
                float max = float.NegativeInfinity;
                foreach (float v in row)
                {
                    max = MathF.Max(max, v);
                }

                double sum = 0;
                foreach (float v in row)
                {
                    sum += Math.Exp(v - max);
                }

                total += Math.Log(sum) + max - row[window[t + 1]];
            }
        }

        double engineMean = total / (EngineWindows * Context);
        using var trainable = LlamaTrainingModel.Load(Folder);
        double trainingEngineMean = Trainer.MeanNll(trainable, tokens.AsSpan(0, (EngineWindows * Context) + 1), Context);
        double mean = Trainer.MeanNll(trainable, tokens, Context);
        output.WriteLine($"held-out mean NLL: engine {engineMean:F4} and training forward {trainingEngineMean:F4} over {EngineWindows * Context} tokens; " +
            $"{mean:F4} (perplexity {Math.Exp(mean):F2}) over {Windows * Context} tokens");
        Assert.True(Math.Abs(trainingEngineMean - engineMean) < 1e-4 * engineMean, $"training forward {trainingEngineMean} vs engine {engineMean}");
        Assert.True(engineMean < MaxEngineMeanNll, $"held-out mean NLL in the engine {engineMean:F4} is above {MaxEngineMeanNll}");
        Assert.True(mean < MaxMeanNll, $"held-out mean NLL {mean:F4} is above {MaxMeanNll}");
    }
}
