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

        var keys = new float[weights.Length];
        var index = new int[weights.Length];
        for (int i = 0; i < keys.Length; i++)
        {
            keys[i] = MathF.Abs(weights[i]);
            index[i] = i;
        }

        SortByScore(keys, index);
        for (int i = 0; i < k; i++)
        {
            weights[index[i]] = 0;
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
        var index = new int[cols];
        for (int r = 0; r < rows; r++)
        {
            var row = weights.Slice(r * cols, cols);
            for (int j = 0; j < cols; j++)
            {
                keys[j] = (float)(MathF.Abs(row[j]) * inputNorms[j]);
                index[j] = j;
            }

            SortByScore(keys, index);
            for (int i = 0; i < k; i++)
            {
                row[index[i]] = 0;
            }
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
        var index = new int[m];
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
                    index[j] = start + j;
                }

                SortByScore(keys.AsSpan(0, size), index.AsSpan(0, size));
                for (int i = 0; i < size - keep; i++)
                {
                    row[index[i]] = 0;
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

    /// <summary>Sorts ascending by score; equal scores keep index order (a stable, deterministic order).</summary>
    private static void SortByScore(Span<float> keys, Span<int> index)
    {
        var pairs = new (float Key, int Index)[keys.Length];
        for (int i = 0; i < keys.Length; i++)
        {
            pairs[i] = (keys[i], index[i]);
        }

        Array.Sort(pairs, static (a, b) => a.Key != b.Key ? a.Key.CompareTo(b.Key) : a.Index.CompareTo(b.Index));
        for (int i = 0; i < pairs.Length; i++)
        {
            index[i] = pairs[i].Index;
        }
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
