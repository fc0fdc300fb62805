namespace Minnow.Kernels;

/// <summary>y = (x − mean) / sqrt(var + eps) · weight + bias.</summary>
public static unsafe class LayerNorm
{
    public static void Compute(float* x, float* weight, float* bias, float* y, int n, float eps)
    {
        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            sum += x[i];
        }

        float mean = (float)(sum / n);
        double sumSquares = 0;
        for (int i = 0; i < n; i++)
        {
            float d = x[i] - mean;
            sumSquares += d * d;
        }

        float scale = 1f / MathF.Sqrt((float)(sumSquares / n) + eps);
        for (int i = 0; i < n; i++)
        {
            y[i] = ((x[i] - mean) * scale * weight[i]) + bias[i];
        }
    }
}
