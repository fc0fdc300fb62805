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
            Q = q, K = k, V = v, Probs = probs, Out = output, SeqLen = seqLen, Heads = heads, KvHeads = kvHeads,
            HeadDim = headDim, Scale = 1f / MathF.Sqrt(headDim),
        };
        pool.For(batch * heads, 1, &ForwardItems, &job);
    }

    /// <summary>Writes dq, dk, dv (not accumulated) from dOut and the saved q, k, v, probs.</summary>
    public static void Backward(float* q, float* k, float* v, float* probs, float* dOut, float* dq, float* dk, float* dv,
        int batch, int seqLen, int heads, int kvHeads, int headDim, WorkerPool pool)
    {
        var job = new Job
        {
            Q = q, K = k, V = v, Probs = probs, DOut = dOut, DQ = dq, DK = dk, DV = dv, SeqLen = seqLen, Heads = heads,
            KvHeads = kvHeads, HeadDim = headDim, Scale = 1f / MathF.Sqrt(headDim),
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
            for (int t = 0; t < T; t++)
            {
                float* qt = job.Q + ((rowBase + t) * qDim) + (h * hd);
                float* p = probs + ((long)t * T);
                for (int s = 0; s <= t; s++)
                {
                    p[s] = VectorMath.Dot(qt, job.K + ((rowBase + s) * kvDim) + (kvh * hd), hd) * job.Scale;
                }

                Softmax.Compute(p, t + 1);
                float* o = job.Out + ((rowBase + t) * qDim) + (h * hd);
                new Span<float>(o, hd).Clear();
                for (int s = 0; s <= t; s++)
                {
                    VectorMath.Axpy(p[s], job.V + ((rowBase + s) * kvDim) + (kvh * hd), o, hd);
                }
            }
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

                for (int h = kvh * group; h < (kvh + 1) * group; h++)
                {
                    float* probs = job.Probs + ((((long)b * job.Heads) + h) * T * T);
                    for (int t = 0; t < T; t++)
                    {
                        float* p = probs + ((long)t * T);
                        float* dO = job.DOut + ((rowBase + t) * qDim) + (h * hd);
                        float* qt = job.Q + ((rowBase + t) * qDim) + (h * hd);
                        float* dqt = job.DQ + ((rowBase + t) * qDim) + (h * hd);
                        float sum = 0;
                        for (int s = 0; s <= t; s++)
                        {
                            dp[s] = VectorMath.Dot(dO, job.V + ((rowBase + s) * kvDim) + (kvh * hd), hd);
                            sum += p[s] * dp[s];
                        }

                        new Span<float>(dqt, hd).Clear();
                        for (int s = 0; s <= t; s++)
                        {
                            float ds = p[s] * (dp[s] - sum) * job.Scale;
                            long kvOffset = ((rowBase + s) * kvDim) + (kvh * hd);
                            VectorMath.Axpy(ds, job.K + kvOffset, dqt, hd);
                            VectorMath.Axpy(ds, qt, job.DK + kvOffset, hd);
                            VectorMath.Axpy(p[s], dO, job.DV + kvOffset, hd);
                        }
                    }
                }
            }
        }
    }
}
