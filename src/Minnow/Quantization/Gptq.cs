using Minnow.Tensors;

namespace Minnow.Quantization;

/// <summary>
/// The part of GPTQ shared by every layer that reads the same input: the dampened Hessian's column order and the
/// upper Cholesky factor U of its inverse (UᵀU = H⁻¹), both in processing order.
/// </summary>
public sealed class GptqHessian
{
    internal GptqHessian(int width, int[] order, double[] upper, double dampening)
    {
        Width = width;
        Order = order;
        Upper = upper;
        Dampening = dampening;
        Position = new int[width];
        for (int p = 0; p < width; p++)
        {
            Position[order[p]] = p;
        }
    }

    public int Width { get; }

    /// <summary>Order[p] is the column quantized p-th.</summary>
    public int[] Order { get; }

    /// <summary>Position[c] is when column c is quantized.</summary>
    public int[] Position { get; }

    /// <summary>Upper Cholesky factor of the inverse dampened Hessian, row-major, rows and columns in processing order.</summary>
    public double[] Upper { get; }

    /// <summary>The dampening actually added to the diagonal (relative to the mean diagonal).</summary>
    public double Dampening { get; }
}

/// <summary>
/// GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers",
/// 2022, Algorithm 1) producing ordinary GGUF Q4_0 / Q8_0 blocks, or the asymmetric INT4 groups (Q4_1, Q4_1_G64,
/// Q4_1_G128) and INT3 groups (Q3_1_G32, Q3_1_G64, Q3_1_G128). Columns are quantized one at a time in lazy batches; the rounding error of each is spread over the
/// columns not yet quantized through the Cholesky factor of the inverse Hessian. Each group of columns along a row
/// (32, or the group type's 64 / 128) gets its scale (and minimum) when the first of its columns is reached, from
/// the error-updated weights at that moment; its values are then rounded to that grid. Rows are independent given
/// H, so they are processed in tiles spread over the cores.
/// </summary>
public static class Gptq
{
    private const int RowTile = 16;

    /// <summary>Q4_0 scale candidates: the block's signed extreme value maps to code <c>c</c> (llama.cpp's rule is c = -8).</summary>
    private static readonly float[] Q4Candidates = [-8f, -7.75f, -7.5f, -7.25f, -7f, -6.75f, -6.5f, -6.25f, -6f, 7f, 6.75f, 6.5f, 6.25f, 6f];

    /// <summary>Asymmetric group range candidates: each end of [min, max] moved inwards by up to this many quarter steps (step = range / 15 for INT4, / 7 for INT3).</summary>
    private const int RangeShrinkSteps = 4;

