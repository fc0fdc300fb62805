using Minnow.Tensors;

namespace Minnow.Kernels;

/// <summary>
/// Causal multi-head attention with grouped-query heads over a float32 KV cache.
/// q: [tokens, heads·headDim]; the cache rows hold [kvHeads·headDim] per position; token t sits at position
/// startPos + t and attends to positions 0..startPos + t. output: [tokens, heads·headDim].
/// (token, head) pairs are spread over the worker pool.
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
    }

    public static void Compute(float* q, float* keys, float* values, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool = null)
    {
        var job = new Job
        {
            Q = q, Keys = keys, Values = values, Output = output, Heads = heads, KvHeads = kvHeads,
            HeadDim = headDim, StartPos = startPos, Scale = 1f / MathF.Sqrt(headDim),
        };
        (pool ?? WorkerPool.Shared).For(tokens * heads, 1, &RunItems, &job);
    }

    private static void RunItems(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int hd = job.HeadDim;
        int qDim = job.Heads * hd;
        int kvDim = job.KvHeads * hd;
        int group = job.Heads / job.KvHeads;
        int maxLength = job.StartPos + (end / job.Heads) + 1;
        Span<float> scoreBuffer = maxLength <= 4096 ? stackalloc float[maxLength] : new float[maxLength];
        for (int item = start; item < end; item++)
        {
            int t = item / job.Heads, h = item % job.Heads;
            int length = job.StartPos + t + 1;
            Span<float> scores = scoreBuffer[..length];
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

            fixed (float* s = scores)
            {
                Softmax.Compute(s, length);
            }

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
