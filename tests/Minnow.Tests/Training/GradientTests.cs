using Minnow.Formats.Safetensors;
using Minnow.Models;
using Minnow.Tensors;
using Minnow.Tests.Models;
using Minnow.Training;
using Xunit.Abstractions;

namespace Minnow.Tests.Training;

/// <summary>
/// The backward pass against the reference gradients in ../shared/reference/golden/*/grads.safetensors (the
/// gradient of the mean next-token NLL over input_ids, from PyTorch autograd), and against finite differences.
/// </summary>
public unsafe class GradientTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("llama")]
    [InlineData("stories260k-hf")]
    [InlineData("qwen2")]
    [InlineData("llama3-rope-scaling")]
    public void Golden_GradientsMatchReferenceWithin1e3(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        using var model = LlamaTrainingModel.Load(golden.Folder);
        var ids = golden.InputIds;
        var (loss, count) = model.ForwardBackward(ids.AsSpan(0, ids.Length - 1), ids.AsSpan(1), 1, ids.Length - 1);
        Assert.Equal(ids.Length - 1, count);
        double expectedLoss = golden.For("f32").GetProperty("mean_nll_next_token").GetDouble();
        Assert.True(Math.Abs(loss - expectedLoss) <= 1e-5 * expectedLoss, $"loss {loss} vs {expectedLoss}");

        using var grads = SafetensorsFile.Open(Path.Combine(golden.Folder, "grads.safetensors"));
        double worst = 0;
        Assert.Equal(grads.Tensors.Keys.Order(), model.Parameters.All.Select(p => p.Name).Order());
        foreach (var p in model.Parameters.All)
        {
            var expected = grads.Tensors[p.Name].ToFloatArray();
            var actual = model.Parameters.GradSpan(p);
            double diff = 0, norm = 0;
            for (int i = 0; i < expected.Length; i++)
            {
                diff += (actual[i] - (double)expected[i]) * (actual[i] - (double)expected[i]);
                norm += (double)expected[i] * expected[i];
            }

            double relative = Math.Sqrt(diff / norm);
            worst = Math.Max(worst, relative);
            Assert.True(relative < 1e-3, $"{name} {p.Name}: relative error {relative:E2}");
        }

        output.WriteLine($"{name}: loss {loss:F6}, worst relative gradient error {worst:E2} over {model.Parameters.All.Count} tensors");
    }

    private static ModelConfig TinyConfig(bool bias, bool tie) =>
        LlamaTrainingModel.CreateConfig(vocab: 19, hidden: 16, layers: 2, heads: 4, kvHeads: 2, ffn: 24, maxPositions: 16, tieEmbeddings: tie) with
        {
            QkvBias = bias,
        };

    private static LlamaTrainingModel TinyModel(bool bias, bool tie, WorkerPool? pool = null)
    {
        var model = LlamaTrainingModel.CreateRandom(TinyConfig(bias, tie), seed: 7, pool);
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

    private static (int[] Inputs, int[] Targets) TinyBatch()
    {
        var rng = new SplitMix64(5);
        var inputs = new int[2 * 9];
        var targets = new int[2 * 9];
        for (int i = 0; i < inputs.Length; i++)
        {
            inputs[i] = rng.NextInt(19);
            targets[i] = i % 7 == 3 ? -1 : rng.NextInt(19);
        }

        return (inputs, targets);
    }

    [Theory]
    [InlineData(false, true)]
    [InlineData(true, false)]
    public void TinyModel_GradientsMatchCentralFiniteDifferences(bool bias, bool tie)
    {
        using var model = TinyModel(bias, tie);
        var (inputs, targets) = TinyBatch();
        model.Parameters.ZeroGrads();
        model.ForwardBackward(inputs, targets, 2, 9);
        double Loss()
        {
            var (total, count) = model.Evaluate(inputs, targets, 2, 9);
            return total / count;
        }

        Assert.True(AssertRandomEntriesMatchCentralDifferences(model.Parameters, Loss, entriesPerTensor: 6, seed: 11) > 60);
    }

    [Fact]
    public void ForwardBackward_IsBitIdenticalForAnyThreadCount()
    {
        var (inputs, targets) = TinyBatch();
        float[]? first = null;
        foreach (int threads in new[] { 1, 2, 3 })
        {
            using var pool = new WorkerPool(threads);
            using var model = TinyModel(bias: true, tie: true, pool);
            model.ForwardBackward(inputs, targets, 2, 9);
            var grads = new Span<float>(model.Parameters.Grads, (int)model.Parameters.TotalFloats).ToArray();
            first ??= grads;
            Assert.Equal(first, grads);
        }
    }

    [Fact]
    public void Loss_OfLoadedGoldenModelMatchesInferenceEngine()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        using var model = LlamaTrainingModel.Load(golden.Folder);
        var ids = golden.InputIds;
        var (total, count) = model.Evaluate(ids.AsSpan(0, ids.Length - 1), ids.AsSpan(1), 1, ids.Length - 1);
        double expected = golden.For("f32").GetProperty("mean_nll_next_token").GetDouble();
        Assert.True(Math.Abs((total / count) - expected) <= 1e-5 * expected);
    }

    /// <summary>
    /// Compares the gradient of <paramref name="entriesPerTensor"/> random entries of every parameter with a central
    /// difference of <paramref name="loss"/> (within 2e-3 + 2 % of the numeric value); returns how many were checked.
    /// </summary>
    internal static int AssertRandomEntriesMatchCentralDifferences(ParameterStore store, Func<double> loss, int entriesPerTensor, ulong seed)
    {
        var rng = new SplitMix64(seed);
        int checkedCount = 0;
        foreach (var p in store.All)
        {
            var values = store.ValueSpan(p);
            var grads = store.GradSpan(p);
            for (int trial = 0; trial < entriesPerTensor; trial++)
            {
                int i = rng.NextInt(values.Length);
                double numeric = CentralDifference(values, i, loss);
                double tolerance = 2e-3 + (2e-2 * Math.Abs(numeric));
                Assert.True(Math.Abs(numeric - grads[i]) <= tolerance, $"{p.Name}[{i}]: analytic {grads[i]} vs numeric {numeric}");
                checkedCount++;
            }
        }

        return checkedCount;
    }

    /// <summary>(loss(v + h) − loss(v − h)) / 2h for value <paramref name="i"/>, which is left as it was.</summary>
    internal static double CentralDifference(Span<float> values, int i, Func<double> loss, float h = 1e-2f)
    {
        float saved = values[i];
        values[i] = saved + h;
        double up = loss();
        values[i] = saved - h;
        double down = loss();
        values[i] = saved;
        return (up - down) / (2 * h);
    }
}
