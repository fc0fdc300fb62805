using Minnow.Tensors;

namespace Minnow.Kernels;

/// <summary>
/// y[t, o] = Σ_i x[t, i] · W[o, i] (+ bias[o]) for a weight matrix W [outputs, inputs] of any storage type and
/// <c>tokens</c> rows of float32 activations. Output rows are spread over the worker pool.
/// </summary>
public static unsafe class MatMul
{
    private struct Job
    {
        public byte* Weight;
        public DType Type;
        public long RowBytes;
        public int Columns;
        public int Rows;
        public float* X;
        public float* Y;
        public float* Bias;
        public int Tokens;
    }

    public static void Compute(Tensor weight, float* x, int tokens, float* y, float* bias = null, WorkerPool? pool = null)
    {
        var job = new Job { Weight = weight.Data, Type = weight.Type, RowBytes = weight.RowBytes, Columns = weight.Columns, Rows = weight.Rows, X = x, Y = y, Bias = bias, Tokens = tokens };
        (pool ?? WorkerPool.Shared).For(weight.Rows, 16, &RunRows, &job);
    }

    private static void RunRows(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int n = job.Columns;
        int outputs = job.Rows;
        Span<float> row = n <= 8192 ? stackalloc float[n] : new float[n];
        for (int o = start; o < end; o++)
        {
            Dequantize.Row(job.Type, job.Weight + (o * job.RowBytes), row);
            float b = job.Bias != null ? job.Bias[o] : 0f;
            for (int t = 0; t < job.Tokens; t++)
            {
                float* xt = job.X + ((long)t * n);
                float sum = 0;
                for (int i = 0; i < n; i++)
                {
                    sum += row[i] * xt[i];
                }

                job.Y[((long)t * outputs) + o] = sum + b;
            }
        }
    }
}
