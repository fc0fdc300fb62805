namespace Minnow.Kernels;

/// <summary>y = x / sqrt(mean(x²) + eps) · weight.</summary>
public static unsafe class RmsNorm
{
    public static void Compute(float* x, float* weight, float* y, int n, float eps)
    {
        double sumSquares = 0;
        for (int i = 0; i < n; i++)
        {
            sumSquares += x[i] * x[i];
        }

        float scale = 1f / MathF.Sqrt((float)(sumSquares / n) + eps);
        for (int i = 0; i < n; i++)
        {
            y[i] = x[i] * scale * weight[i];
        }
    }
}
