using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// Learned position embeddings (GPT-2's wpe): row r of [batch·seqLen, dim] gets table[r mod seqLen] added;
/// backward sums each position's row gradients over the batch into the table.
/// </summary>
public static unsafe class PositionEmbeddingOp
{
    private struct Job
    {
        public float* Table;
        public float* X;
        public int Batch;
        public int SeqLen;
        public int Dim;
    }

    /// <summary>x[b, t] += table[t] for every sequence b of the batch.</summary>
    public static void Forward(float* table, float* x, int batch, int seqLen, int dim, WorkerPool pool)
    {
        var job = new Job { Table = table, X = x, Batch = batch, SeqLen = seqLen, Dim = dim };
        pool.For(batch * seqLen, 64, &AddRows, &job);
    }

    /// <summary>dTable[t] += Σ_b dx[b, t], the batch summed in order (parallel over positions).</summary>
    public static void Backward(float* dx, float* dTable, int batch, int seqLen, int dim, WorkerPool pool)
    {
        var job = new Job { Table = dTable, X = dx, Batch = batch, SeqLen = seqLen, Dim = dim };
        pool.For(seqLen, 8, &SumPositions, &job);
    }

    private static void AddRows(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        for (int r = start; r < end; r++)
        {
            VectorMath.Add(job.Table + ((long)(r % job.SeqLen) * job.Dim), job.X + ((long)r * job.Dim), job.Dim);
        }
    }

    private static void SumPositions(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        for (int t = start; t < end; t++)
        {
            for (int b = 0; b < job.Batch; b++)
            {
                VectorMath.Add(job.X + ((((long)b * job.SeqLen) + t) * job.Dim), job.Table + ((long)t * job.Dim), job.Dim);
            }
        }
    }
}
