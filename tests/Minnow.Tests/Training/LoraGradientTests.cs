using Minnow.Models;
using Minnow.Tensors;
using Minnow.Training;
using Xunit.Abstractions;

namespace Minnow.Tests.Training;

/// <summary>The LoRA term's backward pass against central finite differences, alone and inside the training model.</summary>
public unsafe class LoraGradientTests(ITestOutputHelper output)
{
    private static ModelConfig TinyConfig(int layers = 1) =>
        LlamaTrainingModel.CreateConfig(vocab: 19, hidden: 16, layers: layers, heads: 4, kvHeads: 2, ffn: 24, maxPositions: 16);

    private static LoraConfig AllTargets(int rank) => new() { Rank = rank, Alpha = 2.5f * rank, Targets = LoraTargets.All };

    /// <summary>A and B drawn N(0, std²): B must not be zero, or A's gradient would vanish.</summary>
    private static void Randomize(LoraLayers lora, ulong seed, double std = 0.5)
    {
        var rng = new SplitMix64(seed);
        foreach (var p in lora.Parameters.All)
        {
            var v = lora.Parameters.ValueSpan(p);
            for (int i = 0; i < v.Length; i++)
            {
                v[i] = (float)(rng.NextGaussian() * std);
            }
        }
    }

    /// <summary>
    /// The LoRA term of one linear layer, y = scale·B·A·x, with the loss L = Σ g⊙y for a fixed random g: the
    /// analytic ∂L/∂A, ∂L/∂B and ∂L/∂x against central differences, as a norm-relative error below 1e-3.
    /// </summary>
    [Theory]
    [InlineData(LoraTarget.QProj)]
    [InlineData(LoraTarget.KProj)]
    [InlineData(LoraTarget.DownProj)]
    public void LoraLinear_GradientsMatchCentralFiniteDifferences(LoraTarget target)
    {
        const int rows = 5;
        var config = TinyConfig();
        using var lora = new LoraLayers(config, AllTargets(rank: 3));
        Randomize(lora, 3);
        var (outDim, inDim) = LoraTargets.Shape(config, 0, target);
        var rng = new SplitMix64(4);
        var x = new float[rows * inDim];
        var g = new float[rows * outDim];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)rng.NextGaussian();
        }

        for (int i = 0; i < g.Length; i++)
        {
            g[i] = (float)rng.NextGaussian();
        }

        var y = new float[rows * outDim];
        var dx = new float[rows * inDim];
        double Loss()
        {
            Array.Clear(y);
            fixed (float* px = x, py = y)
            {
                lora.Forward(0, target, px, rows, py);
            }

            double sum = 0;
            for (int i = 0; i < y.Length; i++)
            {
                sum += (double)g[i] * y[i];
            }

            return sum;
        }

        Loss();
        lora.Parameters.ZeroGrads();
        fixed (float* px = x, pg = g, pdx = dx)
        {
            lora.Backward(0, target, px, pg, rows, pdx);
        }

        var a = lora.Parameters[LoraTargets.PeftName(0, target, a: true)];
        var b = lora.Parameters[LoraTargets.PeftName(0, target, a: false)];
        double RelativeError(Span<float> values, float[] analytic)
        {
            double diff = 0, norm = 0;
            for (int i = 0; i < values.Length; i++)
            {
                double numeric = GradientTests.CentralDifference(values, i, Loss);
                diff += (numeric - analytic[i]) * (numeric - analytic[i]);
                norm += numeric * numeric;
            }

            return Math.Sqrt(diff / norm);
        }

        double errorA = RelativeError(lora.Parameters.ValueSpan(a), lora.Parameters.GradSpan(a).ToArray());
        double errorB = RelativeError(lora.Parameters.ValueSpan(b), lora.Parameters.GradSpan(b).ToArray());
        double errorX = RelativeError(x, dx);
        Assert.True(errorA < 1e-3, $"{target} ∂L/∂A: relative error {errorA:E2}");
        Assert.True(errorB < 1e-3, $"{target} ∂L/∂B: relative error {errorB:E2}");
        Assert.True(errorX < 1e-3, $"{target} ∂L/∂x: relative error {errorX:E2}");
        double worst = Math.Max(errorA, Math.Max(errorB, errorX));
        output.WriteLine($"{target}: worst relative error {worst:E2}");
    }

    /// <summary>
    /// Adapters on every linear layer of a two-layer model, through the model's own forward/backward: the
    /// adapters' gradients of the mean NLL match central differences, and no base weight receives a gradient.
    /// </summary>
    [Fact]
    public void LoraInModel_GradientsMatchFiniteDifferences_AndTheBaseIsFrozen()
    {
        var config = TinyConfig(layers: 2);
        using var model = LlamaTrainingModel.CreateRandom(config, seed: 7);
        var init = new SplitMix64(99);
        foreach (var p in model.Parameters.All.Where(p => p.Shape.Length == 2))
        {
            var v = model.Parameters.ValueSpan(p);
            for (int i = 0; i < v.Length; i++)
            {
                v[i] = (float)(init.NextGaussian() * 0.4);
            }
        }

        using var lora = new LoraLayers(config, AllTargets(rank: 2));
        Randomize(lora, 5, std: 0.2);
        model.AttachLora(lora);
        var rng = new SplitMix64(6);
        var inputs = new int[2 * 9];
        var targets = new int[2 * 9];
        for (int i = 0; i < inputs.Length; i++)
        {
            inputs[i] = rng.NextInt(19);
            targets[i] = i % 7 == 3 ? -1 : rng.NextInt(19);
        }

        lora.Parameters.ZeroGrads();
        model.ForwardBackward(inputs, targets, 2, 9);
        // The frozen base is never asked for a gradient, so its gradient buffer is not even allocated.
        Assert.False(model.Parameters.HasGradientBuffer, "the frozen base allocated gradients");

        double Loss()
        {
            var (total, count) = model.Evaluate(inputs, targets, 2, 9);
            return total / count;
        }

        double diff = 0, norm = 0;
        int checkedCount = 0;
        foreach (var p in lora.Parameters.All)
        {
            var values = lora.Parameters.ValueSpan(p);
            var grads = lora.Parameters.GradSpan(p);
            for (int trial = 0; trial < 4; trial++)
            {
                int i = rng.NextInt(values.Length);
                double numeric = GradientTests.CentralDifference(values, i, Loss);
                Assert.True(Math.Abs(numeric - grads[i]) <= 2e-3 + (2e-2 * Math.Abs(numeric)), $"{p.Name}[{i}]: analytic {grads[i]} vs numeric {numeric}");
                diff += (numeric - grads[i]) * (numeric - grads[i]);
                norm += numeric * numeric;
                checkedCount++;
            }
        }

        double relative = Math.Sqrt(diff / norm);
        output.WriteLine($"{checkedCount} adapter values checked; norm-relative error {relative:E2}");
        Assert.True(relative < 1e-2, $"norm-relative error {relative:E2}");
        Assert.Equal(2 * 7 * 2 * 4, checkedCount);
    }

    [Fact]
    public void Initialize_IsPeftsKaimingUniformAForZeroB()
    {
        var config = TinyConfig();
        using var lora = new LoraLayers(config, new LoraConfig { Rank = 4, Alpha = 8, Targets = [LoraTarget.QProj, LoraTarget.DownProj] });
        lora.Initialize(seed: 1);
        Assert.Equal(2f, lora.Scale);
        foreach (var p in lora.Parameters.All)
        {
            var v = lora.Parameters.ValueSpan(p);
            if (p.Name.EndsWith(".lora_B.weight", StringComparison.Ordinal))
            {
                Assert.True(v.IndexOfAnyExcept(0f) < 0, p.Name);
            }
            else
            {
                float bound = 1f / MathF.Sqrt(p.Shape[1]);
                Assert.All(v.ToArray(), e => Assert.InRange(e, -bound, bound));
                Assert.True(v.ToArray().Max() > bound / 2 && v.ToArray().Min() < -bound / 2, p.Name);
            }
        }
    }
}
