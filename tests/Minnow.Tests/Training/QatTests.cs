using Minnow.Loading;
using Minnow.Models;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tests.Cli;
using Minnow.Tokenizers;
using Minnow.Training;
using Xunit.Abstractions;
using CliHarness = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Training;

/// <summary>Quantization-aware training: fake-quantized linear weights with a straight-through estimator.</summary>
public unsafe class QatTests(ITestOutputHelper output)
{
    private static ModelConfig TinyConfig() =>
        LlamaTrainingModel.CreateConfig(vocab: 37, hidden: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 96, maxPositions: 16);

    [Theory]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q4_0)]
    [InlineData(DType.Q4_1)]
    [InlineData(DType.Q4_1_G64)]
    [InlineData(DType.Q4_1_G128)]
    public void FakeQuantizedRowIsBitIdenticalToQuantizeThenDequantize(DType type)
    {
        var rng = new SplitMix64(11);
        var values = new float[128 * 6];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)(rng.NextGaussian() * (i < 128 ? 1e-3 : 0.05));
        }

        values.AsSpan(128, 128).Clear(); // an all-zero group: d = 0
        byte[] bytes = Dequantize.FromFloats(type, values);
        var expected = new float[values.Length];
        fixed (byte* p = bytes)
        {
            Dequantize.Row(type, p, expected);
        }

        var actual = new float[values.Length];
        FakeQuantizer.Row(type, values, actual);
        Assert.Equal(expected, actual);
        FakeQuantizer.Row(type, values, values); // in place
        Assert.Equal(expected, values);
    }

    /// <summary>
    /// The straight-through estimator: with fake quantization on, the loss, the input (embedding) gradient and every
    /// weight gradient equal those of the same model whose linear weights are replaced by Q(W) with fake
    /// quantization off; the float weights are left as they were, and the gradients differ from plain float training.
    /// </summary>
    [Theory]
    [InlineData(DType.Q4_0)]
    [InlineData(DType.Q4_1)]
    public void StraightThroughGradientsEqualTheGradientsAtTheQuantizedWeights(DType scheme)
    {
        using var pool = new WorkerPool(2);
        var config = TinyConfig();
        using var qat = LlamaTrainingModel.CreateRandom(config, 5, pool);
        using var replaced = LlamaTrainingModel.CreateRandom(config, 5, pool);
        using var plain = LlamaTrainingModel.CreateRandom(config, 5, pool);
        qat.EnableFakeQuantization(scheme);
        var linear = qat.FakeQuantization!.Matrices.Select(p => p.Name).ToHashSet();
        Assert.Equal(config.Layers * 7, linear.Count);
        foreach (var p in replaced.Parameters.All.Where(p => linear.Contains(p.Name)))
        {
            var values = replaced.Parameters.ValueSpan(p);
            FakeQuantizer.Apply(scheme, values, (int)p.Shape[1]).CopyTo(values);
        }

        var before = qat.Parameters.All.ToDictionary(p => p.Name, p => qat.Parameters.ValueSpan(p).ToArray());
        const int batch = 3, seq = 12;
        var rng = new SplitMix64(6);
        var inputs = new int[batch * seq];
        var targets = new int[batch * seq];
        for (int i = 0; i < inputs.Length; i++)
        {
            inputs[i] = rng.NextInt(config.VocabSize);
            targets[i] = i % 7 == 3 ? -1 : rng.NextInt(config.VocabSize);
        }

        double lossQat = qat.ForwardBackward(inputs, targets, batch, seq).MeanLoss;
        double lossReplaced = replaced.ForwardBackward(inputs, targets, batch, seq).MeanLoss;
        double lossPlain = plain.ForwardBackward(inputs, targets, batch, seq).MeanLoss;
        output.WriteLine($"{scheme.Name()}: loss with fake quantization {lossQat:F6}, at Q(W) {lossReplaced:F6}, float {lossPlain:F6}");
        Assert.Equal(lossReplaced, lossQat, 6);

        double worst = 0, plainDifference = 0;
        foreach (var p in qat.Parameters.All)
        {
            var a = qat.Parameters.GradSpan(p);
            var b = replaced.Parameters.GradSpan(replaced.Parameters[p.Name]);
            var c = plain.Parameters.GradSpan(plain.Parameters[p.Name]);
            double norm = 0, diff = 0, diffPlain = 0;
            for (int i = 0; i < a.Length; i++)
            {
                norm += (double)b[i] * b[i];
                diff += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
                diffPlain += ((double)c[i] - b[i]) * ((double)c[i] - b[i]);
            }

            Assert.True(norm > 0, $"{p.Name}: no gradient");
            double relative = Math.Sqrt(diff / norm);
            worst = Math.Max(worst, relative);
            plainDifference = Math.Max(plainDifference, Math.Sqrt(diffPlain / norm));
            Assert.True(relative < 1e-5, $"{p.Name}: gradient differs from the one at Q(W) by {relative:E2} (relative)");
            Assert.Equal(before[p.Name], qat.Parameters.ValueSpan(p).ToArray()); // the float weights are untouched
        }

        output.WriteLine($"worst relative gradient difference against Q(W): {worst:E2}; against float training: {plainDifference:E2}");
        Assert.True(plainDifference > 1e-3, "fake quantization did not change the gradients");
    }

    /// <summary>
    /// A short seeded QAT run on the first part of the default model's held-out text, then RTN Q4_0: perplexity on
    /// the rest of the text against RTN Q4_0 of the original model.
    /// </summary>
    [Fact]
    public void ShortQatRunThenRoundToNearestQ4_0BeatsPlainRoundToNearestOnUnseenText()
    {
        string folder = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        using var pool = new WorkerPool(2);
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"));
        int[] ids = [.. tokenizer.Encode(File.ReadAllText(Path.Combine(folder, "held-out.txt")), addSpecial: false)];
        int split = ids.Length / 2;
        int[] train = ids[..split];
        int[] eval = ids[split..];
        using var original = ModelLoader.LoadModel(folder, pool);
        using var rtn = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = DType.Q4_0 }, pool: pool);
        var baseline = ModelComparison.Compare(original, rtn.Model, eval, ctx: 128, maxChunks: 64);

        // QAT, and the control: the same run with fake quantization off (float fine-tuning on the same text).
        var options = new TrainingOptions { Steps = 40, BatchSize = 8, SequenceLength = 128, LearningRate = 1e-4f, WeightDecay = 0, Seed = 3 };
        using var model = LlamaTrainingModel.Load(folder, pool);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var (steps, cancelled) = QuantizationAwareTraining.Train(model, train, options, DType.Q4_0, pool: pool);
        output.WriteLine($"{steps} QAT steps in {watch.Elapsed.TotalSeconds:F1} s");
        Assert.False(cancelled);
        using var qat = QuantizationAwareTraining.Quantize(model, DType.Q4_0, pool);
        using var qatFloat = QuantizationAwareTraining.AsInferenceModel(model, pool);
        var result = ModelComparison.Compare(qatFloat, qat.Model, eval, ctx: 128, maxChunks: 64);

        using var control = LlamaTrainingModel.Load(folder, pool);
        QuantizationAwareTraining.Train(control, train, options, scheme: null, pool: pool);
        using var controlRtn = QuantizationAwareTraining.Quantize(control, DType.Q4_0, pool);
        using var controlFloat = QuantizationAwareTraining.AsInferenceModel(control, pool);
        var controlResult = ModelComparison.Compare(controlFloat, controlRtn.Model, eval, ctx: 128, maxChunks: 64);
        output.WriteLine($"{eval.Length} unseen tokens ({result.TokensScored} scored), perplexity float → RTN Q4_0 (KL): " +
            $"original {baseline.ReferencePerplexity:F3} → {baseline.Perplexity:F3} ({baseline.MeanKl:F5}); " +
            $"float fine-tune {controlResult.ReferencePerplexity:F3} → {controlResult.Perplexity:F3} ({controlResult.MeanKl:F5}); " +
            $"QAT {result.ReferencePerplexity:F3} → {result.Perplexity:F3} ({result.MeanKl:F5})");
        Assert.True(result.Perplexity < baseline.Perplexity, $"QAT {result.Perplexity} vs RTN {baseline.Perplexity}");
    }

    [Fact]
    public void QatCommand_ShortRun_WritesAQuantizedGgufThatLoads()
    {
        using var temp = new TempFolder();
        string folder = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        File.WriteAllText(temp.File("t.txt"), File.ReadAllText(Path.Combine(folder, "held-out.txt"))[..20000]);
        string target = temp.File("qat.gguf");
        var result = CliHarness.Run(["qat", folder, "--data", temp.File("t.txt"), "--out", target, "--scheme", "int4", "--group", "64",
            "--steps", "2", "--batch", "2", "--ctx", "32"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        using var model = ModelLoader.LoadModel(target);
        Assert.Equal(DType.Q4_1_G64, model.Weights.Get("model.layers.0.mlp.up_proj.weight").Type);
        Assert.Empty(Directory.GetFiles(temp.Path, "*.tmp"));
    }

    [Fact]
    public void QatCommand_BadGroup_FailsWithOneClearLine()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("t.txt"), "some text");
        CliHarness.AssertFails(["qat", "--data", temp.File("t.txt"), "--out", temp.File("o.gguf"), "--scheme", "int4", "--group", "48"], "--group must be");
    }
}
