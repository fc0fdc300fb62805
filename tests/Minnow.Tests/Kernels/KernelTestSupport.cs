using Minnow.Kernels;
using Minnow.Tensors;

namespace Minnow.Tests.Kernels;

/// <summary>Inputs, references and assertions shared by the kernel tests.</summary>
internal static class KernelTestSupport
{
    /// <summary>Every path, including those the hardware does not accelerate (they run in .NET's software fallback).</summary>
    public static readonly VectorWidth[] AllWidths = [VectorWidth.Scalar, VectorWidth.V128, VectorWidth.V256, VectorWidth.V512];

    /// <summary>Lengths around every vector size, and model-like ones (172, 176).</summary>
    public static readonly int[] AwkwardLengths = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 47, 64, 100, 172, 176, 1000];

    public static TheoryData<VectorWidth> Widths()
    {
        var data = new TheoryData<VectorWidth>();
        foreach (var w in AllWidths)
        {
            data.Add(w);
        }

        return data;
    }

    public static TheoryData<VectorWidth, int> WidthsAndLengths()
    {
        var data = new TheoryData<VectorWidth, int>();
        foreach (var w in AllWidths)
        {
            foreach (int n in AwkwardLengths)
            {
                data.Add(w, n);
            }
        }

        return data;
    }

    public static float[] Random(int n, int seed, float scale = 1f, float offset = 0f)
    {
        var random = new Random(seed);
        var values = new float[n];
        for (int i = 0; i < n; i++)
        {
            values[i] = (float)(((random.NextDouble() * 2) - 1) * scale) + offset;
        }

        return values;
    }

    /// <summary>Bitwise equality (so −0 ≠ +0 and NaN = NaN of the same pattern).</summary>
    public static void AssertBitwiseEqual(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string context = "")
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
            {
                Assert.Fail($"{context} [{i}]: expected {expected[i]:R}, got {actual[i]:R}");
            }
        }
    }

    /// <summary>|actual − expected| ≤ relative · |expected| + absolute, element by element.</summary>
    public static void AssertClose(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual, double relative, double absolute, string context = "")
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double error = Math.Abs(actual[i] - expected[i]);
            if (!(error <= (relative * Math.Abs(expected[i])) + absolute))
            {
                Assert.Fail($"{context} [{i}]: expected {expected[i]:R}, got {actual[i]:R} (error {error:E3})");
            }
        }
    }

    public static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double relative, double absolute, string context = "")
    {
        var e = new double[expected.Length];
        for (int i = 0; i < e.Length; i++)
        {
            e[i] = expected[i];
        }

        AssertClose(e, actual, relative, absolute, context);
    }

    /// <summary>A weight matrix [rows, cols] of the given type in native memory (the tensor owns the buffer).</summary>
    public static unsafe Tensor MakeTensor(DType type, int rows, int cols, float[] values)
    {
        byte[] bytes = Dequantize.FromFloats(type, values);
        var buffer = new NativeBuffer(bytes.Length);
        bytes.CopyTo(new Span<byte>(buffer.Pointer, bytes.Length));
        return new Tensor($"w{type}", type, [rows, cols], buffer.Pointer, buffer);
    }

    /// <summary>erfc(z) for z ≥ 0 to about 1e-14 relative: power series below 2.5, continued fraction above.</summary>
    public static double Erfc(double z)
    {
        if (z < 2.5)
        {
            // erf(z) = 2/√π Σ (−1)^n z^(2n+1) / (n! (2n+1))
            double sum = 0, term = z;
            for (int n = 0; n < 200; n++)
            {
                double contribution = term / ((2 * n) + 1);
                sum += contribution;
                if (Math.Abs(contribution) < 1e-18 * Math.Abs(sum))
                {
                    break;
                }

                term *= -z * z / (n + 1);
            }

            return 1 - (2 / Math.Sqrt(Math.PI) * sum);
        }

        // erfc(z) = e^(−z²)/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + 2/(z + …))))), evaluated from the bottom.
        double f = z;
        for (int k = 200; k >= 1; k--)
        {
            f = z + (k / 2.0 / f);
        }

        return Math.Exp(-z * z) / Math.Sqrt(Math.PI) / f;
    }

    /// <summary>x · Φ(x) in double precision.</summary>
    public static double GeluReference(double x) =>
        x >= 0 ? x * (1 - (0.5 * Erfc(x / Math.Sqrt(2)))) : 0.5 * x * Erfc(-x / Math.Sqrt(2));
}
