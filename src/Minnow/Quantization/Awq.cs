using Minnow.Tensors;

namespace Minnow.Quantization;

/// <summary>The scale AWQ chose for one input group.</summary>
public sealed record AwqGroupScale(string Group, double Alpha, float[] Scales, double Error, double RoundToNearestError);

/// <summary>
/// AWQ-style activation-aware scaling (Lin et al., "AWQ: Activation-aware Weight Quantization", 2023): for the
/// layers that read one input, scale input channel j by s_j = mean|x_j|^α (normalised so that max·min = 1),
/// quantize W·diag(s) to nearest, and keep the α in a grid over [0, 1] whose ‖(W − Q(W·diag(s))·diag(s)⁻¹)·X‖ on
/// calibration data is smallest (α = 0 is plain round to nearest, so the search never does worse on calibration
/// data). The inverse scale is folded into the norm that produces the input.
/// </summary>
public static class Awq
{
    public static AwqGroupScale Search(string group, IReadOnlyList<(float[] Weights, int Rows)> members, double[] meanAbs, OutputError error,
        DType type, int gridSteps, CancellationToken cancellation = default)
    {
        int n = meanAbs.Length;
        AwqGroupScale? best = null;
        double rtn = double.NaN;
        for (int step = 0; step <= gridSteps; step++)
        {
            cancellation.ThrowIfCancellationRequested();
            double alpha = (double)step / gridSteps;
            var s = Scales(meanAbs, alpha);
            double total = 0;
            foreach (var (weights, rows) in members)
            {
                var effective = Effective(weights, rows, n, s, type, out _);
                for (int i = 0; i < effective.Length; i++)
                {
                    effective[i] = weights[i] - effective[i];
                }

                total += error.Quadratic(effective, rows);
            }

            if (step == 0)
            {
                rtn = total;
            }

            if (best is null || total < best.Error)
            {
                best = new AwqGroupScale(group, alpha, s, total, rtn);
            }
        }

        return best! with { RoundToNearestError = rtn };
    }

    /// <summary>s_j = max(mean|x_j|, 1e-4)^α, divided by √(max s · min s).</summary>
    public static float[] Scales(double[] meanAbs, double alpha)
    {
        var s = new double[meanAbs.Length];
        for (int j = 0; j < s.Length; j++)
        {
            s[j] = alpha == 0 ? 1 : Math.Pow(Math.Max(meanAbs[j], 1e-4), alpha);
        }

        double norm = Math.Sqrt(s.Max() * s.Min());
        return s.Select(v => (float)(v / norm)).ToArray();
    }

    /// <summary>
    /// W·diag(s) rounded to nearest (llama.cpp's quantizer; any <see cref="BlockCodec"/> format, the INT4 groups
    /// included), and the weights it stands for: Q(W·diag(s))·diag(s)⁻¹.
    /// </summary>
    public static float[] Effective(float[] weights, int rows, int columns, float[] s, DType type, out BlockCodec codec)
    {
        var scaled = ScaleColumns(weights, rows, columns, s);
        codec = BlockCodec.RoundToNearest(type, scaled, rows, columns);
        var values = codec.ToFloats();
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < columns; j++)
            {
                values[(r * columns) + j] /= s[j];
            }
        }

        return values;
    }

    /// <summary>W·diag(s): column j multiplied by s_j.</summary>
    public static float[] ScaleColumns(float[] weights, int rows, int columns, float[] s)
    {
        var result = new float[weights.Length];
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < columns; j++)
            {
                result[(r * columns) + j] = weights[(r * columns) + j] * s[j];
            }
        }

        return result;
    }
}
