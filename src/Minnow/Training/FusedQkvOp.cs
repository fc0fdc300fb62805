using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>How a fused query/key/value projection orders its output features.</summary>
public enum FusedQkvLayout
{
    /// <summary>Grouped per head as [q_h, k_h, v_h] (GPT-NeoX's query_key_value in Hugging Face layout).</summary>
    PerHead,
    /// <summary>[all q | all k | all v] (GPT-2's c_attn).</summary>
    Blocked,
}

/// <summary>
/// Splits the output of a fused q/k/v projection, [rows, 3·heads·headDim], into q, k, v of [rows, heads·headDim]
/// each; backward merges their gradients back into the fused layout (a permutation, so nothing is summed).
/// </summary>
public static unsafe class FusedQkvOp
{
    private struct Job
    {
        public float* Fused;
        public float* Q;
        public float* K;
        public float* V;
        public int Heads;
        public int HeadDim;
        public FusedQkvLayout Layout;
        public bool Merge;
    }

    public static void Split(float* fused, float* q, float* k, float* v, int rows, int heads, int headDim, FusedQkvLayout layout, WorkerPool pool)
    {
        var job = new Job { Fused = fused, Q = q, K = k, V = v, Heads = heads, HeadDim = headDim, Layout = layout, Merge = false };
        pool.For(rows, 64, &Run, &job);
    }

    /// <summary>The backward of <see cref="Split"/>: writes dFused from dq, dk, dv.</summary>
    public static void Merge(float* dq, float* dk, float* dv, float* dFused, int rows, int heads, int headDim, FusedQkvLayout layout, WorkerPool pool)
    {
        var job = new Job { Fused = dFused, Q = dq, K = dk, V = dv, Heads = heads, HeadDim = headDim, Layout = layout, Merge = true };
        pool.For(rows, 64, &Run, &job);
    }

    private static void Run(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int hd = job.HeadDim, width = job.Heads * hd;
        for (int r = start; r < end; r++)
        {
            float* fused = job.Fused + ((long)r * 3 * width);
            float* q = job.Q + ((long)r * width), k = job.K + ((long)r * width), v = job.V + ((long)r * width);
            for (int h = 0; h < job.Heads; h++)
            {
                // Offsets of head h's q, k and v inside the fused row.
                int qAt = job.Layout == FusedQkvLayout.PerHead ? 3 * h * hd : h * hd;
                int kAt = job.Layout == FusedQkvLayout.PerHead ? qAt + hd : width + (h * hd);
                int vAt = job.Layout == FusedQkvLayout.PerHead ? qAt + (2 * hd) : (2 * width) + (h * hd);
                if (job.Merge)
                {
                    VectorMath.Copy(q + (h * hd), fused + qAt, hd);
                    VectorMath.Copy(k + (h * hd), fused + kAt, hd);
                    VectorMath.Copy(v + (h * hd), fused + vAt, hd);
                }
                else
                {
                    VectorMath.Copy(fused + qAt, q + (h * hd), hd);
                    VectorMath.Copy(fused + kAt, k + (h * hd), hd);
                    VectorMath.Copy(fused + vAt, v + (h * hd), hd);
                }
            }
        }
    }
}
