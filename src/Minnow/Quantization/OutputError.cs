using Minnow.Kernels;
using Minnow.Tensors;

namespace Minnow.Quantization;

/// <summary>
/// ‖ΔW·X‖² over calibration data without keeping X: Σ_rows Δw·H·Δwᵀ with H = XᵀX (any positive multiple of it
/// gives the same relative errors). The quadratic form runs on the float32 matrix kernels.
/// </summary>
public sealed unsafe class OutputError : IDisposable
{
    private readonly NativeBuffer _hessian;
    private readonly Tensor _tensor;

    public OutputError(double[] hessian, int width)
    {
        Width = width;
        _hessian = NativeBuffer.Floats((long)width * width);
        var h = _hessian.AsFloatSpan();
        for (int i = 0; i < h.Length; i++)
        {
            h[i] = (float)hessian[i];
        }

        _tensor = new Tensor("hessian", DType.F32, [width, width], _hessian.Pointer, _hessian);
    }

    public int Width { get; }

    /// <summary>Σ_r m_r·H·m_rᵀ for a [rows, width] matrix m.</summary>
    public double Quadratic(ReadOnlySpan<float> matrix, int rows, WorkerPool? pool = null)
    {
        int n = Width;
        if (matrix.Length != (long)rows * n)
        {
            throw new ArgumentException($"{matrix.Length} values for {rows}×{n}.", nameof(matrix));
        }

        if ((long)rows * n * n < (1L << 22))
        {
            // Small: directly, on this thread (waking the pool would cost more than the work).
            var h = _hessian.AsFloatSpan();
            double total = 0;
            for (int r = 0; r < rows; r++)
            {
                var m = matrix.Slice(r * n, n);
                for (int o = 0; o < n; o++)
                {
                    if (m[o] != 0)
                    {
                        total += (double)m[o] * Dot(h.Slice(o * n, n), m);
                    }
                }
            }

            return Math.Max(0, total);
        }

        var product = new float[(long)rows * n];
        fixed (float* m = matrix)
        fixed (float* y = product)
        {
            // y = m·Hᵀ = m·H (H is symmetric).
            MatMul.Compute(_tensor, m, rows, y, null, pool);
        }

        double sum = 0;
        for (long i = 0; i < product.Length; i++)
        {
            sum += (double)product[i] * matrix[(int)i];
        }

        return Math.Max(0, sum);
    }

    private static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int i = 0;
        var acc = System.Numerics.Vector<float>.Zero;
        int step = System.Numerics.Vector<float>.Count;
        for (; i <= a.Length - step; i += step)
        {
            acc += new System.Numerics.Vector<float>(a.Slice(i, step)) * new System.Numerics.Vector<float>(b.Slice(i, step));
        }

        float sum = System.Numerics.Vector.Sum(acc);
        for (; i < a.Length; i++)
        {
            sum += a[i] * b[i];
        }

        return sum;
    }

    /// <summary>‖(W − Ŵ)X‖ / ‖WX‖.</summary>
    public double Relative(ReadOnlySpan<float> original, ReadOnlySpan<float> approximation, int rows)
    {
        var delta = new float[original.Length];
        for (int i = 0; i < delta.Length; i++)
        {
            delta[i] = original[i] - approximation[i];
        }

        double reference = Quadratic(original, rows);
        return reference > 0 ? Math.Sqrt(Quadratic(delta, rows) / reference) : 0;
    }

    public void Dispose() => _hessian.Dispose();
}
