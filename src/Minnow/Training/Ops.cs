using System.Runtime.Intrinsics;
using Minnow.Kernels;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Training;

// Forward/backward pairs of the Llama architecture over float32 row-major buffers ([rows, width]). Every op is
// deterministic: each output element is written by one thread, summing in a fixed order. Backward ops that
// produce parameter gradients add into them (gradient accumulation); activation gradients are written unless
// the method says it accumulates.

/// <summary>y = x·Wᵀ (+ b) for W [out, in]; backward dx = dy·W, dW += dyᵀ·x (unless frozen), db += Σ dy.</summary>
public static unsafe class LinearOp
{
    public static void Forward(float* x, int rows, int inDim, float* weight, int outDim, float* bias, float* y, WorkerPool pool)
    {
        Gemm.Multiply(rows, outDim, inDim, x, inDim, false, weight, inDim, true, y, outDim, false, pool);
        if (bias != null)
        {
            BiasRows.Add(y, bias, rows, outDim, pool);
        }
    }

    /// <summary>
    /// dx = dy·W (or dx += when <paramref name="accumulateDx"/>; skipped when dx is null), dW += dyᵀ·x (when dW
    /// is not null: null for a frozen weight), db += column sums of dy (when db is not null).
    /// </summary>
    public static void Backward(float* x, float* dy, int rows, int inDim, float* weight, int outDim,
        float* dx, bool accumulateDx, float* dWeight, float* dBias, WorkerPool pool)
    {
        if (dWeight != null)
        {
            Gemm.Multiply(outDim, inDim, rows, dy, outDim, true, x, inDim, false, dWeight, inDim, true, pool);
        }

        if (dx != null)
        {
            Gemm.Multiply(rows, inDim, outDim, dy, outDim, false, weight, inDim, false, dx, inDim, accumulateDx, pool);
        }

        if (dBias != null)
        {
            ColumnSums.Accumulate(dy, rows, outDim, dBias, pool);
        }
    }
}

/// <summary>y[r] += bias for every row of [rows, width], parallel over rows.</summary>
internal static unsafe class BiasRows
{
    private struct Job
    {
        public float* Y;
        public float* Bias;
        public int Rows;
        public int Width;
    }

    public static void Add(float* y, float* bias, int rows, int width, WorkerPool pool)
    {
        var job = new Job { Y = y, Bias = bias, Rows = rows, Width = width };
        pool.For(rows, 64, &Run, &job);
    }

    private static void Run(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        for (int r = start; r < end; r++)
        {
            VectorMath.Add(job.Bias, job.Y + ((long)r * job.Width), job.Width);
        }
    }
}

/// <summary>sums[c] += Σ_r x[r, c], parallel over column blocks, rows summed in order.</summary>
internal static unsafe class ColumnSums
{
    private struct Job
    {
        public float* X;
        public float* Sums;
        public int Rows;
        public int Width;
    }

    public static void Accumulate(float* x, int rows, int width, float* sums, WorkerPool pool)
    {
        var job = new Job { X = x, Sums = sums, Rows = rows, Width = width };
        pool.For((width + 31) / 32, 1, &Run, &job);
    }

    private static void Run(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int c0 = start * 32, c1 = Math.Min(job.Width, end * 32);
        float* acc = stackalloc float[c1 - c0];
        for (int c = c0; c < c1; c++)
        {
            acc[c - c0] = job.Sums[c];
        }

        for (int r = 0; r < job.Rows; r++)
        {
            VectorMath.Add(job.X + ((long)r * job.Width) + c0, acc, c1 - c0);
        }

        for (int c = c0; c < c1; c++)
        {
            job.Sums[c] = acc[c - c0];
        }
    }
}

/// <summary>Token embedding lookup; backward scatters row gradients into the table.</summary>
public static unsafe class EmbeddingOp
{
    private struct Job
    {
        public float* Table;
        public int* Ids;
        public float* X;
        public int Rows;
        public int Dim;
    }

