using System.Text;
using Minnow.Models;
using Minnow.Training;
using Xunit.Abstractions;

namespace Minnow.Tests.Training;

public unsafe class TrainerTests(ITestOutputHelper output)
{
    private const string Text =
        "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. " +
        "All that glitters is not gold. The early bird catches the worm, but the second mouse gets the cheese. " +
        "Where there is a will, there is a way. Actions speak louder than words. Practice makes perfect. ";

    private static int[] ByteTokens() => Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat(Text, 8))).Select(b => (int)b).ToArray();

    /// <summary>The golden checkpoints' shape: vocab 256, hidden 64, 2 layers, 4 heads / 2 kv heads, FFN 176.</summary>
    private static ModelConfig GoldenSize() =>
        LlamaTrainingModel.CreateConfig(vocab: 256, hidden: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 176, maxPositions: 64, tieEmbeddings: false);

    /// <summary>The GPT-2 golden checkpoint's shape: vocab 256, n_embd 64, 2 layers, 4 heads, FFN 256, tanh GELU.</summary>
    private static ModelConfig Gpt2GoldenSize() => new()
    {
        Architecture = Architecture.Gpt2,
        ModelType = "gpt2",
        HiddenSize = 64,
        IntermediateSize = 256,
        Layers = 2,
        Heads = 4,
        KvHeads = 4,
        HeadDim = 16,
        VocabSize = 256,
        MaxPositions = 128,
        NormEps = 1e-5f,
        Activation = Activation.GeluTanh,
        TieEmbeddings = true,
    };

    /// <summary>The GPT-NeoX golden checkpoint's shape: hidden 64, 3 layers, 4 heads, rotary_pct 0.25, parallel residual, exact GELU.</summary>
    private static ModelConfig NeoXGoldenSize() => new()
    {
        Architecture = Architecture.GptNeoX,
        ModelType = "gpt_neox",
        HiddenSize = 64,
        IntermediateSize = 256,
        Layers = 3,
        Heads = 4,
        KvHeads = 4,
        HeadDim = 16,
        RotaryDim = 4,
        VocabSize = 256,
        MaxPositions = 128,
        NormEps = 1e-5f,
        ParallelResidual = true,
        Activation = Activation.Gelu,
    };

    private static ITrainingModel CreateModel(string architecture, long seed) => architecture switch
    {
        "llama" => LlamaTrainingModel.CreateRandom(GoldenSize(), seed),
        "gpt_neox" => GptTrainingModel.CreateRandom(NeoXGoldenSize(), seed),
        "gpt2" => GptTrainingModel.CreateRandom(Gpt2GoldenSize(), seed),
        _ => throw new ArgumentOutOfRangeException(nameof(architecture)),
    };

    private static TrainingOptions Options(int steps) => new()
    {
        Steps = steps,
        BatchSize = 4,
        AccumulationSteps = 2,
        SequenceLength = 32,
        LearningRate = 3e-3f,
        WarmupSteps = 10,
        Seed = 42,
    };

    [Fact]
    public void Training_GoldenSizeModelFor200Steps_LowersTheLoss()
    {
        using var model = LlamaTrainingModel.CreateRandom(GoldenSize(), seed: 1);
        using var trainer = new Trainer(model, ByteTokens(), Options(200) with { AccumulationSteps = 1 });
        var losses = new List<double>();
        while (!trainer.Finished)
        {
            losses.Add(trainer.TrainStep().Loss);
        }

        double first = losses.Take(20).Average(), last = losses.TakeLast(20).Average();
        output.WriteLine($"mean loss of the first 20 steps {first:F3}, of the last 20 {last:F3}");
        Assert.Equal(200, losses.Count);
        Assert.InRange(losses[0], 5.3, 5.8); // an untrained model over 256 byte values starts near ln 256 = 5.55
        Assert.True(last < first - 1.5, $"loss went from {first:F3} to {last:F3}");
    }

    [Fact]
    public void Training_Gpt2GoldenSizeModelFor100Steps_LowersTheLoss()
    {
        using var model = GptTrainingModel.CreateRandom(Gpt2GoldenSize(), seed: 1);
        using var trainer = new Trainer(model, ByteTokens(), Options(100) with { AccumulationSteps = 1 });
        var losses = new List<double>();
        while (!trainer.Finished)
        {
            losses.Add(trainer.TrainStep().Loss);
        }

        double first = losses.Take(10).Average(), last = losses.TakeLast(10).Average();
        output.WriteLine($"gpt2: mean loss of the first 10 steps {first:F3}, of the last 10 {last:F3}");
        Assert.InRange(losses[0], 5.3, 5.8); // an untrained model over 256 byte values starts near ln 256 = 5.55
        Assert.True(last < first - 1.5, $"loss went from {first:F3} to {last:F3}");
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("gpt_neox")]
    [InlineData("gpt2")]
    public void Resume_FromCheckpointHalfway_IsBitIdenticalToAStraightRun(string architecture)
    {
        var tokens = ByteTokens();
        string folder = Path.Combine(Path.GetTempPath(), "minnow-resume-" + Guid.NewGuid().ToString("N"));
        try
        {
            float[] straight;
            using (var model = CreateModel(architecture, seed: 3))
            using (var trainer = new Trainer(model, tokens, Options(20)))
            {
                while (!trainer.Finished)
                {
                    trainer.TrainStep();
                }

                straight = Snapshot(model);
            }

            string checkpoint = Path.Combine(folder, "checkpoint.safetensors");
            using (var model = CreateModel(architecture, seed: 3))
            using (var trainer = new Trainer(model, tokens, Options(20)))
            {
                for (int i = 0; i < 10; i++)
                {
                    trainer.TrainStep();
                }

                trainer.SaveCheckpoint(checkpoint);
                trainer.TrainStep(); // work after the checkpoint that the resumed run must not see
            }

            Assert.Empty(Directory.GetFiles(folder, "*.tmp"));
            using (var resumed = Trainer.Resume(checkpoint, tokens))
            {
                Assert.Equal(10, resumed.Step);
                Assert.Equal(Options(20), resumed.Options);
                while (!resumed.Finished)
                {
                    resumed.TrainStep();
                }

                Assert.Equal(straight, Snapshot(resumed.Model));
            }
        }
        finally
        {
            if (Directory.Exists(folder))
            {
                Directory.Delete(folder, true);
            }
        }
    }

    private static float[] Snapshot(ITrainingModel model) =>
        new Span<float>(model.Parameters.Values, (int)model.Parameters.TotalFloats).ToArray();

    [Fact]
    public void Schedule_WarmsUpLinearlyThenDecaysByCosineToTheMinimum()
    {
        var s = new LearningRateSchedule(1f, 0.1f, 10, 110);
        Assert.Equal(0.1f, s.At(0), 6);
        Assert.Equal(1f, s.At(9), 6);
        Assert.Equal(1f, s.At(10), 6);
        Assert.Equal(0.55f, s.At(60), 5);
        Assert.Equal(0.1f, s.At(110), 6);
        Assert.True(s.At(30) > s.At(31));
    }

    [Fact]
    public void AdamW_MatchesTheClosedFormFirstStepAndSkipsDecayOnNorms()
    {
        using var store = new ParameterStore([("w", [2], true), ("norm", [2], false)]);
        var values = new Span<float>(store.Values, (int)store.TotalFloats);
        var grads = new Span<float>(store.Grads, (int)store.TotalFloats);
        values[(int)store["w"].Offset] = 1f;
        values[(int)store["norm"].Offset] = 1f;
        grads[(int)store["w"].Offset] = 0.5f;
        grads[(int)store["norm"].Offset] = 0.5f;
        using var adam = new AdamW(store, weightDecay: 0.1f);
        adam.Update(0.01f);
        // First step: m̂ = g, v̂ = g², so the step is lr·g/|g| = lr; decay multiplies by (1 − lr·wd) first.
        Assert.Equal((1f * (1 - 0.001f)) - 0.01f, values[(int)store["w"].Offset], 5);
        Assert.Equal(1f - 0.01f, values[(int)store["norm"].Offset], 5);
    }

    [Fact]
    public void ClipGlobalNorm_ScalesGradientsToTheLimit()
    {
        using var store = new ParameterStore([("a", [3], true), ("b", [1], true)]);
        var grads = new Span<float>(store.Grads, (int)store.TotalFloats);
        grads[(int)store["a"].Offset] = 3;
        grads[(int)store["b"].Offset] = 4;
        double before = GradientClipping.ClipGlobalNorm(store, 1.0);
        Assert.Equal(5.0, before, 6);
        Assert.Equal(1.0, GradientClipping.GlobalNorm(store), 4);
    }
}
