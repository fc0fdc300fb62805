namespace Minnow.Kernels;

/// <summary>In-place GELU: exact (erf, GPT-NeoX "gelu") or the tanh approximation (GPT-2 "gelu_new").</summary>
public static unsafe class Gelu
{
    public static void Exact(float* x, int n)
    {
        for (int i = 0; i < n; i++)
        {
            double v = x[i];
            x[i] = (float)(0.5 * v * (1.0 + Erf(v / Math.Sqrt(2.0))));
        }
    }

    public static void Tanh(float* x, int n)
    {
        const float c = 0.7978845608028654f; // sqrt(2/pi)
        for (int i = 0; i < n; i++)
        {
            float v = x[i];
            x[i] = 0.5f * v * (1f + MathF.Tanh(c * (v + (0.044715f * v * v * v))));
        }
    }

    /// <summary>erf with |error| below 1.2e-7 (Numerical Recipes erfc, Chebyshev fit).</summary>
    internal static double Erf(double x)
    {
        double z = Math.Abs(x);
        double t = 1.0 / (1.0 + (0.5 * z));
        double poly = 0.17087277;
        foreach (double c in ErfCoefficients)
        {
            poly = (poly * t) + c;
        }

        double r = t * Math.Exp((-z * z) + poly);
        return x >= 0 ? 1.0 - r : r - 1.0;
    }

    private static ReadOnlySpan<double> ErfCoefficients =>
        [-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368, -1.26551223];
}