    public static void Forward(float* table, int* ids, int rows, int dim, float* x, WorkerPool pool)
    {
        var job = new Job { Table = table, Ids = ids, X = x, Rows = rows, Dim = dim };
        pool.For(rows, 64, &Gather, &job);
    }

    /// <summary>dTable[ids[r]] += dx[r] for every row, in row order (parallel over column blocks).</summary>
    public static void Backward(int* ids, float* dx, int rows, int dim, float* dTable, WorkerPool pool)
    {
        var job = new Job { Table = dTable, Ids = ids, X = dx, Rows = rows, Dim = dim };
        pool.For((dim + 31) / 32, 1, &Scatter, &job);
    }

    private static void Gather(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        for (int r = start; r < end; r++)
        {
            VectorMath.Copy(job.Table + ((long)job.Ids[r] * job.Dim), job.X + ((long)r * job.Dim), job.Dim);
        }
    }

    private static void Scatter(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int c0 = start * 32, width = Math.Min(job.Dim, end * 32) - c0;
        for (int r = 0; r < job.Rows; r++)
        {
            VectorMath.Add(job.X + ((long)r * job.Dim) + c0, job.Table + ((long)job.Ids[r] * job.Dim) + c0, width);
        }
    }
}

/// <summary>y = x / sqrt(mean(x²) + eps) · w per row (forward by <see cref="RmsNorm"/>).</summary>
public static unsafe class RmsNormOp
{
    private struct Job
    {
        public float* X;
        public float* Weight;
        public float* Y;
        public float* DY;
        public float* DX;
        public float* DWeight;
        public float* Rstd;
        public int Rows;
        public int Dim;
        public float Eps;
    }

    public static void Forward(float* x, float* weight, float* y, int rows, int dim, float eps, WorkerPool pool)
    {
        var job = new Job { X = x, Weight = weight, Y = y, Rows = rows, Dim = dim, Eps = eps };
        pool.For(rows, 32, &ForwardRows, &job);
    }

    /// <summary>
    /// dx += ∂L/∂x (added, as x is the residual stream) and dWeight += ∂L/∂w (unless dWeight is null: a frozen
    /// weight), given dy. <paramref name="rstd"/> is scratch for <paramref name="rows"/> floats.
    /// </summary>
    public static void Backward(float* x, float* weight, float* dy, float* dx, float* dWeight, float* rstd, int rows, int dim, float eps, WorkerPool pool)
    {
        var job = new Job { X = x, Weight = weight, DY = dy, DX = dx, DWeight = dWeight, Rstd = rstd, Rows = rows, Dim = dim, Eps = eps };
        pool.For(rows, 32, &BackwardRows, &job);
        if (dWeight != null)
        {
            pool.For((dim + 31) / 32, 1, &WeightGradient, &job);
        }
    }

    private static void ForwardRows(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        for (int r = start; r < end; r++)
        {
            long o = (long)r * job.Dim;
            RmsNorm.Compute(job.X + o, job.Weight, job.Y + o, job.Dim, job.Eps);
        }
    }

    // y_i = x_i·r·w_i, r = (Σx²/n + eps)^-½  ⇒  dx_i = r·w_i·dy_i − x_i·r³/n · Σ_j dy_j·w_j·x_j
    private static void BackwardRows(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int n = job.Dim;
        for (int r = start; r < end; r++)
        {
            float* x = job.X + ((long)r * n);
            float* dy = job.DY + ((long)r * n);
            float* dx = job.DX + ((long)r * n);
            double sumSquares = 0, dot = 0;
            for (int i = 0; i < n; i++)
            {
                sumSquares += x[i] * x[i];
                dot += dy[i] * job.Weight[i] * x[i];
            }

            float rs = 1f / MathF.Sqrt((float)(sumSquares / n) + job.Eps);
            job.Rstd[r] = rs;
            float c = (float)(dot * rs * rs * rs / n);
            for (int i = 0; i < n; i++)
            {
                dx[i] += (rs * job.Weight[i] * dy[i]) - (c * x[i]);
            }
        }
    }

