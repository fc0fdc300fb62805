using Minnow.Kernels;
using static Minnow.Tests.Kernels.KernelTestSupport;

namespace Minnow.Tests.Kernels;

public unsafe class RopeTests
{
    public static TheoryData<VectorWidth, RopeStyle, int, int> Cases()
    {
        var data = new TheoryData<VectorWidth, RopeStyle, int, int>();
        foreach (var width in AllWidths)
        {
            foreach (var style in new[] { RopeStyle.RotateHalf, RopeStyle.Interleaved })
            {
                // (headDim, rotaryDim): full, partial (GPT-NeoX 25%), odd sizes that leave vector tails.
                foreach (var (headDim, rotary) in new[] { (64, 64), (64, 16), (80, 20), (32, 8), (36, 36), (6, 6), (2, 2), (100, 68), (128, 128) })
                {
                    data.Add(width, style, headDim, rotary);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesReferenceAndScalarBitwise(VectorWidth width, RopeStyle style, int headDim, int rotaryDim)
    {
        const int heads = 3;
        float[] x = Random(heads * headDim, 20 + headDim, 2);
        int half = rotaryDim / 2;
        float[] cos = new float[half], sin = new float[half];
        for (int i = 0; i < half; i++)
        {
            double angle = 37 * Math.Pow(10000, -2.0 * i / rotaryDim);
            cos[i] = (float)Math.Cos(angle);
            sin[i] = (float)Math.Sin(angle);
        }

        var expected = new double[x.Length];
        for (int h = 0; h < heads; h++)
        {
            int b = h * headDim;
            for (int i = 0; i < headDim; i++)
            {
                expected[b + i] = x[b + i];
            }

            for (int i = 0; i < half; i++)
            {
                int ia = style == RopeStyle.RotateHalf ? b + i : b + (2 * i);
                int ib = style == RopeStyle.RotateHalf ? b + i + half : b + (2 * i) + 1;
                expected[ia] = ((double)x[ia] * cos[i]) - ((double)x[ib] * sin[i]);
                expected[ib] = ((double)x[ib] * cos[i]) + ((double)x[ia] * sin[i]);
            }
        }

        var scalar = (float[])x.Clone();
        fixed (float* px = x, ps = scalar, c = cos, s = sin)
        {
            Rope.Apply(ps, heads, headDim, rotaryDim, c, s, style, VectorWidth.Scalar);
            using (KernelIsa.Force(width))
            {
                Rope.Apply(px, heads, headDim, rotaryDim, c, s, style);
            }
        }

        AssertClose(expected, x, 1e-6, 1e-6, $"{width} {style} {headDim}/{rotaryDim}");
        AssertBitwiseEqual(scalar, x, $"{width} {style} {headDim}/{rotaryDim} vs scalar");
    }

    /// <summary>
    /// InterleavedRows on a head vector in llama.cpp's q/k row order ((i, i + d/2) stored as (2i, 2i + 1)) gives, bit
    /// for bit, what RotateHalf gives on the vector in Hugging Face order: the result is in Hugging Face order.
    /// </summary>
    [Theory]
    [InlineData(VectorWidth.Scalar, 64)]
    [InlineData(VectorWidth.V128, 6)]
    [InlineData(VectorWidth.V256, 64)]
    [InlineData(VectorWidth.V512, 128)]
    public void InterleavedRowsEqualsRotateHalfOfTheHuggingFaceOrder(VectorWidth width, int headDim)
    {
        const int heads = 2;
        int half = headDim / 2;
        float[] huggingFace = Random(heads * headDim, 7 + headDim, 3);
        var stored = new float[huggingFace.Length];
        for (int h = 0; h < heads; h++)
        {
            for (int i = 0; i < half; i++)
            {
                stored[(h * headDim) + (2 * i)] = huggingFace[(h * headDim) + i];
                stored[(h * headDim) + (2 * i) + 1] = huggingFace[(h * headDim) + half + i];
            }
        }

        float[] cos = new float[half], sin = new float[half];
        for (int i = 0; i < half; i++)
        {
            double angle = 11 * Math.Pow(10000, -2.0 * i / headDim);
            cos[i] = (float)Math.Cos(angle);
            sin[i] = (float)Math.Sin(angle);
        }

        fixed (float* a = huggingFace, b = stored, c = cos, s = sin)
        {
            Rope.Apply(a, heads, headDim, headDim, c, s, RopeStyle.RotateHalf, width);
            Rope.Apply(b, heads, headDim, headDim, c, s, RopeStyle.InterleavedRows, width);
        }

        Assert.Equal(huggingFace, stored);
    }
}
