namespace Minnow.Quantization;

/// <summary>
/// SmoothQuant (Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
/// Models", 2023): moves the quantization difficulty of activation outliers into the weights with a per input
/// channel scale s_j = max|x_j|^α / max|W_:,j|^(1−α) (max over every row of every layer reading the input). The
/// layers' weights become W·diag(s) and the input x/s, which the norm producing x yields exactly when its weight
/// (and bias) are divided by s, so the model computes the same function before rounding.
/// </summary>
public static class SmoothQuant
{
    /// <summary>Bounds on s_j, so a dead channel (max|x| or max|W| zero) cannot blow up the other side.</summary>
    private const double MinScale = 1e-5, MaxScale = 1e5;

    /// <summary>The migration scales of one input group (1 where a channel's activation or weight range is zero).</summary>
    public static float[] Scales(double[] activationMaxAbs, IReadOnlyList<(float[] Weights, int Rows)> members, double alpha)
    {
        int n = activationMaxAbs.Length;
        if (alpha is < 0 or > 1 || !double.IsFinite(alpha))
        {
            throw new ArgumentOutOfRangeException(nameof(alpha), $"the SmoothQuant α must be between 0 and 1 (got {alpha}).");
        }

        var weightMaxAbs = new double[n];
        foreach (var (weights, rows) in members)
        {
            if (weights.Length != (long)rows * n)
            {
                throw new ArgumentException($"a member has {weights.Length} weights, {rows}×{n} expected.", nameof(members));
            }

            for (int r = 0; r < rows; r++)
            {
                var row = weights.AsSpan(r * n, n);
                for (int j = 0; j < n; j++)
                {
                    weightMaxAbs[j] = Math.Max(weightMaxAbs[j], Math.Abs(row[j]));
                }
            }
        }

        var s = new float[n];
        for (int j = 0; j < n; j++)
        {
            double x = activationMaxAbs[j], w = weightMaxAbs[j];
            s[j] = alpha == 0 || !(x > 0) || !(w > 0) ? 1f : (float)Math.Clamp(Math.Pow(x, alpha) / Math.Pow(w, 1 - alpha), MinScale, MaxScale);
        }

        return s;
    }
}
