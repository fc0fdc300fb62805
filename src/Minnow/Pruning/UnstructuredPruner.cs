using System.Buffers;

namespace Minnow.Pruning;

/// <summary>
/// Zeroes weights of one matrix, [rows = outputs, cols = inputs] row-major:
/// <list type="bullet">
/// <item>magnitude: the round(s·n) smallest |w| of the whole matrix (torch's <c>l1_unstructured</c>);</item>
/// <item>Wanda: in each output row, the round(s·cols) smallest scores |W_ij|·‖X_j‖₂;</item>
/// <item>N:M: in each row, all but the N largest scores of every M consecutive inputs (|W| or Wanda's score).</item>
/// </list>
/// Ties go to the lower index (kept by the sort's order); the counts are exact.
/// </summary>
public static class UnstructuredPruner
{
    /// <summary>The number of weights <paramref name="sparsity"/> removes from <paramref name="count"/> (Python's round, half to even).</summary>
    public static int PruneCount(double sparsity, long count) => (int)Math.Round(sparsity * count, MidpointRounding.ToEven);

    public static void Magnitude(Span<float> weights, double sparsity)
    {
        int k = PruneCount(sparsity, weights.Length);
        if (k <= 0)
        {
            return;
        }

        float[] buffer = ArrayPool<float>.Shared.Rent(weights.Length * 2);
        try
        {
            var keys = buffer.AsSpan(0, weights.Length);
            for (int i = 0; i < keys.Length; i++)
            {
                keys[i] = MathF.Abs(weights[i]);
            }

            ZeroSmallest(weights, keys, buffer.AsSpan(weights.Length, weights.Length), k);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(buffer);
        }
    }

    /// <summary>Wanda: per output row, zero the smallest |W_ij|·‖X_j‖₂.</summary>
    public static void Wanda(Span<float> weights, int rows, int cols, ReadOnlySpan<double> inputNorms, double sparsity)
    {
        Check(weights, rows, cols, inputNorms);
        int k = PruneCount(sparsity, cols);
        if (k <= 0)
        {
            return;
        }

        var keys = new float[cols];
        var scratch = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            var row = weights.Slice(r * cols, cols);
            for (int j = 0; j < cols; j++)
            {
                keys[j] = (float)(MathF.Abs(row[j]) * inputNorms[j]);
            }

            ZeroSmallest(row, keys, scratch, k);
        }
    }

    /// <summary>
    /// N:M semi-structured sparsity: in every group of M consecutive inputs of a row, keep the N largest scores
    /// (|W|, or |W|·‖X‖ when <paramref name="inputNorms"/> is given). A last, shorter group of r inputs keeps
    /// round(N·r/M).
    /// </summary>
    public static void NOfM(Span<float> weights, int rows, int cols, int n, int m, ReadOnlySpan<double> inputNorms = default)
    {
        if (n <= 0 || m <= 0 || n > m)
        {
            throw new ArgumentException($"{n}:{m} is not a valid N:M pattern.");
        }

        bool wanda = !inputNorms.IsEmpty;
        if (wanda)
        {
            Check(weights, rows, cols, inputNorms);
        }

        var keys = new float[m];
        for (int r = 0; r < rows; r++)
        {
            var row = weights.Slice(r * cols, cols);
            for (int start = 0; start < cols; start += m)
            {
                int size = Math.Min(m, cols - start);
                int keep = size == m ? n : (int)Math.Round((double)n * size / m, MidpointRounding.ToEven);
                for (int j = 0; j < size; j++)
                {
                    keys[j] = MathF.Abs(row[start + j]) * (wanda ? (float)inputNorms[start + j] : 1f);
                }

                // A group is a handful of values: zero each one whose rank (by score, then index) is among the smallest.
                var group = row.Slice(start, size);
                for (int j = 0; j < size; j++)
                {
                    int rank = 0;
                    for (int i = 0; i < size; i++)
                    {
                        rank += Before(keys[i], i, keys[j], j) ? 1 : 0;
                    }

                    if (rank < size - keep)
                    {
                        group[j] = 0;
                    }
                }
            }
        }
    }

    /// <summary>True when every group of M consecutive inputs of every row has at most N non-zeros.</summary>
    public static bool SatisfiesNOfM(ReadOnlySpan<float> weights, int rows, int cols, int n, int m)
    {
        for (int r = 0; r < rows; r++)
        {
            for (int start = 0; start < cols; start += m)
            {
                int size = Math.Min(m, cols - start);
                int keep = size == m ? n : (int)Math.Round((double)n * size / m, MidpointRounding.ToEven);
                int nonZero = 0;
                for (int j = 0; j < size; j++)
                {
                    nonZero += weights[(r * cols) + start + j] != 0 ? 1 : 0;
                }

                if (nonZero > keep)
                {
                    return false;
                }
            }
        }

        return true;
    }

    /// <summary>
    /// Zeros the <paramref name="k"/> values of <paramref name="values"/> whose scores come first in ascending order of
    /// (score, index): every score below the k-th smallest, then the lowest-indexed ones equal to it. The same
    /// choice as a stable sort by score, found with one sort of a scratch copy of the scores and no other allocation.
    /// </summary>
    private static void ZeroSmallest(Span<float> values, ReadOnlySpan<float> keys, Span<float> scratch, int k)
    {
        k = Math.Min(k, values.Length);
        var sorted = scratch[..keys.Length];
        keys.CopyTo(sorted);
        sorted.Sort();
        float threshold = sorted[k - 1];
        int below = 0;
        foreach (float key in keys)
        {
            below += key.CompareTo(threshold) < 0 ? 1 : 0;
        }

        int equalToZero = k - below;
        for (int i = 0; i < keys.Length; i++)
        {
            int order = keys[i].CompareTo(threshold);
            if (order < 0 || (order == 0 && equalToZero-- > 0))
            {
                values[i] = 0;
            }
        }
    }

    /// <summary>Whether (score a, index i) comes before (score b, index j) in ascending order.</summary>
    private static bool Before(float a, int i, float b, int j)
    {
        int order = a.CompareTo(b);
        return order < 0 || (order == 0 && i < j);
    }

    private static void Check(ReadOnlySpan<float> weights, int rows, int cols, ReadOnlySpan<double> inputNorms)
    {
        if ((long)rows * cols != weights.Length || inputNorms.Length != cols)
        {
            throw new ArgumentException($"a [{rows}, {cols}] matrix needs {cols} input norms (got {inputNorms.Length}) and {(long)rows * cols} weights (got {weights.Length}).");
        }
    }

    /// <summary>Transposes a [rows, cols] matrix into a new [cols, rows] array.</summary>
    public static float[] Transpose(ReadOnlySpan<float> values, int rows, int cols)
    {
        var result = new float[values.Length];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++)
            {
                result[(c * rows) + r] = values[(r * cols) + c];
            }
        }

        return result;
    }
}
