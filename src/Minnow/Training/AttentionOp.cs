using Minnow.Kernels;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// Causal grouped-query attention over a batch of sequences for training. q: [batch·seqLen, heads·headDim];
/// k, v: [batch·seqLen, kvHeads·headDim]; the softmax probabilities are kept in probs [batch, heads, seqLen,
/// seqLen] (lower triangle) for the backward pass. Forward is parallel over (sequence, head); backward over
/// (sequence, kv head), so the item that owns a kv head accumulates its dk/dv alone, in a fixed order.
/// </summary>
public static unsafe class AttentionOp
{
    private struct Job
    {
        public float* Q;
        public float* K;
        public float* V;
        public float* Probs;
        public float* Out;
        public float* DOut;
        public float* DQ;
        public float* DK;
        public float* DV;
        public int SeqLen;
        public int Heads;
        public int KvHeads;
        public int HeadDim;
        public float Scale;
    }

    public static long ProbsLength(int batch, int seqLen, int heads) => (long)batch * heads * seqLen * seqLen;

    public static void Forward(float* q, float* k, float* v, float* probs, float* output, int batch, int seqLen,
        int heads, int kvHeads, int headDim, WorkerPool pool)
    {
        var job = new Job
        {
            Q = q,
            K = k,
            V = v,
            Probs = probs,
            Out = output,
            SeqLen = seqLen,
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            Scale = 1f / MathF.Sqrt(headDim),
        };
        pool.For(batch * heads, 1, &ForwardItems, &job);
    }

    /// <summary>Writes dq, dk, dv (not accumulated) from dOut and the saved q, k, v, probs.</summary>
    public static void Backward(float* q, float* k, float* v, float* probs, float* dOut, float* dq, float* dk, float* dv,
        int batch, int seqLen, int heads, int kvHeads, int headDim, WorkerPool pool)
    {
        var job = new Job
        {
            Q = q,
            K = k,
            V = v,
            Probs = probs,
            DOut = dOut,
            DQ = dq,
            DK = dk,
            DV = dv,
            SeqLen = seqLen,
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            Scale = 1f / MathF.Sqrt(headDim),
        };
        pool.For(batch * kvHeads, 1, &BackwardItems, &job);
    }

    private static void ForwardItems(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int hd = job.HeadDim, T = job.SeqLen;
        int qDim = job.Heads * hd, kvDim = job.KvHeads * hd;
        int group = job.Heads / job.KvHeads;
        for (int item = start; item < end; item++)
        {
            int b = item / job.Heads, h = item % job.Heads, kvh = h / group;
            long rowBase = (long)b * T;
            float* probs = job.Probs + ((long)item * T * T);
            float* kh = job.K + (rowBase * kvDim) + (kvh * hd);
            float* vh = job.V + (rowBase * kvDim) + (kvh * hd);
            for (int t = 0; t < T; t++)
            {
                float* qt = job.Q + ((rowBase + t) * qDim) + (h * hd);
                float* p = probs + ((long)t * T);
                Scores(qt, kh, kvDim, t + 1, hd, p);
                for (int s = 0; s <= t; s++)
                {
                    p[s] *= job.Scale;
                }

                Softmax.Compute(p, t + 1);
                VectorMath.WeightedRowSum(p, t + 1, vh, kvDim, job.Out + ((rowBase + t) * qDim) + (h * hd), hd);
            }
        }
    }

    /// <summary>scores[s] = q·k_s for the first <paramref name="count"/> rows of k (row stride <paramref name="stride"/>).</summary>
    private static void Scores(float* q, float* k, int stride, int count, int hd, float* scores)
    {
        int s = 0;
        for (; s <= count - 4; s += 4)
        {
            float* k0 = k + ((long)s * stride);
            VectorMath.Dot4(q, k0, k0 + stride, k0 + (2 * stride), k0 + (3 * stride), hd, scores + s);
        }

        for (; s < count; s++)
        {
            scores[s] = VectorMath.Dot(q, k + ((long)s * stride), hd);
        }
    }

    // For one query row: dP_s = dO·v_s; dS_s = P_s(dP_s − Σ P·dP); dq = scale Σ dS_s k_s;
    // dk_s += scale dS_s q; dv_s += P_s dO.
    private static void BackwardItems(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int hd = job.HeadDim, T = job.SeqLen;
        int qDim = job.Heads * hd, kvDim = job.KvHeads * hd;
        int group = job.Heads / job.KvHeads;
        Span<float> dpBuffer = T <= 4096 ? stackalloc float[T] : new float[T];
        fixed (float* dp = dpBuffer)
        {
            for (int item = start; item < end; item++)
            {
                int b = item / job.KvHeads, kvh = item % job.KvHeads;
                long rowBase = (long)b * T;
                for (int s = 0; s < T; s++)
                {
                    new Span<float>(job.DK + ((rowBase + s) * kvDim) + (kvh * hd), hd).Clear();
                    new Span<float>(job.DV + ((rowBase + s) * kvDim) + (kvh * hd), hd).Clear();
                }

                float* kh = job.K + (rowBase * kvDim) + (kvh * hd);
                float* vh = job.V + (rowBase * kvDim) + (kvh * hd);
                for (int h = kvh * group; h < (kvh + 1) * group; h++)
                {
                    float* probs = job.Probs + ((((long)b * job.Heads) + h) * T * T);
                    for (int t = 0; t < T; t++)
                    {
                        float* p = probs + ((long)t * T);
                        float* dO = job.DOut + ((rowBase + t) * qDim) + (h * hd);
                        float* qt = job.Q + ((rowBase + t) * qDim) + (h * hd);
                        Scores(dO, vh, kvDim, t + 1, hd, dp);
                        float sum = 0;
                        for (int s = 0; s <= t; s++)
                        {
                            sum += p[s] * dp[s];
                        }

                        for (int s = 0; s <= t; s++)
                        {
                            dp[s] = p[s] * (dp[s] - sum) * job.Scale;
                        }

                        VectorMath.WeightedRowSum(dp, t + 1, kh, kvDim, job.DQ + ((rowBase + t) * qDim) + (h * hd), hd);
                        for (int s = 0; s <= t; s++)
                        {
                            long kvOffset = ((rowBase + s) * kvDim) + (kvh * hd);
                            VectorMath.Axpy(dp[s], qt, job.DK + kvOffset, hd);
                            VectorMath.Axpy(p[s], dO, job.DV + kvOffset, hd);
                        }
                    }
                }
            }
        }
    }
}
