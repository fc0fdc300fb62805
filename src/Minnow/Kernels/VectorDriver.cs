using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>
/// Runs element-wise operators over buffers. Every driver takes the widest vector body <c>width</c> allows, then
/// finishes the tail with the next narrower bodies (a 512-bit pass leaves at most one 256-bit step, one 128-bit
/// step and three scalar elements), so any length works and in-place use (destination = source) is safe: every
/// element is read before it is written, exactly once.
/// </summary>
internal static unsafe class VectorDriver
{
    /// <summary>d[i] = op(x[i]).</summary>
    public static void Map<TOp>(TOp op, float* x, float* d, int n, VectorWidth width)
        where TOp : struct, IUnaryOperator
    {
        int i = 0;
        if (width >= VectorWidth.V512)
        {
            for (; i <= n - Vector512<float>.Count; i += Vector512<float>.Count)
            {
                op.Invoke(Vector512.Load(x + i)).Store(d + i);
            }
        }

        if (width >= VectorWidth.V256)
        {
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                op.Invoke(Vector256.Load(x + i)).Store(d + i);
            }
        }

        if (width >= VectorWidth.V128)
        {
            for (; i <= n - Vector128<float>.Count; i += Vector128<float>.Count)
            {
                op.Invoke(Vector128.Load(x + i)).Store(d + i);
            }
        }

