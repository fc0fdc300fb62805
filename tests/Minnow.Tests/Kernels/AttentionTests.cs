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

    public static TheoryData<VectorWidth, bool, int> SegmentCases()
    {
        var data = new TheoryData<VectorWidth, bool, int>();
        foreach (var width in AllWidths)
        {
            data.Add(width, true, 64);
            data.Add(width, false, 64);
            data.Add(width, true, 20);
        }

        return data;
    }

    /// <summary>
    /// Several sequences in one call (a batched decode step, caches in shuffled pages of one pool) give each
    /// sequence the bits of a call for it alone, and the reference's values.
    /// </summary>
    [Theory]
    [MemberData(nameof(SegmentCases))]
    public void SegmentsInOneCallEqualEachAlone(VectorWidth width, bool half, int headDim)
    {
        const int heads = 9, kvHeads = 3, pageSize = 16;
        (int Tokens, int StartPos)[] shapes = [(1, 37), (5, 0), (1, 70), (3, 16)];
        int qDim = heads * headDim, kvDim = kvHeads * headDim, element = half ? 2 : 4;
        long rowBytes = (long)kvDim * element, pageBytes = 2 * pageSize * rowBytes;
        int pagesInAll = shapes.Sum(x => (x.Tokens + x.StartPos + pageSize - 1) / pageSize);
        var pool = new byte[pagesInAll * pageBytes];
        var order = Enumerable.Range(0, pagesInAll).Reverse().ToArray(); // pages out of order
        var rng = new Random(headDim + (half ? 1 : 0));
        int nextPage = 0;
        var tables = new int[shapes.Length][];
        var qs = new float[shapes.Length][];
        var keys = new float[shapes.Length][];
        var values = new float[shapes.Length][];
        for (int s = 0; s < shapes.Length; s++)
        {
            int positions = shapes[s].Tokens + shapes[s].StartPos;
            tables[s] = new int[(positions + pageSize - 1) / pageSize];
            for (int i = 0; i < tables[s].Length; i++)
            {
                tables[s][i] = order[nextPage++];
            }

            qs[s] = Random(shapes[s].Tokens * qDim, 10 + s, 1.5f);
            keys[s] = Random(positions * kvDim, 20 + s, 1.5f);
            values[s] = Random(positions * kvDim, 30 + s, 1f);
            for (int p = 0; p < positions; p++)
            {
                long page = tables[s][p / pageSize] * pageBytes;
                for (int i = 0; i < kvDim; i++)
                {
                    float k = keys[s][(p * kvDim) + i], v = values[s][(p * kvDim) + i];
                    if (half)
                    {
                        keys[s][(p * kvDim) + i] = k = (float)(Half)k;
                        values[s][(p * kvDim) + i] = v = (float)(Half)v;
                        BitConverter.TryWriteBytes(pool.AsSpan((int)(page + ((p % pageSize) * rowBytes) + (i * 2))), (Half)k);
                        BitConverter.TryWriteBytes(pool.AsSpan((int)(page + (pageSize * rowBytes) + ((p % pageSize) * rowBytes) + (i * 2))), (Half)v);
                    }
                    else
                    {
                        BitConverter.TryWriteBytes(pool.AsSpan((int)(page + ((p % pageSize) * rowBytes) + (i * 4))), k);
                        BitConverter.TryWriteBytes(pool.AsSpan((int)(page + (pageSize * rowBytes) + ((p % pageSize) * rowBytes) + (i * 4))), v);
                    }
                }
            }
        }

        var together = shapes.Select(x => new float[x.Tokens * qDim]).ToArray();
        var alone = shapes.Select(x => new float[x.Tokens * qDim]).ToArray();
        var type = half ? DType.F16 : DType.F32;
        fixed (byte* basePointer = pool)
        {
            var handles = new List<System.Runtime.InteropServices.GCHandle>();
            try
            {
                float* Pin(Array a)
                {
                    var h = System.Runtime.InteropServices.GCHandle.Alloc(a, System.Runtime.InteropServices.GCHandleType.Pinned);
                    handles.Add(h);
                    return (float*)h.AddrOfPinnedObject();
                }

                var segments = new Attention.Segment[shapes.Length];
                for (int s = 0; s < shapes.Length; s++)
                {
                    segments[s] = new Attention.Segment
                    {
                        Q = Pin(qs[s]),
                        Output = Pin(together[s]),
                        Kv = new Attention.KvPages
                        {
                            Base = basePointer,
                            Pages = (int*)Pin(tables[s]),
                            PageBytes = pageBytes,
                            KeyOffset = 0,
                            ValueOffset = pageSize * rowBytes,
                            PageSize = pageSize,
                        },
                        Tokens = shapes[s].Tokens,
                        StartPos = shapes[s].StartPos,
                    };
                }

                using (KernelIsa.Force(width))
                {
                    Attention.Compute(segments, type, heads, kvHeads, headDim, _two);
                    for (int s = 0; s < shapes.Length; s++)
                    {
                        Attention.Compute(segments[s].Q, segments[s].Kv, type, Pin(alone[s]), shapes[s].Tokens, shapes[s].StartPos, heads, kvHeads, headDim, _one);
                    }
                }
            }
            finally
            {
                handles.ForEach(h => h.Free());
            }
        }

        for (int s = 0; s < shapes.Length; s++)
        {
            AssertBitwiseEqual(alone[s], together[s], $"{width} segment {s}");
            var expected = Reference(qs[s], keys[s], values[s], shapes[s].Tokens, shapes[s].StartPos, heads, kvHeads, headDim);
            AssertClose(expected, together[s], 1e-5, 1e-5, $"{width} segment {s}");
        }
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
