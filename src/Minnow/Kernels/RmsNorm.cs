using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>y = x / sqrt(mean(x²) + eps) · weight. The sum of squares is exact per term and accumulated in double.</summary>
public static unsafe class RmsNorm
{
    public static void Compute(float* x, float* weight, float* y, int n, float eps) =>
        Compute(x, weight, y, n, eps, KernelIsa.Current);

    internal static void Compute(float* x, float* weight, float* y, int n, float eps, VectorWidth width)
    {
        double sumSquares = VectorDriver.SumSquaresDouble(default(IdentityOperator), x, n, width);
        float scale = 1f / MathF.Sqrt((float)(sumSquares / n) + eps);
        VectorDriver.Map(new RmsNormOperator(scale), x, weight, y, n, width);
    }
}

/// <summary>(x · scale) · weight, rounded in that order as Hugging Face's LlamaRMSNorm.</summary>
internal readonly struct RmsNormOperator(float scale) : IBinaryOperator
{
    private readonly float _scale = scale;

    public float Invoke(float x, float w) => x * _scale * w;

    public Vector128<float> Invoke(Vector128<float> x, Vector128<float> w) => x * Vector128.Create(_scale) * w;

    public Vector256<float> Invoke(Vector256<float> x, Vector256<float> w) => x * Vector256.Create(_scale) * w;

    public Vector512<float> Invoke(Vector512<float> x, Vector512<float> w) => x * Vector512.Create(_scale) * w;
}
