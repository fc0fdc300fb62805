namespace Minnow.Kernels;

/// <summary>In-place softmax over n values.</summary>
public static unsafe class Softmax
{
    public static void Compute(float* x, int n)
    {
        float max = float.NegativeInfinity;
        for (int i = 0; i < n; i++)
        {
            max = MathF.Max(max, x[i]);
        }

        float sum = 0;
        for (int i = 0; i < n; i++)
        {
            x[i] = MathF.Exp(x[i] - max);
            sum += x[i];
        }

        float inv = 1f / sum;
        for (int i = 0; i < n; i++)
        {
            x[i] *= inv;
        }
    }
}
