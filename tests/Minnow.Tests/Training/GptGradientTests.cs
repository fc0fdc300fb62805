using Minnow.Formats.Safetensors;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;
using Minnow.Tests.Models;
using Minnow.Training;
using Xunit.Abstractions;

namespace Minnow.Tests.Training;

/// <summary>
/// The GPT-NeoX and GPT-2 training models: tiny models (parallel and sequential residual, learned positions, tied
/// and untied heads) against central finite differences, and the golden models' loss and every gradient against
/// ../shared/reference/golden/{gpt_neox,gpt2}/reference.json and grads.safetensors (PyTorch autograd).
/// </summary>
public unsafe class GptGradientTests(ITestOutputHelper output)
{
    private const double MaxRelativeError = GptBlockGradientTests.MaxRelativeError;

    /// <summary>
    /// Richardson extrapolation of two central differences, (4·D(h) − D(2h)) / 3, whose truncation error is O(h⁴)
    /// instead of O(h²). A whole float32 model is too noisy (rounding) for a step below 1e-2, yet a step of 1e-2
    /// leaves up to 1e-3 of truncation error where the loss curves sharply (LayerNorm weights); this removes it.
    /// </summary>
    private static double ExtrapolatedDifference(Span<float> values, int i, Func<double> loss, float step = 1e-2f) =>
        ((4 * GradientTests.CentralDifference(values, i, loss, step)) - GradientTests.CentralDifference(values, i, loss, 2 * step)) / 3;

    private static ModelConfig TinyNeoX(bool parallelResidual) => new()
    {
        Architecture = Architecture.GptNeoX,
        ModelType = "gpt_neox",
        HiddenSize = 16,
        IntermediateSize = 24,
        Layers = 2,
        Heads = 2,
        KvHeads = 2,
        HeadDim = 8,
        RotaryDim = 4,
        VocabSize = 19,
        MaxPositions = 16,
        NormEps = 1e-5f,
        ParallelResidual = parallelResidual,
        Activation = Activation.Gelu,
        TieEmbeddings = false,
    };

    private static ModelConfig TinyGpt2() => new()
    {
        Architecture = Architecture.Gpt2,
        ModelType = "gpt2",
        HiddenSize = 16,
        IntermediateSize = 24,
        Layers = 2,
        Heads = 2,
        KvHeads = 2,
        HeadDim = 8,
        RotaryDim = 0,
        VocabSize = 19,
        MaxPositions = 9,
        NormEps = 1e-5f,
        Activation = Activation.GeluTanh,
        TieEmbeddings = true,
    };

    private static GptTrainingModel TinyModel(ModelConfig config, WorkerPool? pool = null)
    {
        var model = GptTrainingModel.CreateRandom(config, seed: 7, pool);
        // Larger weights than the usual 0.02 so every path carries a sizeable gradient; perturb norms and biases too.
        var rng = new SplitMix64(99);
        foreach (var p in model.Parameters.All)
        {
            var v = model.Parameters.ValueSpan(p);
            for (int i = 0; i < v.Length; i++)
            {
                v[i] = p.Shape.Length == 1 ? v[i] + (float)(rng.NextGaussian() * 0.3) : (float)(rng.NextGaussian() * 0.4);
            }
        }

        return model;
    }

    private const int TinyBatchSize = 6, TinySeqLen = 9;

    private static (int[] Inputs, int[] Targets) TinyBatch()
    {
        var rng = new SplitMix64(5);
        var inputs = new int[TinyBatchSize * TinySeqLen];
        var targets = new int[TinyBatchSize * TinySeqLen];
        for (int i = 0; i < inputs.Length; i++)
        {
            inputs[i] = rng.NextInt(19);
            targets[i] = i % 7 == 3 ? -1 : rng.NextInt(19);
        }

        return (inputs, targets);
    }

    public static IEnumerable<object[]> TinyConfigs() =>
    [
        ["gpt_neox parallel residual"],
        ["gpt_neox sequential residual"],
        ["gpt2"],
    ];

