namespace Minnow.Kernels;

/// <summary>x[i] += y[i] (residual connections).</summary>
public static unsafe class Add
{
    public static void Compute(float* x, float* y, int n)
    {
        for (int i = 0; i < n; i++)
        {
            x[i] += y[i];
        }
    }
}
