using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// GPT-2's Conv1D: y = x·W + b with W stored [in, out] (the transpose of <see cref="LinearOp"/>'s [out, in]), so
/// checkpoints train in their own layout. Backward dx = dy·Wᵀ, dW += xᵀ·dy, db += Σ dy.
/// </summary>
public static unsafe class Conv1DOp
{
    public static void Forward(float* x, int rows, int inDim, float* weight, int outDim, float* bias, float* y, WorkerPool pool)
    {
        Gemm.Multiply(rows, outDim, inDim, x, inDim, false, weight, outDim, false, y, outDim, false, pool);
        if (bias != null)
        {
            BiasRows.Add(y, bias, rows, outDim, pool);
        }
    }

    /// <summary>
    /// dx = dy·Wᵀ (or dx += when <paramref name="accumulateDx"/>; skipped when dx is null), dW += xᵀ·dy (when dW
    /// is not null), db += column sums of dy (when db is not null).
    /// </summary>
    public static void Backward(float* x, float* dy, int rows, int inDim, float* weight, int outDim,
        float* dx, bool accumulateDx, float* dWeight, float* dBias, WorkerPool pool)
    {
        if (dWeight != null)
        {
            Gemm.Multiply(inDim, outDim, rows, x, inDim, true, dy, outDim, false, dWeight, outDim, true, pool);
        }

        if (dx != null)
        {
            Gemm.Multiply(rows, inDim, outDim, dy, outDim, false, weight, outDim, true, dx, inDim, accumulateDx, pool);
        }

        if (dBias != null)
        {
            ColumnSums.Accumulate(dy, rows, outDim, dBias, pool);
        }
    }
}