    private static ModelConfig TinyConfig(string name) => name switch
    {
        "gpt_neox parallel residual" => TinyNeoX(parallelResidual: true),
        "gpt_neox sequential residual" => TinyNeoX(parallelResidual: false),
        _ => TinyGpt2(),
    };

    [Theory]
    [MemberData(nameof(TinyConfigs))]
    public void TinyModel_EveryTensorsGradientMatchesFiniteDifferences(string name)
    {
        using var model = TinyModel(TinyConfig(name));
        var (inputs, targets) = TinyBatch();
        model.Parameters.ZeroGrads();
        model.ForwardBackward(inputs, targets, TinyBatchSize, TinySeqLen);
        double Loss()
        {
            var (total, count) = model.Evaluate(inputs, targets, TinyBatchSize, TinySeqLen);
            return total / count;
        }

        var rng = new SplitMix64(11);
        double worst = 0;
        foreach (var p in model.Parameters.All)
        {
            var values = model.Parameters.ValueSpan(p);
            var grads = model.Parameters.GradSpan(p);
            var analytic = new List<double>();
            var numeric = new List<double>();
            for (int trial = 0; trial < 16; trial++)
            {
                int i = rng.NextInt(values.Length);
                numeric.Add(ExtrapolatedDifference(values, i, Loss));
                analytic.Add(grads[i]);
            }

            double relative = GptBlockGradientTests.RelativeError(analytic, numeric);
            worst = Math.Max(worst, relative);
            Assert.True(relative < MaxRelativeError, $"{name} {p.Name}: relative error {relative:E2}");
        }

        output.WriteLine($"{name}: worst relative error {worst:E2} over {model.Parameters.All.Count} tensors");
    }

    [Fact]
    public void ForwardBackward_IsBitIdenticalForAnyThreadCount()
    {
        var (inputs, targets) = TinyBatch();
        foreach (var config in new[] { TinyNeoX(true), TinyGpt2() })
        {
            float[]? first = null;
            foreach (int threads in new[] { 1, 2, 3 })
            {
                using var pool = new WorkerPool(threads);
                using var model = TinyModel(config, pool);
                model.ForwardBackward(inputs, targets, TinyBatchSize, TinySeqLen);
                var grads = new Span<float>(model.Parameters.Grads, (int)model.Parameters.TotalFloats).ToArray();
                first ??= grads;
                Assert.Equal(first, grads);
            }
        }
    }

    // ---- Golden models ----

    [Theory]
    [InlineData("gpt_neox")]
    [InlineData("gpt2")]
    public void Golden_LossAndGradientsMatchReferenceWithin1e3(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        using var model = GptTrainingModel.Load(golden.Folder);
        var ids = golden.InputIds;
        var (loss, count) = model.ForwardBackward(ids.AsSpan(0, ids.Length - 1), ids.AsSpan(1), 1, ids.Length - 1);
        Assert.Equal(ids.Length - 1, count);
        double expectedLoss = golden.For("f32").GetProperty("mean_nll_next_token").GetDouble();
        Assert.True(Math.Abs(loss - expectedLoss) <= 1e-5 * expectedLoss, $"loss {loss} vs {expectedLoss}");

        using var grads = SafetensorsFile.Open(Path.Combine(golden.Folder, "grads.safetensors"));
        Assert.Equal(grads.Tensors.Keys.Order(), model.Parameters.All.Select(p => p.Name).Order());
        double worst = 0;
        string worstName = "";
        foreach (var p in model.Parameters.All)
        {
            var reference = grads.Tensors[p.Name];
            Assert.Equal(reference.Shape, p.Shape);
            var expected = reference.ToFloatArray();
            var actual = model.Parameters.GradSpan(p);
            double relative = GptBlockGradientTests.RelativeError(actual.ToArray().Select(a => (double)a).ToArray(), expected.Select(e => (double)e).ToArray());
            if (relative > worst)
            {
                (worst, worstName) = (relative, p.Name);
            }

            Assert.True(relative < MaxRelativeError, $"{name} {p.Name}: relative error {relative:E2}");
        }

        output.WriteLine($"{name}: loss {loss:F6} (reference {expectedLoss:F6}), worst relative gradient error {worst:E2} ({worstName}) over {model.Parameters.All.Count} tensors");
    }

