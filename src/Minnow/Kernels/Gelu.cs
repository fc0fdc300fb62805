using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>In-place GELU: exact (erf, GPT-NeoX "gelu") or the tanh approximation (GPT-2 "gelu_new").</summary>
public static unsafe class Gelu
{
    public static void Exact(float* x, int n) => Exact(x, n, KernelIsa.Current);

    public static void Tanh(float* x, int n) => Tanh(x, n, KernelIsa.Current);

    internal static void Exact(float* x, int n, VectorWidth width) => VectorDriver.Map(default(GeluExactOperator), x, x, n, width);

    internal static void Tanh(float* x, int n, VectorWidth width) => VectorDriver.Map(default(GeluTanhOperator), x, x, n, width);

    /// <summary>erf with |error| below 1.2e-7 (Numerical Recipes erfc, Chebyshev fit).</summary>
    internal static double Erf(double x)
    {
        double r = GeluExactOperator.Erfc(Math.Abs(x));
        return x >= 0 ? 1.0 - r : r - 1.0;
    }
}

/// <summary>
/// x · Φ(x) = ½ · x · (1 + erf(x/√2)), in double precision. 1 + erf is formed from erfc(|x|/√2) (Numerical
/// Recipes' Chebyshev fit, relative error below 1.2e-7 everywhere), so the result is accurate relative to its
/// own size even far into the negative tail, where 1 + erf would cancel.
/// </summary>
internal readonly struct GeluExactOperator : IUnaryOperator
{
    private const double InvSqrt2 = 0.70710678118654752440;
    private const double C0 = 0.17087277, C1 = -0.82215223, C2 = 1.48851587, C3 = -1.13520398, C4 = 0.27886807,
        C5 = -0.18628806, C6 = 0.09678418, C7 = 0.37409196, C8 = 1.00002368, C9 = -1.26551223;

    /// <summary>erfc(z) for z ≥ 0.</summary>
    internal static double Erfc(double z)
    {
        double t = 1.0 / (1.0 + (0.5 * z));
        double p = (((((((((C0 * t) + C1) * t) + C2) * t) + C3) * t) + C4) * t) + C5;
        p = (((((p * t) + C6) * t) + C7) * t) + C8;
        p = (p * t) + C9;
        return t * Math.Exp((-z * z) + p);
    }

    public float Invoke(float x)
    {
        double v = x;
        double r = Erfc(Math.Abs(v) * InvSqrt2);
        return (float)(0.5 * v * (v >= 0 ? 2.0 - r : r));
    }

    public Vector128<float> Invoke(Vector128<float> x)
    {
        var (lo, hi) = Vector128.Widen(x);
        return Vector128.Narrow(Invoke(lo), Invoke(hi));
    }

    public Vector256<float> Invoke(Vector256<float> x)
    {
        var (lo, hi) = Vector256.Widen(x);
        return Vector256.Narrow(Invoke(lo), Invoke(hi));
    }

    public Vector512<float> Invoke(Vector512<float> x)
    {
        var (lo, hi) = Vector512.Widen(x);
        return Vector512.Narrow(Invoke(lo), Invoke(hi));
    }

    private static Vector128<double> Invoke(Vector128<double> v)
    {
        var z = Vector128.Abs(v) * Vector128.Create(InvSqrt2);
        var t = Vector128<double>.One / (Vector128<double>.One + (Vector128.Create(0.5) * z));
        var p = (((((((((Vector128.Create(C0) * t) + Vector128.Create(C1)) * t) + Vector128.Create(C2)) * t)
            + Vector128.Create(C3)) * t) + Vector128.Create(C4)) * t) + Vector128.Create(C5);
        p = (((((p * t) + Vector128.Create(C6)) * t) + Vector128.Create(C7)) * t) + Vector128.Create(C8);
        p = (p * t) + Vector128.Create(C9);
        var r = t * Vector128.Exp((-z * z) + p);
        var onePlusErf = Vector128.ConditionalSelect(Vector128.GreaterThanOrEqual(v, Vector128<double>.Zero), Vector128.Create(2.0) - r, r);
        return Vector128.Create(0.5) * v * onePlusErf;
    }

    private static Vector256<double> Invoke(Vector256<double> v)
    {
        var z = Vector256.Abs(v) * Vector256.Create(InvSqrt2);
        var t = Vector256<double>.One / (Vector256<double>.One + (Vector256.Create(0.5) * z));
        var p = (((((((((Vector256.Create(C0) * t) + Vector256.Create(C1)) * t) + Vector256.Create(C2)) * t)
            + Vector256.Create(C3)) * t) + Vector256.Create(C4)) * t) + Vector256.Create(C5);
        p = (((((p * t) + Vector256.Create(C6)) * t) + Vector256.Create(C7)) * t) + Vector256.Create(C8);
        p = (p * t) + Vector256.Create(C9);
        var r = t * Vector256.Exp((-z * z) + p);
        var onePlusErf = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(v, Vector256<double>.Zero), Vector256.Create(2.0) - r, r);
        return Vector256.Create(0.5) * v * onePlusErf;
    }

    private static Vector512<double> Invoke(Vector512<double> v)
    {
        var z = Vector512.Abs(v) * Vector512.Create(InvSqrt2);
        var t = Vector512<double>.One / (Vector512<double>.One + (Vector512.Create(0.5) * z));
        var p = (((((((((Vector512.Create(C0) * t) + Vector512.Create(C1)) * t) + Vector512.Create(C2)) * t)
            + Vector512.Create(C3)) * t) + Vector512.Create(C4)) * t) + Vector512.Create(C5);
        p = (((((p * t) + Vector512.Create(C6)) * t) + Vector512.Create(C7)) * t) + Vector512.Create(C8);
        p = (p * t) + Vector512.Create(C9);
        var r = t * Vector512.Exp((-z * z) + p);
        var onePlusErf = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(v, Vector512<double>.Zero), Vector512.Create(2.0) - r, r);
        return Vector512.Create(0.5) * v * onePlusErf;
    }
}

/// <summary>
/// ½ · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))), evaluated as x / (1 + e^(−2u)), the same function without
/// the cancellation of 1 + tanh(u) for negative u.
/// </summary>
internal readonly struct GeluTanhOperator : IUnaryOperator
{
    private const float C = 0.7978845608028654f; // sqrt(2/pi)
    private const float A = 0.044715f;

    public float Invoke(float x)
    {
        float u = C * (x + (A * x * x * x));
        return x / (1f + MathF.Exp(-2f * u));
    }

    public Vector128<float> Invoke(Vector128<float> x)
    {
        var u = Vector128.Create(C) * (x + (Vector128.Create(A) * x * x * x));
        return x / (Vector128<float>.One + Vector128.Exp(Vector128.Create(-2f) * u));
    }

    public Vector256<float> Invoke(Vector256<float> x)
    {
        var u = Vector256.Create(C) * (x + (Vector256.Create(A) * x * x * x));
        return x / (Vector256<float>.One + Vector256.Exp(Vector256.Create(-2f) * u));
    }

    public Vector512<float> Invoke(Vector512<float> x)
    {
        var u = Vector512.Create(C) * (x + (Vector512.Create(A) * x * x * x));
        return x / (Vector512<float>.One + Vector512.Exp(Vector512.Create(-2f) * u));
    }
}
