using Minnow.Kernels;
using static Minnow.Tests.Kernels.KernelTestSupport;

namespace Minnow.Tests.Kernels;

/// <summary>Add, SwiGlu, Softmax, RmsNorm, LayerNorm and both GELUs on every path and awkward lengths.</summary>
public unsafe class ElementwiseKernelTests
{
    public static TheoryData<VectorWidth, int> Cases => WidthsAndLengths();

    public static TheoryData<VectorWidth> AllPaths => Widths();

    [Theory]
    [MemberData(nameof(Cases))]
    public void AddIsExact(VectorWidth width, int n)
    {
        float[] x = Random(n, 1, 10), y = Random(n, 2, 10);
        var expected = x.Zip(y, (a, b) => a + b).ToArray();
        fixed (float* px = x, py = y)
        {
            using (KernelIsa.Force(width))
            {
                Add.Compute(px, py, n);
            }
        }

        AssertBitwiseEqual(expected, x, $"{width} n={n}");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void SwiGluMatchesReference(VectorWidth width, int n)
    {
        float[] gate = Random(n, 3, 12), up = Random(n, 4, 3);
        var reference = new double[n];
        for (int i = 0; i < n; i++)
        {
            reference[i] = gate[i] / (1 + Math.Exp(-(double)gate[i])) * up[i];
        }

        var scalar = (float[])gate.Clone();
        fixed (float* g = gate, u = up, s = scalar)
        {
            SwiGlu.Compute(s, u, n, VectorWidth.Scalar);
            using (KernelIsa.Force(width))
            {
                SwiGlu.Compute(g, u, n);
            }
        }

        AssertClose(reference, gate, 5e-7, 1e-30, $"{width} n={n}");
        AssertClose(scalar, gate, 5e-7, 1e-30, $"{width} vs scalar n={n}");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void SoftmaxMatchesReference(VectorWidth width, int n)
    {
        float[] x = Random(n, 5, 8, 3);
        double max = x.Max();
        double sum = x.Sum(v => Math.Exp(v - max));
        var reference = x.Select(v => Math.Exp(v - max) / sum).ToArray();
        fixed (float* p = x)
        {
            using (KernelIsa.Force(width))
            {
                Softmax.Compute(p, n);
            }
        }

        AssertClose(reference, x, 1e-5, 1e-30, $"{width} n={n}");
    }

    [Theory]
    [MemberData(nameof(AllPaths))]
    public void SoftmaxHandlesExtremes(VectorWidth width)
    {
        float[] x = [-1e30f, 0f, 88f, float.NegativeInfinity, 88f, 5f, -100f, 1f, 2f];
        fixed (float* p = x)
        {
            Softmax.Compute(p, x.Length, width);
        }

        Assert.Equal(0f, x[0]);
        Assert.Equal(0.5f, x[2], 6);
        Assert.Equal(0.5f, x[4], 6);
        Assert.Equal(0f, x[3]);
        Assert.True(x.All(v => v >= 0 && v <= 1));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void RmsNormMatchesReference(VectorWidth width, int n)
    {
        float[] x = Random(n, 6, 4, 0.5f), weight = Random(n, 7, 2), y = new float[n];
        const float eps = 1e-6f;
        double meanSquare = x.Sum(v => (double)v * v) / n;
        double scale = 1 / Math.Sqrt(meanSquare + eps);
        var reference = x.Select((v, i) => v * scale * weight[i]).ToArray();
        fixed (float* px = x, pw = weight, py = y)
        {
            using (KernelIsa.Force(width))
            {
                RmsNorm.Compute(px, pw, py, n, eps);
            }
        }

        AssertClose(reference, y, 1e-6, 1e-30, $"{width} n={n}");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void LayerNormMatchesReference(VectorWidth width, int n)
    {
        float[] x = Random(n, 8, 4, 100f), weight = Random(n, 9, 2), bias = Random(n, 10, 1), y = new float[n];
        const float eps = 1e-5f;
        double mean = x.Sum(v => (double)v) / n;
        double variance = x.Sum(v => (v - mean) * (v - mean)) / n;
        double scale = 1 / Math.Sqrt(variance + eps);
        var reference = x.Select((v, i) => ((v - mean) * scale * weight[i]) + bias[i]).ToArray();
        fixed (float* px = x, pw = weight, pb = bias, py = y)
        {
            using (KernelIsa.Force(width))
            {
                LayerNorm.Compute(px, pw, pb, py, n, eps);
            }
        }

        // x sits on a large offset (100), so x − mean carries float32 rounding of x itself: ~1e-5 of |x|/σ.
        var tolerance = reference.Select((r, i) => (Math.Abs(weight[i]) * scale * 1e-5) + (1e-6 * Math.Abs(r))).ToArray();
        for (int i = 0; i < n; i++)
        {
            Assert.True(Math.Abs(y[i] - reference[i]) <= tolerance[i], $"{width} n={n} [{i}]: {y[i]} vs {reference[i]}");
        }
    }

    [Theory]
    [MemberData(nameof(AllPaths))]
    public void LayerNormMayRunInPlace(VectorWidth width)
    {
        const int n = 37;
        float[] x = Random(n, 11, 3), weight = Random(n, 12, 1), bias = Random(n, 13, 1), y = new float[n];
        fixed (float* px = x, pw = weight, pb = bias, py = y)
        {
            LayerNorm.Compute(px, pw, pb, py, n, 1e-5f, width);
            LayerNorm.Compute(px, pw, pb, px, n, 1e-5f, width);
        }

        AssertBitwiseEqual(y, x);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void GeluExactMatchesDoublePrecisionErf(VectorWidth width, int n)
    {
        float[] x = Random(n, 14, 9);
        var reference = x.Select(v => GeluReference(v)).ToArray();
        fixed (float* p = x)
        {
            using (KernelIsa.Force(width))
            {
                Gelu.Exact(p, n);
            }
        }

        // Relative to the value itself, even deep in the negative tail (Numerical Recipes' erfc: 1.2e-7).
        AssertClose(reference, x, 3e-7, 1e-37, $"{width} n={n}");
    }

    [Theory]
    [MemberData(nameof(AllPaths))]
    public void GeluExactOnADenseGrid(VectorWidth width)
    {
        float[] x = Enumerable.Range(-16000, 32001).Select(i => i / 1000f).ToArray();
        var reference = x.Select(v => GeluReference(v)).ToArray();
        fixed (float* p = x)
        {
            Gelu.Exact(p, x.Length, width);
        }

        AssertClose(reference, x, 3e-7, 1e-37, $"{width}");
        Assert.Equal(0f, x[16000]);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void GeluTanhMatchesDoublePrecision(VectorWidth width, int n)
    {
        float[] x = Random(n, 15, 9);
        // ½·x·(1 + tanh u) = x / (1 + e^(−2u)), which double evaluates without cancellation for u ≪ 0.
        var reference = x.Select(v => v / (1 + Math.Exp(-2 * Math.Sqrt(2 / Math.PI) * (v + (0.044715 * v * v * v))))).ToArray();
        Assert.Equal(0.5 * 1.5 * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (1.5 + (0.044715 * 1.5 * 1.5 * 1.5)))), 1.5 / (1 + Math.Exp(-2 * Math.Sqrt(2 / Math.PI) * (1.5 + (0.044715 * 1.5 * 1.5 * 1.5)))), 1e-15);
        var scalar = (float[])x.Clone();
        var original = (float[])x.Clone();
        fixed (float* p = x, s = scalar)
        {
            Gelu.Tanh(s, n, VectorWidth.Scalar);
            using (KernelIsa.Force(width))
            {
                Gelu.Tanh(p, n);
            }
        }

        // In the negative tail the result is ≈ x·e^(2u), so float rounding of u (a few ulps of |2u|) is amplified.
        for (int i = 0; i < n; i++)
        {
            double u = Math.Sqrt(2 / Math.PI) * (original[i] + (0.044715 * original[i] * original[i] * original[i]));
            double tolerance = ((4e-7 + (2.4e-7 * Math.Abs(2 * u))) * Math.Abs(reference[i])) + 1e-37;
            Assert.True(Math.Abs(x[i] - reference[i]) <= tolerance, $"{width} n={n} [{i}]: {x[i]} vs {reference[i]}");
        }

        AssertClose(scalar, x, 5e-7, 1e-37, $"{width} vs scalar n={n}");
    }

    [Theory]
    [MemberData(nameof(AllPaths))]
    public void ActivationsOfSpecialValues(VectorWidth width)
    {
        float[] special = [0f, -0f, 1e-30f, -1e-30f, 50f, -50f, 1e30f, -1e30f, float.PositiveInfinity, float.NaN, 3f, -3f, 0.5f, -0.5f, 7f, -7f];
        float[] exact = (float[])special.Clone(), tanh = (float[])special.Clone();
        fixed (float* e = exact, t = tanh)
        {
            Gelu.Exact(e, special.Length, width);
            Gelu.Tanh(t, special.Length, width);
        }

        for (int i = 0; i < special.Length; i++)
        {
            float v = special[i];
            if (float.IsNaN(v))
            {
                Assert.True(float.IsNaN(exact[i]) && float.IsNaN(tanh[i]));
            }
            else if (v >= 50 || v <= -50)
            {
                Assert.Equal(v > 0 ? v : 0f, exact[i]);
                Assert.Equal(v > 0 ? v : 0f, tanh[i]);
            }
            else if (Math.Abs(v) < 1e-20)
            {
                Assert.Equal(v / 2, exact[i], 1e-37f);
                Assert.Equal(v / 2, tanh[i], 1e-37f);
            }
        }
    }
}
