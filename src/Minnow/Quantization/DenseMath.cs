using System.Numerics;
using System.Runtime.InteropServices;

namespace Minnow.Quantization;

/// <summary>Small dense linear algebra in float64 on row-major n×n arrays (Cholesky, inverse, dot products).</summary>
public static class DenseMath
{
    public static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        int n = a.Length, i = 0;
        var acc = Vector<double>.Zero;
        if (Vector.IsHardwareAccelerated)
        {
            var va = MemoryMarshal.Cast<double, Vector<double>>(a);
            var vb = MemoryMarshal.Cast<double, Vector<double>>(b[..n]);
            for (int v = 0; v < va.Length; v++)
            {
                acc += va[v] * vb[v];
            }

            i = va.Length * Vector<double>.Count;
        }

        double sum = Vector.Sum(acc);
        for (; i < n; i++)
        {
            sum += a[i] * b[i];
        }

        return sum;
    }

    /// <summary>y -= a · x (element-wise over the span).</summary>
    public static void SubtractScaled(Span<double> y, double a, ReadOnlySpan<double> x)
    {
        int n = y.Length, i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var vy = MemoryMarshal.Cast<double, Vector<double>>(y);
            var vx = MemoryMarshal.Cast<double, Vector<double>>(x[..n]);
            var va = new Vector<double>(a);
            for (int v = 0; v < vy.Length; v++)
            {
                vy[v] -= va * vx[v];
            }

            i = vy.Length * Vector<double>.Count;
        }

        for (; i < n; i++)
        {
            y[i] -= a * x[i];
        }
    }

    /// <summary>
    /// In place: the lower Cholesky factor L of a symmetric positive-definite <paramref name="a"/> (L·Lᵀ = A; the
    /// upper triangle is zeroed). False when A is not positive definite (A is then left partly overwritten).
    /// </summary>
    public static bool CholeskyLower(double[] a, int n)
    {
        for (int i = 0; i < n; i++)
        {
            var rowI = a.AsSpan(i * n, n);
            for (int j = 0; j <= i; j++)
            {
                var rowJ = a.AsSpan(j * n, n);
                double s = rowI[j] - Dot(rowI[..j], rowJ[..j]);
                if (i == j)
                {
                    if (!(s > 0) || !double.IsFinite(s))
                    {
                        return false;
                    }

                    rowI[i] = Math.Sqrt(s);
                }
                else
                {
                    rowI[j] = s / rowJ[j];
                }
            }

            rowI[(i + 1)..].Clear();
        }

        return true;
    }

    /// <summary>The inverse of A = L·Lᵀ given its lower Cholesky factor (a new symmetric n×n array).</summary>
    public static double[] InverseFromCholesky(double[] lower, int n)
    {
        // Lᵀ row-major, so the back substitution reads rows.
        var upper = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j <= i; j++)
            {
                upper[(j * n) + i] = lower[(i * n) + j];
            }
        }

        var inverse = new double[n * n];
        Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, () => new double[n], (c, _, y) =>
        {
            // L y = e_c (y is zero above c), then Lᵀ x = y.
            Array.Clear(y);
            for (int i = c; i < n; i++)
            {
                double b = i == c ? 1 : 0;
                y[i] = (b - Dot(lower.AsSpan((i * n) + c, i - c), y.AsSpan(c, i - c))) / lower[(i * n) + i];
            }

            for (int i = n - 1; i >= 0; i--)
            {
                double s = y[i] - Dot(upper.AsSpan((i * n) + i + 1, n - i - 1), y.AsSpan(i + 1, n - i - 1));
                y[i] = s / upper[(i * n) + i];
            }

            for (int i = 0; i < n; i++)
            {
                inverse[(i * n) + c] = y[i];
            }

            return y;
        }, _ => { });

        // Symmetrise away rounding differences.
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < i; j++)
            {
                double m = 0.5 * (inverse[(i * n) + j] + inverse[(j * n) + i]);
                inverse[(i * n) + j] = m;
                inverse[(j * n) + i] = m;
            }
        }

        return inverse;
    }

    /// <summary>In place: the transpose of a square row-major matrix.</summary>
    public static void TransposeInPlace(double[] a, int n)
    {
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < i; j++)
            {
                (a[(i * n) + j], a[(j * n) + i]) = (a[(j * n) + i], a[(i * n) + j]);
            }
        }
    }
}
