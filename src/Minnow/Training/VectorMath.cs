using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Minnow.Training;

/// <summary>Small vectorised helpers over float32 spans (fixed summation order, so deterministic).</summary>
internal static unsafe class VectorMath
{
    /// <summary>Σ x[i]·y[i], accumulated in 8 lanes then reduced in a fixed order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(float* x, float* y, int n)
    {
        int i = 0;
        float sum = 0;
        if (n >= 8)
        {
            var acc = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8)
            {
                acc = Vector256.MultiplyAddEstimate(Vector256.Load(x + i), Vector256.Load(y + i), acc);
            }

            sum = Vector256.Sum(acc);
        }

        for (; i < n; i++)
        {
            sum += x[i] * y[i];
        }

        return sum;
    }

    /// <summary>Four dot products of x with y0..y3 at once (independent accumulators hide the FMA latency).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Dot4(float* x, float* y0, float* y1, float* y2, float* y3, int n, float* result)
    {
        int i = 0;
        var a0 = Vector256<float>.Zero;
        var a1 = Vector256<float>.Zero;
        var a2 = Vector256<float>.Zero;
        var a3 = Vector256<float>.Zero;
        for (; i <= n - 8; i += 8)
        {
            var xv = Vector256.Load(x + i);
            a0 = Vector256.MultiplyAddEstimate(xv, Vector256.Load(y0 + i), a0);
            a1 = Vector256.MultiplyAddEstimate(xv, Vector256.Load(y1 + i), a1);
            a2 = Vector256.MultiplyAddEstimate(xv, Vector256.Load(y2 + i), a2);
            a3 = Vector256.MultiplyAddEstimate(xv, Vector256.Load(y3 + i), a3);
        }

        float s0 = Vector256.Sum(a0), s1 = Vector256.Sum(a1), s2 = Vector256.Sum(a2), s3 = Vector256.Sum(a3);
        for (; i < n; i++)
        {
            s0 += x[i] * y0[i];
            s1 += x[i] * y1[i];
            s2 += x[i] * y2[i];
            s3 += x[i] * y3[i];
        }

        result[0] = s0;
        result[1] = s1;
        result[2] = s2;
        result[3] = s3;
    }

    /// <summary>
    /// output[j] = Σ_r weights[r]·rows[r·stride + j] for j &lt; n, accumulated in registers 32 columns at a time
    /// (rows summed in order).
    /// </summary>
    public static void WeightedRowSum(float* weights, int count, float* rows, long stride, float* output, int n)
    {
        int j = 0;
        for (; j <= n - 32; j += 32)
        {
            var o0 = Vector256<float>.Zero;
            var o1 = Vector256<float>.Zero;
            var o2 = Vector256<float>.Zero;
            var o3 = Vector256<float>.Zero;
            float* row = rows + j;
            for (int r = 0; r < count; r++, row += stride)
            {
                var w = Vector256.Create(weights[r]);
                o0 = Vector256.MultiplyAddEstimate(w, Vector256.Load(row), o0);
                o1 = Vector256.MultiplyAddEstimate(w, Vector256.Load(row + 8), o1);
                o2 = Vector256.MultiplyAddEstimate(w, Vector256.Load(row + 16), o2);
                o3 = Vector256.MultiplyAddEstimate(w, Vector256.Load(row + 24), o3);
            }

            o0.Store(output + j);
            o1.Store(output + j + 8);
            o2.Store(output + j + 16);
            o3.Store(output + j + 24);
        }

        for (; j < n; j++)
        {
            float sum = 0;
            for (int r = 0; r < count; r++)
            {
                sum += weights[r] * rows[(r * stride) + j];
            }

            output[j] = sum;
        }
    }

    /// <summary>y[i] += a·x[i].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Axpy(float a, float* x, float* y, int n)
    {
        int i = 0;
        var va = Vector256.Create(a);
        for (; i <= n - 8; i += 8)
        {
            Vector256.MultiplyAddEstimate(va, Vector256.Load(x + i), Vector256.Load(y + i)).Store(y + i);
        }

        for (; i < n; i++)
        {
            y[i] += a * x[i];
        }
    }

    /// <summary>y[i] += x[i].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Add(float* x, float* y, int n)
    {
        int i = 0;
        for (; i <= n - 8; i += 8)
        {
            (Vector256.Load(x + i) + Vector256.Load(y + i)).Store(y + i);
        }

        for (; i < n; i++)
        {
            y[i] += x[i];
        }
    }

    /// <summary>x[i] *= a.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Scale(float* x, float a, int n)
    {
        int i = 0;
        var va = Vector256.Create(a);
        for (; i <= n - 8; i += 8)
        {
            (Vector256.Load(x + i) * va).Store(x + i);
        }

        for (; i < n; i++)
        {
            x[i] *= a;
        }
    }

    /// <summary>Σ x[i]² in double (for norms).</summary>
    public static double SumSquares(float* x, long n)
    {
        double total = 0;
        long i = 0;
        for (; i <= n - 8; i += 8)
        {
            var v = Vector256.Load(x + i);
            total += Vector256.Sum(v * v);
        }

        for (; i < n; i++)
        {
            total += x[i] * x[i];
        }

        return total;
    }

    public static void Copy(float* source, float* destination, long n) =>
        Buffer.MemoryCopy(source, destination, n * sizeof(float), n * sizeof(float));
}