    /// <summary>
    /// Prepares H (width × width, symmetric; not modified): columns never active get a unit diagonal, the
    /// diagonal is dampened by <paramref name="dampening"/> × its mean (more if needed for a Cholesky factor),
    /// columns optionally reordered by decreasing diagonal (act-order), then U = chol(H⁻¹) upper.
    /// </summary>
    public static GptqHessian Prepare(double[] hessian, int width, double dampening, bool actOrder)
    {
        int n = width;
        if (hessian.Length != n * n)
        {
            throw new ArgumentException($"the Hessian has {hessian.Length} entries, {n}×{n} expected.", nameof(hessian));
        }

        var h = (double[])hessian.Clone();
        double meanDiagonal = 0;
        for (int i = 0; i < n; i++)
        {
            if (!(h[(i * n) + i] > 0))
            {
                // A dead input (always zero in calibration): nothing to compensate through it.
                for (int j = 0; j < n; j++)
                {
                    h[(i * n) + j] = 0;
                    h[(j * n) + i] = 0;
                }

                h[(i * n) + i] = 1;
            }

            meanDiagonal += h[(i * n) + i];
        }

        meanDiagonal /= n;
        int[] order = Enumerable.Range(0, n).ToArray();
        if (actOrder)
        {
            var diagonal = order.Select(i => -h[(i * n) + i]).ToArray();
            Array.Sort(diagonal, order);
        }

        var permuted = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++)
            {
                permuted[(i * n) + j] = h[(order[i] * n) + order[j]];
            }
        }

        double damp = dampening;
        for (int attempt = 0; attempt < 8; attempt++)
        {
            var a = (double[])permuted.Clone();
            double add = Math.Max(damp * meanDiagonal, 1e-12 * meanDiagonal);
            for (int i = 0; i < n; i++)
            {
                a[(i * n) + i] += add;
            }

            if (DenseMath.CholeskyLower(a, n))
            {
                var inverse = DenseMath.InverseFromCholesky(a, n);
                if (DenseMath.CholeskyLower(inverse, n))
                {
                    DenseMath.TransposeInPlace(inverse, n);
                    return new GptqHessian(n, order, inverse, damp);
                }
            }

            damp = damp <= 0 ? 1e-4 : damp * 10;
        }

        throw new MinnowException("GPTQ: the calibration Hessian is not positive definite even with heavy dampening.");
    }

    /// <summary>
    /// Quantizes W [rows, width] (row-major float32, columns in their natural order) to <paramref name="type"/>:
    /// Q8_0, Q4_0, or an INT4 or INT3 group type (Q4_1, Q4_1_G64, Q4_1_G128, Q3_1_G32, Q3_1_G64, Q3_1_G128).
    /// <paramref name="scaleSearch"/> applies to Q4_0 and the group types (Q8_0 always uses llama.cpp's rule).
    /// </summary>
    /// <param name="perChannel">
    /// Q8_0 only: INT8 per output channel, one scale per row, max|row| / 127 of the weights as given (before any error
    /// feedback), carried by every block of the row.
    /// </param>
    public static BlockCodec Quantize(float[] weights, int rows, GptqHessian hessian, DType type, int lazyBatch = 128, bool scaleSearch = true,
        CancellationToken cancellation = default, bool perChannel = false)
    {
        if (perChannel && type != DType.Q8_0)
        {
            throw new ArgumentException($"per-channel INT8 is stored as Q8_0, not {type}.", nameof(type));
        }

        int n = hessian.Width;
        if (weights.Length != (long)rows * n)
        {
            throw new ArgumentException($"the weights have {weights.Length} entries, {rows}×{n} expected.", nameof(weights));
        }

        var codec = new BlockCodec(type, rows, n);
        int tiles = (rows + RowTile - 1) / RowTile;
        Parallel.For(0, tiles, new ParallelOptions { MaxDegreeOfParallelism = WorkerPool.DefaultThreadCount, CancellationToken = cancellation },
            t => QuantizeTile(weights, t * RowTile, Math.Min(RowTile, rows - (t * RowTile)), hessian, codec, Math.Max(1, lazyBatch), scaleSearch && type != DType.Q8_0,
                perChannel));
        return codec;
    }

    private static void QuantizeTile(float[] weights, int row0, int count, GptqHessian hessian, BlockCodec codec, int lazyBatch, bool scaleSearch,
        bool perChannel)
    {
        int n = hessian.Width, groupSize = codec.GroupSize, groups = n / groupSize;
        var order = hessian.Order;
        var position = hessian.Position;
        var u = hessian.Upper;
        var type = codec.Type;
        bool asymmetric = codec.Asymmetric;
        int maxCode = codec.MaxCode;

        // The tile's rows in processing order.
        var w = new double[count * n];
        for (int r = 0; r < count; r++)
        {
            var src = weights.AsSpan((row0 + r) * n, n);
            for (int p = 0; p < n; p++)
            {
                w[(r * n) + p] = src[order[p]];
            }
        }

        var errors = new double[count * lazyBatch];
        var scales = new float[count * groups];
        var inverses = new float[count * groups];
        var minimums = new float[asymmetric ? count * groups : 0];
        var scaled = new bool[groups];
        Span<float> block = stackalloc float[groupSize];
        Span<float> weightsOfBlock = stackalloc float[groupSize];

        for (int b1 = 0; b1 < n; b1 += lazyBatch)
        {
            int b2 = Math.Min(n, b1 + lazyBatch);
            for (int i = b1; i < b2; i++)
            {
                int column = order[i];
                int g = column / groupSize;
                if (!scaled[g])
                {
                    // The group's current weights: columns in this batch are up to date; later ones still owe the
                    // batch's pending updates.
                    for (int j = 0; j < groupSize; j++)
                    {
                        int p = position[(g * groupSize) + j];
                        double uu = u[(p * n) + p];
                        weightsOfBlock[j] = (float)(1.0 / (uu * uu));
                    }

                    for (int r = 0; r < count; r++)
                    {
                        for (int j = 0; j < groupSize; j++)
                        {
                            int p = position[(g * groupSize) + j];
                            double value = w[(r * n) + p];
                            if (p >= b2)
                            {
                                for (int k = b1; k < i; k++)
                                {
                                    value -= errors[(r * lazyBatch) + k - b1] * u[(k * n) + p];
                                }
                            }

                            block[j] = (float)value;
                        }

                        float d;
                        if (perChannel)
                        {
                            d = BlockCodec.PerChannelScale(weights.AsSpan((row0 + r) * n, n));
                        }
                        else if (asymmetric)
                        {
                            (d, float m) = scaleSearch ? SearchGroupRange(block, weightsOfBlock, maxCode) : GroupRange(block, maxCode);
                            minimums[(r * groups) + g] = m;
                        }
                        else
                        {
                            d = scaleSearch ? SearchQ4Scale(block, weightsOfBlock) : (float)(Half)BlockCodec.ReferenceScale(type, block);
                        }

                        scales[(r * groups) + g] = d;
                        inverses[(r * groups) + g] = d != 0 ? 1f / d : 0f;
                    }

                    scaled[g] = true;
                }

                double diagonal = u[(i * n) + i];
                var uRow = u.AsSpan((i * n) + i + 1, b2 - i - 1);
                for (int r = 0; r < count; r++)
                {
                    double value = w[(r * n) + i];
                    float d = scales[(r * groups) + g];
                    double error;
                    if (asymmetric)
                    {
                        float m = minimums[(r * groups) + g];
                        int q = BlockCodec.Code((float)value, inverses[(r * groups) + g], m, maxCode);
                        codec.CodeRow(row0 + r)[column] = (sbyte)q;
                        error = (value - ((q * d) + m)) / diagonal;
                    }
                    else
                    {
                        int q = BlockCodec.Code(type, (float)value, inverses[(r * groups) + g]);
                        codec.CodeRow(row0 + r)[column] = (sbyte)q;
                        error = (value - ((double)q * d)) / diagonal;
                    }

                    errors[(r * lazyBatch) + i - b1] = error;
                    DenseMath.SubtractScaled(w.AsSpan((r * n) + i + 1, b2 - i - 1), error, uRow);
                }
            }

            // Lazy batch update of every later column: W[:, b2:] -= E · U[b1:b2, b2:].
            if (b2 < n)
            {
                for (int r = 0; r < count; r++)
                {
                    var rest = w.AsSpan((r * n) + b2, n - b2);
                    for (int k = b1; k < b2; k++)
                    {
                        DenseMath.SubtractScaled(rest, errors[(r * lazyBatch) + k - b1], u.AsSpan((k * n) + b2, n - b2));
                    }
                }
            }
        }

        for (int r = 0; r < count; r++)
        {
            var rowScales = codec.ScaleRow(row0 + r);
            var rowMinimums = codec.MinimumRow(row0 + r);
            for (int g = 0; g < groups; g++)
            {
                rowScales[g] = (Half)scales[(r * groups) + g];
                if (asymmetric)
                {
                    rowMinimums[g] = (Half)minimums[(r * groups) + g];
                }
            }
        }
    }

    /// <summary>
    /// The fp16 Q4_0 scale, among a few candidates (the extreme value mapped to codes -8 … -6 or 6 … 7), that
    /// minimises the error of the block's current values weighted by the Hessian (1 / [H⁻¹]ᵢᵢ per column).
    /// </summary>
    internal static float SearchQ4Scale(ReadOnlySpan<float> block, ReadOnlySpan<float> weights)
    {
        float amax = 0, max = 0;
        foreach (float v in block)
        {
            if (MathF.Abs(v) > amax)
            {
                amax = MathF.Abs(v);
                max = v;
            }
        }

        if (amax == 0)
        {
            return 0;
        }

        float best = (float)(Half)(max / Q4Candidates[0]);
        double bestError = double.PositiveInfinity;
        foreach (float c in Q4Candidates)
        {
            float d = (float)(Half)(max / c);
            if (d == 0 || !float.IsFinite(d))
            {
                continue;
            }

            float id = 1f / d;
            double error = 0;
            for (int j = 0; j < block.Length; j++)
            {
                float e = block[j] - (BlockCodec.Code(DType.Q4_0, block[j], id) * d);
                error += weights[j] * e * e;
            }

            if (error < bestError)
            {
                bestError = error;
                best = d;
            }
        }

        return best;
    }

    /// <summary>
    /// ggml's Q4_1 rule on a group's current values: d = (max − min) / <paramref name="maxCode"/> (15 for INT4, 7 for
    /// INT3), m = min, both rounded to fp16.
    /// </summary>
    internal static (float Scale, float Minimum) GroupRange(ReadOnlySpan<float> group, int maxCode)
    {
        float min = float.MaxValue, max = float.MinValue;
        foreach (float v in group)
        {
            min = MathF.Min(min, v);
            max = MathF.Max(max, v);
        }

        return ((float)(Half)((max - min) / maxCode), (float)(Half)min);
    }

    /// <summary>
    /// The fp16 (d, m) of an asymmetric INT4 or INT3 group (codes 0 … <paramref name="maxCode"/>), among ranges
    /// [min + a·δ, max − b·δ] (δ a quarter of a step, a, b = 0 … 4; a = b = 0 is ggml's rule), that minimises the
    /// error of the group's current values weighted by the Hessian (1 / [H⁻¹]ᵢᵢ per column). Values outside the range
    /// are clamped to its ends.
    /// </summary>
    internal static (float Scale, float Minimum) SearchGroupRange(ReadOnlySpan<float> group, ReadOnlySpan<float> weights, int maxCode)
    {
        float min = float.MaxValue, max = float.MinValue;
        foreach (float v in group)
        {
            min = MathF.Min(min, v);
            max = MathF.Max(max, v);
        }

        var best = ((float)(Half)((max - min) / maxCode), (float)(Half)min);
        float range = max - min;
        if (!(range > 0))
        {
            return best;
        }

        double bestError = double.PositiveInfinity;
        float quarter = range / (4f * maxCode);
        for (int a = 0; a <= RangeShrinkSteps; a++)
        {
            for (int b = 0; b <= RangeShrinkSteps; b++)
            {
                float lo = min + (a * quarter), hi = max - (b * quarter);
                float d = (float)(Half)((hi - lo) / maxCode), m = (float)(Half)lo;
                if (d == 0 || !float.IsFinite(d))
                {
                    continue;
                }

                float id = 1f / d;
                double error = 0;
                for (int j = 0; j < group.Length; j++)
                {
                    float e = group[j] - ((BlockCodec.Code(group[j], id, m, maxCode) * d) + m);
                    error += weights[j] * e * e;
                }

                if (error < bestError)
                {
                    bestError = error;
                    best = (d, m);
                }
            }
        }

        return best;
    }
}
