using Minnow.Models;
using Minnow.Tensors;
using Minnow.Training;
using Xunit.Abstractions;

namespace Minnow.Tests.Training;

/// <summary>
/// The blocks GPT-NeoX and GPT-2 add to training (LayerNorm, GELU exact and tanh, learned position embeddings,
/// partial rotary, the fused q/k/v split) against central finite differences over every input value.
/// </summary>
public unsafe class GptBlockGradientTests(ITestOutputHelper output)
{
    internal const double MaxRelativeError = 1e-3;

    private static WorkerPool Pool => WorkerPool.Shared;

    /// <summary>‖analytic − numeric‖ / ‖numeric‖.</summary>
    internal static double RelativeError(IReadOnlyList<double> analytic, IReadOnlyList<double> numeric)
    {
        double diff = 0, norm = 0;
        for (int i = 0; i < numeric.Count; i++)
        {
            diff += (analytic[i] - numeric[i]) * (analytic[i] - numeric[i]);
            norm += numeric[i] * numeric[i];
        }

        return Math.Sqrt(diff / norm);
    }

    internal static float[] Gaussian(int count, ulong seed, double std = 1, double mean = 0)
    {
        var rng = new SplitMix64(seed);
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            values[i] = (float)(mean + (rng.NextGaussian() * std));
        }