        for (; i < n; i++)
        {
            d[i] = op.Invoke(x[i]);
        }
    }

    /// <summary>d[i] = op(x[i], y[i]).</summary>
    public static void Map<TOp>(TOp op, float* x, float* y, float* d, int n, VectorWidth width)
        where TOp : struct, IBinaryOperator
    {
        int i = 0;
        if (width >= VectorWidth.V512)
        {
            for (; i <= n - Vector512<float>.Count; i += Vector512<float>.Count)
            {
                op.Invoke(Vector512.Load(x + i), Vector512.Load(y + i)).Store(d + i);
            }
        }

        if (width >= VectorWidth.V256)
        {
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                op.Invoke(Vector256.Load(x + i), Vector256.Load(y + i)).Store(d + i);
            }
        }

        if (width >= VectorWidth.V128)
        {
            for (; i <= n - Vector128<float>.Count; i += Vector128<float>.Count)
            {
                op.Invoke(Vector128.Load(x + i), Vector128.Load(y + i)).Store(d + i);
            }
        }

        for (; i < n; i++)
        {
            d[i] = op.Invoke(x[i], y[i]);
        }
    }

    /// <summary>d[i] = op(x[i], y[i], z[i]).</summary>
    public static void Map<TOp>(TOp op, float* x, float* y, float* z, float* d, int n, VectorWidth width)
        where TOp : struct, ITernaryOperator
    {
        int i = 0;
        if (width >= VectorWidth.V512)
        {
            for (; i <= n - Vector512<float>.Count; i += Vector512<float>.Count)
            {
                op.Invoke(Vector512.Load(x + i), Vector512.Load(y + i), Vector512.Load(z + i)).Store(d + i);
            }
        }

        if (width >= VectorWidth.V256)
        {
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                op.Invoke(Vector256.Load(x + i), Vector256.Load(y + i), Vector256.Load(z + i)).Store(d + i);
            }
        }

        if (width >= VectorWidth.V128)
        {
            for (; i <= n - Vector128<float>.Count; i += Vector128<float>.Count)
            {
                op.Invoke(Vector128.Load(x + i), Vector128.Load(y + i), Vector128.Load(z + i)).Store(d + i);
            }
        }

        for (; i < n; i++)
        {
            d[i] = op.Invoke(x[i], y[i], z[i]);
        }
    }

    /// <summary>Aggregates f(x[i]) over the buffer (e.g. the maximum).</summary>
    public static float Aggregate<TTransform, TAggregate>(TTransform f, TAggregate a, float* x, int n, VectorWidth width)
        where TTransform : struct, IUnaryOperator
        where TAggregate : struct, IAggregationOperator
    {
        float result = a.Identity;
        int i = 0;
        if (width >= VectorWidth.V512 && n >= Vector512<float>.Count)
        {
            var acc = Vector512.Create(a.Identity);
            for (; i <= n - Vector512<float>.Count; i += Vector512<float>.Count)
            {
                acc = a.Invoke(acc, f.Invoke(Vector512.Load(x + i)));
            }

            result = a.Invoke(result, a.Reduce(acc));
        }

        if (width >= VectorWidth.V256 && n - i >= Vector256<float>.Count)
        {
            var acc = Vector256.Create(a.Identity);
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                acc = a.Invoke(acc, f.Invoke(Vector256.Load(x + i)));
            }

            result = a.Invoke(result, a.Reduce(acc));
        }

        if (width >= VectorWidth.V128 && n - i >= Vector128<float>.Count)
        {
            var acc = Vector128.Create(a.Identity);
            for (; i <= n - Vector128<float>.Count; i += Vector128<float>.Count)
            {
                acc = a.Invoke(acc, f.Invoke(Vector128.Load(x + i)));
            }

            result = a.Invoke(result, a.Reduce(acc));
        }

        for (; i < n; i++)
        {
            result = a.Invoke(result, f.Invoke(x[i]));
        }

        return result;
    }

    /// <summary>d[i] = f(x[i]) and returns the aggregate of the d[i] (e.g. exponentials and their sum).</summary>
    public static float MapAggregate<TTransform, TAggregate>(TTransform f, TAggregate a, float* x, float* d, int n, VectorWidth width)
        where TTransform : struct, IUnaryOperator
        where TAggregate : struct, IAggregationOperator
    {
        float result = a.Identity;
        int i = 0;
        if (width >= VectorWidth.V512 && n >= Vector512<float>.Count)
        {
            var acc = Vector512.Create(a.Identity);
            for (; i <= n - Vector512<float>.Count; i += Vector512<float>.Count)
            {
                var v = f.Invoke(Vector512.Load(x + i));
                v.Store(d + i);
                acc = a.Invoke(acc, v);
            }

            result = a.Invoke(result, a.Reduce(acc));
        }

        if (width >= VectorWidth.V256 && n - i >= Vector256<float>.Count)
        {
            var acc = Vector256.Create(a.Identity);
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var v = f.Invoke(Vector256.Load(x + i));
                v.Store(d + i);
                acc = a.Invoke(acc, v);
            }

            result = a.Invoke(result, a.Reduce(acc));
        }

        if (width >= VectorWidth.V128 && n - i >= Vector128<float>.Count)
        {
            var acc = Vector128.Create(a.Identity);
            for (; i <= n - Vector128<float>.Count; i += Vector128<float>.Count)
            {
                var v = f.Invoke(Vector128.Load(x + i));
                v.Store(d + i);
                acc = a.Invoke(acc, v);
            }

            result = a.Invoke(result, a.Reduce(acc));
        }

        for (; i < n; i++)
        {
            float v = f.Invoke(x[i]);
            d[i] = v;
            result = a.Invoke(result, v);
        }

        return result;
    }

    /// <summary>Σ x[i] accumulated in double precision.</summary>
    public static double SumDouble(float* x, int n, VectorWidth width)
    {
        double total = 0;
        int i = 0;
        if (width >= VectorWidth.V512 && n >= Vector512<float>.Count)
        {
            Vector512<double> a0 = default, a1 = default;
            for (; i <= n - Vector512<float>.Count; i += Vector512<float>.Count)
            {
                var (lo, hi) = Vector512.Widen(Vector512.Load(x + i));
                a0 += lo;
                a1 += hi;
            }

            total += Vector512.Sum(a0 + a1);
        }

        if (width >= VectorWidth.V256 && n - i >= Vector256<float>.Count)
        {
            Vector256<double> a0 = default, a1 = default;
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(x + i));
                a0 += lo;
                a1 += hi;
            }

            total += Vector256.Sum(a0 + a1);
        }

        if (width >= VectorWidth.V128 && n - i >= Vector128<float>.Count)
        {
            Vector128<double> a0 = default, a1 = default;
            for (; i <= n - Vector128<float>.Count; i += Vector128<float>.Count)
            {
                var (lo, hi) = Vector128.Widen(Vector128.Load(x + i));
                a0 += lo;
                a1 += hi;
            }

            total += Vector128.Sum(a0 + a1);
        }

        for (; i < n; i++)
        {
            total += x[i];
        }

        return total;
    }

    /// <summary>Σ f(x[i])² with f computed in float, squared exactly and accumulated in double precision.</summary>
    public static double SumSquaresDouble<TTransform>(TTransform f, float* x, int n, VectorWidth width)
        where TTransform : struct, IUnaryOperator
    {
        double total = 0;
        int i = 0;
        if (width >= VectorWidth.V512 && n >= Vector512<float>.Count)
        {
            Vector512<double> a0 = default, a1 = default;
            for (; i <= n - Vector512<float>.Count; i += Vector512<float>.Count)
            {
                var (lo, hi) = Vector512.Widen(f.Invoke(Vector512.Load(x + i)));
                a0 = Vector512.FusedMultiplyAdd(lo, lo, a0);
                a1 = Vector512.FusedMultiplyAdd(hi, hi, a1);
            }

            total += Vector512.Sum(a0 + a1);
        }

        if (width >= VectorWidth.V256 && n - i >= Vector256<float>.Count)
        {
            Vector256<double> a0 = default, a1 = default;
            for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var (lo, hi) = Vector256.Widen(f.Invoke(Vector256.Load(x + i)));
                a0 = Vector256.FusedMultiplyAdd(lo, lo, a0);
                a1 = Vector256.FusedMultiplyAdd(hi, hi, a1);
            }

            total += Vector256.Sum(a0 + a1);
        }

        if (width >= VectorWidth.V128 && n - i >= Vector128<float>.Count)
        {
            Vector128<double> a0 = default, a1 = default;
            for (; i <= n - Vector128<float>.Count; i += Vector128<float>.Count)
            {
                var (lo, hi) = Vector128.Widen(f.Invoke(Vector128.Load(x + i)));
                a0 = Vector128.FusedMultiplyAdd(lo, lo, a0);
                a1 = Vector128.FusedMultiplyAdd(hi, hi, a1);
            }

            total += Vector128.Sum(a0 + a1);
        }

        for (; i < n; i++)
        {
            double v = f.Invoke(x[i]);
            total += v * v;
        }

        return total;
    }
}
