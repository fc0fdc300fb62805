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