    private static void WeightGradient(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int c0 = start * 32, c1 = Math.Min(job.Dim, end * 32);
        for (int c = c0; c < c1; c++)
        {
            float sum = 0;
            for (int r = 0; r < job.Rows; r++)
            {
                long o = ((long)r * job.Dim) + c;
                sum += job.DY[o] * job.X[o] * job.Rstd[r];
            }

            job.DWeight[c] += sum;
        }
    }
}

/// <summary>
/// Rotary embedding over rows laid out as [batch·seqLen, heads·headDim] (row r is position r mod seqLen), using
/// <see cref="Rope"/>. Backward rotates by the opposite angle (the transpose of a rotation).
/// </summary>
public static unsafe class RopeOp
{
    /// <summary>
    /// Fills the [seqLen, rotaryDim/2] tables the forward pass (cos, sin) and the backward pass (cos, −sin: the
    /// inverse rotation) read.
    /// </summary>
    public static void FillTables(RopeTable rope, int seqLen, int rotaryDim, float* cos, float* sin, float* negSin)
    {
        int half = rotaryDim / 2;
        for (int t = 0; t < seqLen; t++)
        {
            long row = (long)t * half;
            rope.Fill(t, cos + row, sin + row);
            for (int i = 0; i < half; i++)
            {
                negSin[row + i] = -sin[row + i];
            }
        }
    }

    private struct Job
    {
        public float* X;
        public float* Cos;
        public float* Sin;
        public int Rows;
        public int SeqLen;
        public int Heads;
        public int HeadDim;
        public int RotaryDim;
    }

    /// <summary>cos/sin: [seqLen, rotaryDim/2] tables; pass the negated sin table for the backward pass.</summary>
    public static void Apply(float* x, int rows, int seqLen, int heads, int headDim, int rotaryDim, float* cos, float* sin, WorkerPool pool)
    {
        var job = new Job { X = x, Cos = cos, Sin = sin, Rows = rows, SeqLen = seqLen, Heads = heads, HeadDim = headDim, RotaryDim = rotaryDim };
        pool.For(rows, 64, &Run, &job);
    }

    private static void Run(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int half = job.RotaryDim / 2;
        for (int r = start; r < end; r++)
        {
            int pos = r % job.SeqLen;
            Rope.Apply(job.X + ((long)r * job.Heads * job.HeadDim), job.Heads, job.HeadDim, job.RotaryDim,
                job.Cos + ((long)pos * half), job.Sin + ((long)pos * half), RopeStyle.RotateHalf);
        }
    }
}

/// <summary>gate·sigmoid(gate)·up (forward by <see cref="SwiGlu"/>) and its gradient.</summary>
public static unsafe class SwiGluOp
{
    private const int Chunk = 4096;

    private struct Job
    {
        public float* Gate;
        public float* Up;
        public float* Out;
        public float* DOut;
        public float* DGate;
        public float* DUp;
        public long Count;
    }

    public static void Forward(float* gate, float* up, float* output, long count, WorkerPool pool)
    {
        var job = new Job { Gate = gate, Up = up, Out = output, Count = count };
        pool.For(checked((int)((count + Chunk - 1) / Chunk)), 4, &ForwardChunks, &job);
    }

    public static void Backward(float* gate, float* up, float* dOut, float* dGate, float* dUp, long count, WorkerPool pool)
    {
        var job = new Job { Gate = gate, Up = up, DOut = dOut, DGate = dGate, DUp = dUp, Count = count };
        pool.For(checked((int)((count + Chunk - 1) / Chunk)), 4, &BackwardChunks, &job);
    }

    private static void ForwardChunks(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        long i0 = (long)start * Chunk, i1 = Math.Min(job.Count, (long)end * Chunk);
        VectorMath.Copy(job.Gate + i0, job.Out + i0, i1 - i0);
        SwiGlu.Compute(job.Out + i0, job.Up + i0, (int)(i1 - i0));
    }

