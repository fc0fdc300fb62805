using Minnow.Kernels;
using Minnow.Tensors;
using static Minnow.Tests.Kernels.KernelTestSupport;

namespace Minnow.Tests.Kernels;

public unsafe class AttentionTests : IDisposable
{
    private readonly WorkerPool _one = new(1);
    private readonly WorkerPool _two = new(2);

    public void Dispose()
    {
        _one.Dispose();
        _two.Dispose();
        GC.SuppressFinalize(this);
    }

    public static TheoryData<VectorWidth, int, int, int, int, int> Cases()
    {
        var data = new TheoryData<VectorWidth, int, int, int, int, int>();
        foreach (var width in AllWidths)
        {
            // tokens, startPos, heads, kvHeads, headDim
            data.Add(width, 1, 0, 2, 2, 8);
            data.Add(width, 1, 9, 4, 2, 64);
            data.Add(width, 3, 0, 4, 1, 20);
            data.Add(width, 7, 5, 6, 3, 36);
            data.Add(width, 5, 2, 3, 3, 7);
            data.Add(width, 2, 30, 9, 3, 64);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesReference(VectorWidth width, int tokens, int startPos, int heads, int kvHeads, int headDim)
    {
        int positions = startPos + tokens;
        int qDim = heads * headDim, kvDim = kvHeads * headDim;
        float[] q = Random(tokens * qDim, 1 + headDim, 1.5f);
        float[] keys = Random(positions * kvDim, 2 + headDim, 1.5f);
        float[] values = Random(positions * kvDim, 3 + headDim, 1f);
        float[] output = new float[tokens * qDim], single = new float[tokens * qDim];
        fixed (float* pq = q, pk = keys, pv = values, po = output, ps = single)
        {
            using (KernelIsa.Force(width))
            {
                Attention.Compute(pq, pk, pv, po, tokens, startPos, heads, kvHeads, headDim, _two);
                Attention.Compute(pq, pk, pv, ps, tokens, startPos, heads, kvHeads, headDim, _one);
            }
        }

        AssertBitwiseEqual(single, output, $"{width} threads");
        var expected = Reference(q, keys, values, tokens, startPos, heads, kvHeads, headDim);
        AssertClose(expected, output, 1e-5, 1e-5, $"{width}");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void HalfPrecisionCacheMatchesReferenceOnItsRoundedValues(VectorWidth width, int tokens, int startPos, int heads, int kvHeads, int headDim)
    {
        int positions = startPos + tokens;
        int qDim = heads * headDim, kvDim = kvHeads * headDim;
        float[] q = Random(tokens * qDim, 1 + headDim, 1.5f);
        Half[] keys = Array.ConvertAll(Random(positions * kvDim, 2 + headDim, 1.5f), v => (Half)v);
        Half[] values = Array.ConvertAll(Random(positions * kvDim, 3 + headDim, 1f), v => (Half)v);
        float[] output = new float[tokens * qDim], single = new float[tokens * qDim];
        fixed (float* pq = q, po = output, ps = single)
        fixed (Half* pk = keys, pv = values)
        {
            using (KernelIsa.Force(width))
            {
                Attention.Compute(pq, (byte*)pk, (byte*)pv, DType.F16, po, tokens, startPos, heads, kvHeads, headDim, _two);
                Attention.Compute(pq, (byte*)pk, (byte*)pv, DType.F16, ps, tokens, startPos, heads, kvHeads, headDim, _one);
            }
        }

        AssertBitwiseEqual(single, output, $"{width} threads");
        var expected = Reference(q, Array.ConvertAll(keys, v => (float)v), Array.ConvertAll(values, v => (float)v), tokens, startPos, heads, kvHeads, headDim);
        AssertClose(expected, output, 1e-5, 1e-5, $"{width} f16");
    }

    /// <summary>Attention in double precision, softmax with the maximum subtracted.</summary>
    private static double[] Reference(float[] q, float[] keys, float[] values, int tokens, int startPos, int heads, int kvHeads, int headDim)
    {
        int positions = startPos + tokens;
        int qDim = heads * headDim, kvDim = kvHeads * headDim;
        var expected = new double[tokens * qDim];
        var weights = new double[positions];
        int group = heads / kvHeads;
        for (int t = 0; t < tokens; t++)
        {
            for (int h = 0; h < heads; h++)
            {
                int kvh = h / group, length = startPos + t + 1;
                double max = double.NegativeInfinity;
                for (int p = 0; p < length; p++)
                {
                    double dot = 0;
                    for (int i = 0; i < headDim; i++)
                    {
                        dot += (double)q[(t * qDim) + (h * headDim) + i] * keys[(p * kvDim) + (kvh * headDim) + i];
                    }

                    weights[p] = dot / Math.Sqrt(headDim);
                    max = Math.Max(max, weights[p]);
                }

                double sum = 0;
                for (int p = 0; p < length; p++)
                {
                    weights[p] = Math.Exp(weights[p] - max);
                    sum += weights[p];
                }

                for (int i = 0; i < headDim; i++)
                {
                    double o = 0;
                    for (int p = 0; p < length; p++)
                    {
                        o += weights[p] / sum * values[(p * kvDim) + (kvh * headDim) + i];
                    }

                    expected[(t * qDim) + (h * headDim) + i] = o;
                }
            }
        }

        return expected;
    }
}