    [Fact]
    public void Gpt2_LoadsTensorNamesWithAndWithoutTheTransformerPrefix()
    {
        var golden = GoldenReference.Load("gpt2");
        if (golden is null)
        {
            return;
        }

        var config = ModelConfig.FromHuggingFace(Path.Combine(golden.Folder, "config.json"));
        using var withPrefix = GptTrainingModel.Load(golden.Folder);
        using var checkpoint = SafetensorsCheckpoint.Open(golden.Folder);
        var stripped = checkpoint.Tensors.ToDictionary(t => t.Key.StartsWith("transformer.", StringComparison.Ordinal) ? t.Key["transformer.".Length..] : t.Key, t => t.Value);
        using var weights = new WeightSet(stripped, "stripped", null);
        using var withoutPrefix = GptTrainingModel.FromWeights(config, weights);
        Assert.Equal(withPrefix.Parameters.All.Select(p => p.Name), withoutPrefix.Parameters.All.Select(p => p.Name));
        Assert.Equal(
            new Span<float>(withPrefix.Parameters.Values, (int)withPrefix.Parameters.TotalFloats).ToArray(),
            new Span<float>(withoutPrefix.Parameters.Values, (int)withoutPrefix.Parameters.TotalFloats).ToArray());
    }

    [Theory]
    [MemberData(nameof(TinyConfigs))]
    public void SaveHuggingFace_LoadsBackAndRunsInTheInferenceEngineWithTheSameLoss(string name)
    {
        using var model = TinyModel(TinyConfig(name));
        var (inputs, _) = TinyBatch();
        var tokens = inputs.AsSpan(0, TinySeqLen + 1).ToArray();
        var (total, count) = model.Evaluate(tokens.AsSpan(0, TinySeqLen), tokens.AsSpan(1), 1, TinySeqLen);
        double trainingMean = total / count;
        string folder = Path.Combine(Path.GetTempPath(), "minnow-gpt-save-" + Guid.NewGuid().ToString("N"));
        try
        {
            model.SaveHuggingFace(folder);
            using (var reloaded = GptTrainingModel.Load(folder))
            {
                Assert.Equal(model.Config, reloaded.Config);
                Assert.Equal(
                    new Span<float>(model.Parameters.Values, (int)model.Parameters.TotalFloats).ToArray(),
                    new Span<float>(reloaded.Parameters.Values, (int)reloaded.Parameters.TotalFloats).ToArray());
            }

            using var engine = ModelLoader.LoadModel(folder);
            int vocab = engine.Config.VocabSize;
            var logits = new float[TinySeqLen * vocab];
            using (var cache = new KvCache(engine.Config, TinySeqLen))
            {
                fixed (float* p = logits)
                {
                    engine.Forward(tokens.AsSpan(0, TinySeqLen), cache, p, allLogits: true);
                }
            }

            double engineTotal = 0;
            for (int t = 0; t < TinySeqLen; t++)
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

                engineTotal += Math.Log(sum) + max - row[tokens[t + 1]];
            }

            double engineMean = engineTotal / TinySeqLen;
            output.WriteLine($"{name}: mean NLL training forward {trainingMean:F6}, inference engine {engineMean:F6}");
            Assert.True(Math.Abs(trainingMean - engineMean) <= 1e-5 * engineMean, $"training {trainingMean} vs engine {engineMean}");
        }
        finally
        {
            if (Directory.Exists(folder))
            {
                Directory.Delete(folder, true);
            }
        }
    }
}
