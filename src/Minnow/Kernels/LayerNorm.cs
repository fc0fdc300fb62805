using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>
/// y = (x − mean) / sqrt(var + eps) · weight + bias. Mean and variance are accumulated in double; y may alias x.
/// </summary>
public static unsafe class LayerNorm
{
    public static void Compute(float* x, float* weight, float* bias, float* y, int n, float eps) =>
        Compute(x, weight, bias, y, n, eps, KernelIsa.Current);

    internal static void Compute(float* x, float* weight, float* bias, float* y, int n, float eps, VectorWidth width)
    {
        float mean = (float)(VectorDriver.SumDouble(x, n, width) / n);
        double sumSquares = VectorDriver.SumSquaresDouble(new SubtractScalarOperator(mean), x, n, width);
        float scale = 1f / MathF.Sqrt((float)(sumSquares / n) + eps);
        VectorDriver.Map(new LayerNormOperator(mean, scale), x, weight, bias, y, n, width);
    }
}

/// <summary>((x − mean) · scale · weight) + bias, each step rounded as the scalar body (no fused multiply-add).</summary>
internal readonly struct LayerNormOperator(float mean, float scale) : ITernaryOperator
{
    private readonly float _mean = mean;
    private readonly float _scale = scale;

    public float Invoke(float x, float w, float b) => ((x - _mean) * _scale * w) + b;

    public Vector128<float> Invoke(Vector128<float> x, Vector128<float> w, Vector128<float> b) =>
        ((x - Vector128.Create(_mean)) * Vector128.Create(_scale) * w) + b;

    public Vector256<float> Invoke(Vector256<float> x, Vector256<float> w, Vector256<float> b) =>
        ((x - Vector256.Create(_mean)) * Vector256.Create(_scale) * w) + b;

    public Vector512<float> Invoke(Vector512<float> x, Vector512<float> w, Vector512<float> b) =>
        ((x - Vector512.Create(_mean)) * Vector512.Create(_scale) * w) + b;
}