    private static void BackwardChunks(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        long i = (long)start * Chunk, i1 = Math.Min(job.Count, (long)end * Chunk);
        var one = Vector256.Create(1f);
        for (; i <= i1 - 8; i += 8)
        {
            var g = Vector256.Load(job.Gate + i);
            var u = Vector256.Load(job.Up + i);
            var d = Vector256.Load(job.DOut + i);
            var s = one / (one + Vector256.Exp(-g));
            (d * g * s).Store(job.DUp + i);
            (d * u * s * (one + (g * (one - s)))).Store(job.DGate + i);
        }

        for (; i < i1; i++)
        {
            float g = job.Gate[i], u = job.Up[i], d = job.DOut[i];
            float s = 1f / (1f + MathF.Exp(-g));
            job.DUp[i] = d * g * s;
            job.DGate[i] = d * u * s * (1f + (g * (1f - s)));
        }
    }
}

/// <summary>
/// Softmax cross-entropy over the vocabulary. Fused: computes each row's NLL of its target and, when asked,
/// overwrites the logits with the gradient scale·(softmax − onehot). Rows whose target is negative are ignored
/// (zero loss, zero gradient).
/// </summary>
public static unsafe class CrossEntropyOp
{
    private struct Job
    {
        public float* Logits;
        public int* Targets;
        public float* RowLoss;
        public int Rows;
        public int Vocab;
        public float Scale;
        public bool Gradient;
    }

    /// <summary>Returns Σ NLL over rows with a target (summed in row order); rowLoss is scratch [rows].</summary>
    public static double Compute(float* logits, int* targets, int rows, int vocab, float* rowLoss, bool writeGradient, float scale, WorkerPool pool)
    {
        var job = new Job { Logits = logits, Targets = targets, RowLoss = rowLoss, Rows = rows, Vocab = vocab, Scale = scale, Gradient = writeGradient };
        pool.For(rows, 16, &Run, &job);
        double total = 0;
        for (int r = 0; r < rows; r++)
        {
            total += rowLoss[r];
        }

        return total;
    }

    private static void Run(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int v = job.Vocab;
        for (int r = start; r < end; r++)
        {
            float* row = job.Logits + ((long)r * v);
            int target = job.Targets[r];
            if (target < 0)
            {
                job.RowLoss[r] = 0;
                if (job.Gradient)
                {
                    new Span<float>(row, v).Clear();
                }

                continue;
            }

            float max = float.NegativeInfinity;
            int i = 0;
            if (v >= 8)
            {
                var vmax = Vector256.Create(float.NegativeInfinity);
                for (; i <= v - 8; i += 8)
                {
                    vmax = Vector256.Max(vmax, Vector256.Load(row + i));
                }

                for (int lane = 0; lane < 8; lane++)
                {
                    max = MathF.Max(max, vmax[lane]);
                }
            }

            for (; i < v; i++)
            {
                max = MathF.Max(max, row[i]);
            }

            // Exponentials once, kept in the row; summed in 8 lanes then in double.
            float targetLogit = row[target];
            var vm = Vector256.Create(max);
            var vsum = Vector256<float>.Zero;
            i = 0;
            for (; i <= v - 8; i += 8)
            {
                var e = Vector256.Exp(Vector256.Load(row + i) - vm);
                vsum += e;
                if (job.Gradient)
                {
                    e.Store(row + i);
                }
            }

            double sum = Vector256.Sum(vsum);
            for (; i < v; i++)
            {
                float e = MathF.Exp(row[i] - max);
                sum += e;
                if (job.Gradient)
                {
                    row[i] = e;
                }
            }

            double logSum = Math.Log(sum);
            job.RowLoss[r] = (float)(logSum + max - targetLogit);
            if (job.Gradient)
            {
                VectorMath.Scale(row, (float)(job.Scale / sum), v);
                row[target] -= job.Scale;
            }
        }
    }
}
