using System.Runtime.Intrinsics;
using Minnow.Tensors;

namespace Minnow.Kernels;

/// <summary>
/// Causal multi-head attention with grouped-query heads over a float32 KV cache.
/// q: [tokens, heads·headDim]; the cache rows hold [kvHeads·headDim] per position; token t sits at position
/// startPos + t and attends to positions 0..startPos + t. output: [tokens, heads·headDim].
/// (token, head) pairs are spread over the worker pool; each pair is computed by the same code whatever the
/// thread count. Scores are dot products over the head dimension, four cached keys at a time; the output is the
/// score-weighted sum of the cached values, four positions per pass over the output vector (in position order).
/// </summary>
public static unsafe class Attention
{
    private struct Job
    {
        public float* Q;
        public float* Keys;
        public float* Values;
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
        Compute(q, keys, values, output, tokens, startPos, heads, kvHeads, headDim, pool, KernelIsa.Current);

    internal static void Compute(float* q, float* keys, float* values, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool, VectorWidth width)
    {
        var job = new Job
        {
            Q = q,
            Keys = keys,
            Values = values,
            Output = output,
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            StartPos = startPos,
            Scale = 1f / MathF.Sqrt(headDim),
            Width = width,
        };
        delegate*<void*, int, int, void> body = width switch
        {
            VectorWidth.V512 => &RunItems<Vector512<float>>,
            VectorWidth.V256 => &RunItems<Vector256<float>>,
            VectorWidth.V128 => &RunItems<Vector128<float>>,
            _ => &RunItemsScalar,
        };
        (pool ?? WorkerPool.Shared).For(tokens * heads, 1, body, &job);
    }

    private static void RunItems<T>(void* context, int start, int end)
        where T : struct
    {
        ref Job job = ref *(Job*)context;
        int hd = job.HeadDim;
        int qDim = job.Heads * hd;
        int kvDim = job.KvHeads * hd;
        long kvBytes = (long)kvDim * sizeof(float);
        int group = job.Heads / job.KvHeads;
        float* scores = Scratch<ScratchTag>.Get(job.StartPos + ((end - 1) / job.Heads) + 1);
        for (int item = start; item < end; item++)
        {
            int t = item / job.Heads, h = item % job.Heads;
            int length = job.StartPos + t + 1;
            float* qh = job.Q + ((long)t * qDim) + (h * hd);
            int kvh = h / group;
            float* keys = job.Keys + (kvh * hd);
            float* values = job.Values + (kvh * hd);

            int p = 0;
            for (; p + 4 <= length; p += 4)
            {
                MatMul.Dot4<F32Format, T>((byte*)(keys + ((long)p * kvDim)), kvBytes, qh, hd, scores + p);
                for (int k = 0; k < 4; k++)
                {
                    scores[p + k] *= job.Scale;
                }
            }

            for (; p < length; p++)
            {
                scores[p] = MatMul.Dot1<F32Format, T>((byte*)(keys + ((long)p * kvDim)), qh, hd) * job.Scale;
            }

            Softmax.Compute(scores, length, job.Width);
            WeightedSum<T>(scores, values, kvDim, length, job.Output + ((long)t * qDim) + (h * hd), hd);
        }
    }

    /// <summary>o = Σ_p w[p] · v[p], in position order, four positions per pass over o.</summary>
    private static void WeightedSum<T>(float* w, float* values, int kvDim, int length, float* o, int hd)
        where T : struct
    {
        int c = Simd.Count<T>();
        new Span<float>(o, hd).Clear();
        int p = 0;
        for (; p + 4 <= length; p += 4)
        {
            float* v0 = values + ((long)p * kvDim);
            float* v1 = v0 + kvDim, v2 = v1 + kvDim, v3 = v2 + kvDim;
            T w0 = Simd.Broadcast<T>(w[p]), w1 = Simd.Broadcast<T>(w[p + 1]);
            T w2 = Simd.Broadcast<T>(w[p + 2]), w3 = Simd.Broadcast<T>(w[p + 3]);
            int i = 0;
            for (; i <= hd - c; i += c)
            {
                T acc = Simd.Load<T>(o + i);
                acc = Simd.MultiplyAdd(w0, Simd.Load<T>(v0 + i), acc);
                acc = Simd.MultiplyAdd(w1, Simd.Load<T>(v1 + i), acc);
                acc = Simd.MultiplyAdd(w2, Simd.Load<T>(v2 + i), acc);
                acc = Simd.MultiplyAdd(w3, Simd.Load<T>(v3 + i), acc);
                Simd.Store(acc, o + i);
            }

            for (; i < hd; i++)
            {
                o[i] = o[i] + (w[p] * v0[i]) + (w[p + 1] * v1[i]) + (w[p + 2] * v2[i]) + (w[p + 3] * v3[i]);
            }
        }

        for (; p < length; p++)
        {
            float* v = values + ((long)p * kvDim);
            T wp = Simd.Broadcast<T>(w[p]);
            int i = 0;
            for (; i <= hd - c; i += c)
            {
                Simd.Store(Simd.MultiplyAdd(wp, Simd.Load<T>(v + i), Simd.Load<T>(o + i)), o + i);
            }

            for (; i < hd; i++)
            {
                o[i] += w[p] * v[i];
            }
        }
    }

    /// <summary>The scalar reference.</summary>
    private static void RunItemsScalar(void* context, int start, int end)
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
                float* k = job.Keys + ((long)p * kvDim) + (kvh * hd);
                float dot = 0;
                for (int i = 0; i < hd; i++)
                {
                    dot += qh[i] * k[i];
                }

                scores[p] = dot * job.Scale;
            }

            Softmax.Compute(scores, length, VectorWidth.Scalar);
            float* o = job.Output + ((long)t * qDim) + (h * hd);
            new Span<float>(o, hd).Clear();
            for (int p = 0; p < length; p++)
            {
                float* v = job.Values + ((long)p * kvDim) + (kvh * hd);
                float w = scores[p];
                for (int i = 0; i < hd; i++)
                {
                    o[i] += w * v[i];
                }
            }
        }
    }
}
