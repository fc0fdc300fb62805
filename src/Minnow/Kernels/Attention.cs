using System.Runtime.Intrinsics;
using Minnow.Tensors;

namespace Minnow.Kernels;

/// <summary>
/// Causal multi-head attention with grouped-query heads over a float32 or float16 KV cache.
/// q: [tokens, heads·headDim]; the cache rows hold [kvHeads·headDim] per position; token t sits at position
/// startPos + t and attends to positions 0..startPos + t. output: [tokens, heads·headDim].
/// (token, head) pairs are spread over the worker pool; each pair is computed by the same code whatever the
/// thread count. Scores are dot products over the head dimension, four cached keys at a time; the output is the
/// score-weighted sum of the cached values, four positions per pass over the output vector (in position order).
/// The cache may be paged (<see cref="KvPages"/>): position p's rows are in page <c>pages[p / pageSize]</c>. Pages hold
/// a multiple of four positions, so the four-position steps fall on the same positions as in one contiguous buffer
/// and a paged cache gives the same bits.
/// </summary>
public static unsafe class Attention
{
    /// <summary>Where a layer's cached rows are: page <c>Pages[p / PageSize]</c> of the pool at <c>Base</c>, keys at
    /// <c>KeyOffset</c> and values at <c>ValueOffset</c> within a page, rows <c>p % PageSize</c>.</summary>
    public struct KvPages
    {
        public byte* Base;
        public int* Pages;
        public long PageBytes;
        public long KeyOffset;
        public long ValueOffset;
        public int PageSize;
    }

    private struct Job
    {
        public float* Q;
        public KvPages Kv;
        public float* Output;
        public int Heads;
        public int KvHeads;
        public int HeadDim;
        public int StartPos;
        public float Scale;
        public VectorWidth Width;
    }

    private struct ScratchTag;

    public static void Compute(float* q, float* keys, float* values, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool = null) =>
        Compute(q, (byte*)keys, (byte*)values, DType.F32, output, tokens, startPos, heads, kvHeads, headDim, pool, KernelIsa.Current);

    /// <param name="cacheType">The type of the cached keys and values: F32 or F16.</param>
    public static void Compute(float* q, byte* keys, byte* values, DType cacheType, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool = null) =>
        Compute(q, keys, values, cacheType, output, tokens, startPos, heads, kvHeads, headDim, pool, KernelIsa.Current);

    internal static void Compute(float* q, byte* keys, byte* values, DType cacheType, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool, VectorWidth width)
    {
        // One contiguous buffer is one page as long as the whole sequence.
        int page = 0;
        var kv = new KvPages
        {
            Base = keys,
            Pages = &page,
            PageBytes = 0,
            KeyOffset = 0,
            ValueOffset = values - keys,
            PageSize = startPos + tokens,
        };
        Compute(q, kv, cacheType, output, tokens, startPos, heads, kvHeads, headDim, pool, width);
    }

    /// <summary>Attention over a paged cache.</summary>
    public static void Compute(float* q, in KvPages kv, DType cacheType, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool = null) =>
        Compute(q, kv, cacheType, output, tokens, startPos, heads, kvHeads, headDim, pool, KernelIsa.Current);

    internal static void Compute(float* q, in KvPages kv, DType cacheType, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool, VectorWidth width)
    {
        if (cacheType is not (DType.F32 or DType.F16))
        {
            throw new NotSupportedException($"Attention reads an F32 or F16 cache, not {cacheType}.");
        }

        var job = new Job
        {
            Q = q,
            Kv = kv,
            Output = output,
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            StartPos = startPos,
            Scale = 1f / MathF.Sqrt(headDim),
            Width = width,
        };
        delegate*<void*, int, int, void> body = cacheType == DType.F16 ? Select<F16Format>(width) : Select<F32Format>(width);
        (pool ?? WorkerPool.Shared).For(tokens * heads, 1, body, &job);
    }

    private static delegate*<void*, int, int, void> Select<TFormat>(VectorWidth width)
        where TFormat : struct, IWeightFormat => width switch
        {
            VectorWidth.V512 => &RunItems<TFormat, Vector512<float>>,
            VectorWidth.V256 => &RunItems<TFormat, Vector256<float>>,
            VectorWidth.V128 => &RunItems<TFormat, Vector128<float>>,
            _ => &RunItemsScalar<TFormat>,
        };