        return values;
    }

    /// <summary>Σ c·y in double: a scalar loss whose gradient with respect to y is c.</summary>
    internal static double Projection(float[] y, float[] c)
    {
        double sum = 0;
        for (int i = 0; i < y.Length; i++)
        {
            sum += (double)c[i] * y[i];
        }

        return sum;
    }

    /// <summary>
    /// Checks RoPE's backward pass (the inverse rotation) on x [batch·seqLen, heads·headDim] against finite
    /// differences of Σ c·RoPE(x) through <paramref name="check"/>; returns the analytic gradient.
    /// </summary>
    /// <summary>The smallest config RoPE needs: <paramref name="heads"/> heads of <paramref name="headDim"/>, the first <paramref name="rotaryDim"/> rotating.</summary>
    internal static ModelConfig RopeConfig(Architecture architecture, int heads, int headDim, int rotaryDim, int seqLen) => new()
    {
        Architecture = architecture,
        ModelType = architecture == Architecture.GptNeoX ? "gpt_neox" : "llama",
        HiddenSize = heads * headDim,
        IntermediateSize = 8,
        Layers = 1,
        Heads = heads,
        KvHeads = heads,
        HeadDim = headDim,
        RotaryDim = rotaryDim,
        VocabSize = 8,
        MaxPositions = seqLen,
        NormEps = 1e-5f,
    };

    internal static float[] CheckRope(string what, ModelConfig config, int batch, int seqLen, float[] x, float[] c,
        Action<string, float[], float[], Func<double>> check)
    {
        int heads = config.Heads, headDim = config.HeadDim, rotaryDim = config.RotaryDim, half = rotaryDim / 2, rows = batch * seqLen;
        var cos = new float[seqLen * half];
        var sin = new float[seqLen * half];
        var negSin = new float[seqLen * half];
        fixed (float* pc = cos, ps = sin, pn = negSin)
        {
            RopeOp.FillTables(new RopeTable(config), seqLen, rotaryDim, pc, ps, pn);
        }

        var y = new float[x.Length];
        double Loss()
        {
            x.CopyTo(y, 0);
            fixed (float* py = y, pc = cos, ps = sin)
            {
                RopeOp.Apply(py, rows, seqLen, heads, headDim, rotaryDim, pc, ps, Pool);
            }

            return Projection(y, c);
        }

        var dx = (float[])c.Clone();
        fixed (float* pdx = dx, pc = cos, pn = negSin)
        {
            RopeOp.Apply(pdx, rows, seqLen, heads, headDim, rotaryDim, pc, pn, Pool);
        }

        check(what, x, dx, Loss);
        return dx;
    }

    /// <summary>The relative error of <paramref name="analytic"/> against central differences over every element of <paramref name="values"/>.</summary>
    private double CheckAgainstFiniteDifferences(string what, float[] values, float[] analytic, Func<double> loss, float step = 1e-2f)
    {
        var numeric = new double[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            numeric[i] = GradientTests.CentralDifference(values, i, loss, step);
        }

        double relative = RelativeError(analytic.Select(a => (double)a).ToArray(), numeric);
        output.WriteLine($"{what}: relative error {relative:E2} over {values.Length} values");
        Assert.True(relative < MaxRelativeError, $"{what}: relative error {relative:E2}");
        return relative;
    }

    [Fact]
    public void LayerNorm_InputWeightAndBiasGradientsMatchFiniteDifferences()
    {
        const int rows = 5, dim = 12;
        const float eps = 1e-5f;
        var x = Gaussian(rows * dim, 1, std: 1.5, mean: 0.4);
        var weight = Gaussian(dim, 2, std: 0.5, mean: 1);
        var bias = Gaussian(dim, 3, std: 0.5);
        var c = Gaussian(rows * dim, 4);
        var y = new float[rows * dim];
        double Loss()
        {
            fixed (float* px = x, pw = weight, pb = bias, py = y)
            {
                LayerNormOp.Forward(px, pw, pb, py, rows, dim, eps, Pool);
            }

            return Projection(y, c);
        }

        var dx = new float[rows * dim];
        var dWeight = new float[dim];
        var dBias = new float[dim];
        var mean = new float[rows];
        var rstd = new float[rows];
        fixed (float* px = x, pw = weight, pc = c, pdx = dx, pdw = dWeight, pdb = dBias, pm = mean, pr = rstd)
        {
            LayerNormOp.Backward(px, pw, pc, pdx, pdw, pdb, pm, pr, rows, dim, eps, Pool);
        }

        CheckAgainstFiniteDifferences("LayerNorm input", x, dx, Loss);
        CheckAgainstFiniteDifferences("LayerNorm weight", weight, dWeight, Loss);
        CheckAgainstFiniteDifferences("LayerNorm bias", bias, dBias, Loss);
    }

    [Theory]
    [InlineData(Activation.Gelu)]
    [InlineData(Activation.GeluTanh)]
    public void Gelu_GradientMatchesFiniteDifferences(Activation kind)
    {
        const int count = 4099; // more than one parallel chunk, and a tail
        var x = Gaussian(count, 5, std: 2);
        var c = Gaussian(count, 6);
        var y = new float[count];
        double Loss()
        {
            fixed (float* px = x, py = y)
            {
                GeluOp.Forward(px, py, count, kind, Pool);
            }

            return Projection(y, c);
        }

        var dx = new float[count];
        fixed (float* px = x, pc = c, pdx = dx)
        {
            GeluOp.Backward(px, pc, pdx, count, kind, Pool);
        }

        CheckAgainstFiniteDifferences($"GELU {kind} input", x, dx, Loss);
    }

    [Fact]
    public void Gelu_ForwardMatchesTheInferenceKernelBitForBit()
    {
        var x = Gaussian(1000, 7, std: 3);
        foreach (var kind in new[] { Activation.Gelu, Activation.GeluTanh })
        {
            var trained = new float[x.Length];
            var inference = (float[])x.Clone();
            fixed (float* px = x, pt = trained, pi = inference)
            {
                GeluOp.Forward(px, pt, x.Length, kind, Pool);
                if (kind == Activation.Gelu)
                {
                    Minnow.Kernels.Gelu.Exact(pi, x.Length);
                }
                else
                {
                    Minnow.Kernels.Gelu.Tanh(pi, x.Length);
                }
            }

            Assert.Equal(inference, trained);
        }
    }

    [Fact]
    public void PositionEmbedding_TableGradientMatchesFiniteDifferences()
    {
        const int batch = 3, seqLen = 5, dim = 6;
        var table = Gaussian(seqLen * dim, 8);
        var tokens = Gaussian(batch * seqLen * dim, 9);
        var c = Gaussian(batch * seqLen * dim, 10);
        var x = new float[tokens.Length];

        // A nonlinear loss of x so the gradient depends on where each position's rows are: Σ c·x + ½Σ x².
        double Loss()
        {
            tokens.CopyTo(x, 0);
            fixed (float* pt = table, px = x)
            {
                PositionEmbeddingOp.Forward(pt, px, batch, seqLen, dim, Pool);
            }

            return Projection(x, c) + (0.5 * x.Sum(v => (double)v * v));
        }

        Loss();
        var dx = x.Select((v, i) => c[i] + v).ToArray();
        var dTable = new float[table.Length];
        fixed (float* pdx = dx, pdt = dTable)
        {
            PositionEmbeddingOp.Backward(pdx, pdt, batch, seqLen, dim, Pool);
        }

        CheckAgainstFiniteDifferences("position embedding table", table, dTable, Loss);
    }

    [Fact]
    public void PartialRotary_GradientMatchesFiniteDifferences()
    {
        // GPT-NeoX: rotate-half on the first quarter of each head; the rest passes through.
        const int batch = 2, seqLen = 6, heads = 3, headDim = 16, rotaryDim = 4;
        var config = RopeConfig(Architecture.GptNeoX, heads, headDim, rotaryDim, seqLen);
        int rows = batch * seqLen, width = heads * headDim;
        var c = Gaussian(rows * width, 12);
        var dx = CheckRope("partial rotary input", config, batch, seqLen, Gaussian(rows * width, 11), c,
            (what, values, analytic, loss) => CheckAgainstFiniteDifferences(what, values, analytic, loss));
        for (int r = 0; r < rows; r++)
        {
            for (int h = 0; h < heads; h++)
            {
                for (int i = rotaryDim; i < headDim; i++)
                {
                    int at = (r * width) + (h * headDim) + i;
                    Assert.Equal(c[at], dx[at]); // the dimensions past rotary_dim pass their gradient through
                }
            }
        }
    }

    [Fact]
    public void FusedQkv_MergeIsTheInverseOfSplitInBothLayouts()
    {
        const int rows = 3, heads = 2, headDim = 4, width = heads * headDim;
        var fused = Enumerable.Range(0, rows * 3 * width).Select(i => (float)i).ToArray();
        foreach (var layout in new[] { FusedQkvLayout.PerHead, FusedQkvLayout.Blocked })
        {
            var q = new float[rows * width];
            var k = new float[rows * width];
            var v = new float[rows * width];
            var merged = new float[fused.Length];
            fixed (float* pf = fused, pq = q, pk = k, pv = v, pm = merged)
            {
                FusedQkvOp.Split(pf, pq, pk, pv, rows, heads, headDim, layout, Pool);
                FusedQkvOp.Merge(pq, pk, pv, pm, rows, heads, headDim, layout, Pool);
            }

            Assert.Equal(fused, merged);

            // Row 1, head 1, element 0: per head [q0 k0 v0 q1 k1 v1] puts k of head 1 at 4·headDim; blocked at width + headDim.
            float expectedK = (3 * width) + (layout == FusedQkvLayout.PerHead ? 4 * headDim : width + headDim);
            Assert.Equal(expectedK, k[width + headDim]);
        }
    }
}
