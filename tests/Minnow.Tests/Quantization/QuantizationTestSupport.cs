using Minnow.Models;

namespace Minnow.Tests.Quantization;

internal static unsafe class QuantizationTestSupport
{
    /// <summary>Gaussian samples (Box–Muller) from a seeded generator.</summary>
    public static float[] Gaussian(Random random, int count, float scale = 1)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            double u1 = 1 - random.NextDouble(), u2 = random.NextDouble();
            values[i] = (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2)) * scale;
        }

        return values;
    }

    /// <summary>Logits at every position for the given ids.</summary>
    public static float[] Logits(TransformerModel model, int[] ids)
    {
        using var cache = new KvCache(model.Config, ids.Length);
        var logits = new float[ids.Length * model.Config.VocabSize];
        fixed (float* p = logits)
        {
            model.Forward(ids, cache, p, allLogits: true);
        }

        return logits;
    }

    /// <summary>‖M·X‖² for M [rows, n] and X [tokens, n] (row-major), in double.</summary>
    public static double OutputNorm(float[] m, int rows, float[] x, int tokens, int n)
    {
        double sum = 0;
        for (int t = 0; t < tokens; t++)
        {
            for (int r = 0; r < rows; r++)
            {
                double y = 0;
                for (int i = 0; i < n; i++)
                {
                    y += (double)m[(r * n) + i] * x[(t * n) + i];
                }

                sum += y * y;
            }
        }

        return sum;
    }

    /// <summary>
    /// Every tensor of <paramref name="expected"/> is in <paramref name="actual"/> with the same type, shape and bytes, row
    /// for row — except the Q and K projections, whose rows an export to GGUF reorders for llama.cpp's RoPE: for them the
    /// same rows in any order.
    /// </summary>
    public static void AssertSameBlocks(TransformerModel expected, TransformerModel actual)
    {
        foreach (var (name, tensor) in expected.Weights.All)
        {
            var stored = actual.Weights.Get(name);
            Assert.Equal(tensor.Type, stored.Type);
            Assert.Equal(tensor.Shape, stored.Shape);
            var rows = Rows(tensor);
            var storedRows = Rows(stored);
            if (name.Contains("q_proj", StringComparison.Ordinal) || name.Contains("k_proj", StringComparison.Ordinal))
            {
                rows.Sort(StringComparer.Ordinal);
                storedRows.Sort(StringComparer.Ordinal);
            }

            Assert.True(rows.SequenceEqual(storedRows), name);
        }
    }

    private static List<string> Rows(Minnow.Tensors.Tensor tensor)
    {
        var rows = new List<string>(tensor.Rows);
        for (int r = 0; r < tensor.Rows; r++)
        {
            rows.Add(Convert.ToHexString(new ReadOnlySpan<byte>(tensor.Data + (r * tensor.RowBytes), checked((int)tensor.RowBytes))));
        }

        return rows;
    }
}