    private static void RunItems<TFormat, T>(void* context, int start, int end)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        ref Job job = ref *(Job*)context;
        int hd = job.HeadDim;
        int qDim = job.Heads * hd;
        int kvDim = job.KvHeads * hd;
        int element = TFormat.BlockBytes;
        long kvBytes = (long)kvDim * element;
        int group = job.Heads / job.KvHeads;
        float* scores = Scratch<ScratchTag>.Get(job.StartPos + ((end - 1) / job.Heads) + 1);
        for (int item = start; item < end; item++)
        {
            int t = item / job.Heads, h = item % job.Heads;
            int length = job.StartPos + t + 1;
            float* qh = job.Q + ((long)t * qDim) + (h * hd);
            int kvh = h / group;
            long headOffset = (long)kvh * hd * element;
            int ps = job.Kv.PageSize;
            for (int p0 = 0, page = 0; p0 < length; p0 += ps, page++)
            {
                byte* keys = job.Kv.Base + (job.Kv.Pages[page] * job.Kv.PageBytes) + job.Kv.KeyOffset + headOffset;
                int count = Math.Min(ps, length - p0);
                float* s = scores + p0;
                int p = 0;
                for (; p + 4 <= count; p += 4)
                {
                    MatMul.Dot4<TFormat, T>(keys + (p * kvBytes), kvBytes, qh, hd, s + p);
                    for (int k = 0; k < 4; k++)
                    {
                        s[p + k] *= job.Scale;
                    }
                }

                for (; p < count; p++)
                {
                    s[p] = MatMul.Dot1<TFormat, T>(keys + (p * kvBytes), qh, hd) * job.Scale;
                }
            }

            Softmax.Compute(scores, length, job.Width);
            float* o = job.Output + ((long)t * qDim) + (h * hd);
            new Span<float>(o, hd).Clear();
            for (int p0 = 0, page = 0; p0 < length; p0 += ps, page++)
            {
                byte* values = job.Kv.Base + (job.Kv.Pages[page] * job.Kv.PageBytes) + job.Kv.ValueOffset + headOffset;
                AccumulateWeighted<TFormat, T>(scores + p0, values, kvBytes, Math.Min(ps, length - p0), o, hd);
            }
        }
    }

    /// <summary>o += Σ_p w[p] · v[p], in position order, four positions per pass over o.</summary>
    private static void AccumulateWeighted<TFormat, T>(float* w, byte* values, long kvBytes, int length, float* o, int hd)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        int c = Simd.Count<T>();
        int p = 0;
        for (; p + 4 <= length; p += 4)
        {
            byte* v0 = values + (p * kvBytes);
            byte* v1 = v0 + kvBytes, v2 = v1 + kvBytes, v3 = v2 + kvBytes;
            T w0 = Simd.Broadcast<T>(w[p]), w1 = Simd.Broadcast<T>(w[p + 1]);
            T w2 = Simd.Broadcast<T>(w[p + 2]), w3 = Simd.Broadcast<T>(w[p + 3]);
            int i = 0;
            for (; i <= hd - c; i += c)
            {
                T acc = Simd.Load<T>(o + i);
                acc = Simd.MultiplyAdd(w0, TFormat.Load<T>(v0, i), acc);
                acc = Simd.MultiplyAdd(w1, TFormat.Load<T>(v1, i), acc);
                acc = Simd.MultiplyAdd(w2, TFormat.Load<T>(v2, i), acc);
                acc = Simd.MultiplyAdd(w3, TFormat.Load<T>(v3, i), acc);
                Simd.Store(acc, o + i);
            }

            for (; i < hd; i++)
            {
                o[i] = o[i] + (w[p] * TFormat.Value(v0, i)) + (w[p + 1] * TFormat.Value(v1, i)) + (w[p + 2] * TFormat.Value(v2, i)) + (w[p + 3] * TFormat.Value(v3, i));
            }
        }

        for (; p < length; p++)
        {
            byte* v = values + (p * kvBytes);
            T wp = Simd.Broadcast<T>(w[p]);
            int i = 0;
            for (; i <= hd - c; i += c)
            {
                Simd.Store(Simd.MultiplyAdd(wp, TFormat.Load<T>(v, i), Simd.Load<T>(o + i)), o + i);
            }

            for (; i < hd; i++)
            {
                o[i] += w[p] * TFormat.Value(v, i);
            }
        }
    }

    /// <summary>The scalar reference.</summary>
    private static void RunItemsScalar<TFormat>(void* context, int start, int end)
        where TFormat : struct, IWeightFormat
    {
        ref Job job = ref *(Job*)context;
        int hd = job.HeadDim;
        int qDim = job.Heads * hd;
        int kvDim = job.KvHeads * hd;
        int group = job.Heads / job.KvHeads;
        float* scores = Scratch<ScratchTag>.Get(job.StartPos + ((end - 1) / job.Heads) + 1);
        for (int item = start; item < end; item++)
        {
            int t = item / job.Heads, h = item % job.Heads;
            int length = job.StartPos + t + 1;
            float* qh = job.Q + ((long)t * qDim) + (h * hd);
            int kvh = h / group;
            for (int p = 0; p < length; p++)
            {
                byte* k = Row(job.Kv, job.Kv.KeyOffset, p, (long)kvDim * TFormat.BlockBytes) + ((long)kvh * hd * TFormat.BlockBytes);
                float dot = 0;
                for (int i = 0; i < hd; i++)
                {
                    dot += qh[i] * TFormat.Value(k, i);
                }

                scores[p] = dot * job.Scale;
            }

            Softmax.Compute(scores, length, VectorWidth.Scalar);
            float* o = job.Output + ((long)t * qDim) + (h * hd);
            new Span<float>(o, hd).Clear();
            for (int p = 0; p < length; p++)
            {
                byte* v = Row(job.Kv, job.Kv.ValueOffset, p, (long)kvDim * TFormat.BlockBytes) + ((long)kvh * hd * TFormat.BlockBytes);
                float w = scores[p];
                for (int i = 0; i < hd; i++)
                {
                    o[i] += w * TFormat.Value(v, i);
                }
            }
        }
    }

    private static byte* Row(in KvPages kv, long offset, int position, long rowBytes) =>
        kv.Base + (kv.Pages[position / kv.PageSize] * kv.PageBytes) + offset + ((position % kv.PageSize) * rowBytes);
}
