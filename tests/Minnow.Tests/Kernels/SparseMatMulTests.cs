using Minnow.Kernels;
using Minnow.Tensors;
using static Minnow.Tests.Kernels.KernelTestSupport;

namespace Minnow.Tests.Kernels;

/// <summary>
/// The sparse matrix format (<see cref="SparseMatrix"/>) and its kernel (<see cref="SparseMatMul"/>, through
/// <see cref="MatMul"/>): every path against a double-precision reference and the scalar path, over odd shapes and
/// sparsity 0%, 50%, 90% and 2:4; and against the same matrix stored dense.
/// </summary>
public unsafe class SparseMatMulTests : IDisposable
{
    private static readonly DType[] SparseTypes = [DType.SparseF16, DType.SparseQ8, DType.SparseI8];

    private static readonly string[] Patterns = ["0%", "50%", "90%", "2:4"];

    private static readonly (int Rows, int Cols)[] Shapes = [(1, 1), (3, 5), (5, 33), (13, 172), (7, 176), (70, 47), (9, 1000), (6, 130), (4, 64)];

    private readonly WorkerPool _one = new(1);
    private readonly WorkerPool _two = new(2);

    public void Dispose()
    {
        _one.Dispose();
        _two.Dispose();
        GC.SuppressFinalize(this);
    }

    public static TheoryData<DType, VectorWidth, string> Cases()
    {
        var data = new TheoryData<DType, VectorWidth, string>();
        foreach (var type in SparseTypes)
        {
            foreach (var width in AllWidths)
            {
                foreach (string pattern in Patterns)
                {
                    data.Add(type, width, pattern);
                }
            }
        }

        return data;
    }

    /// <summary>Random values with the pattern's zeros: none, each value with probability 0.5 or 0.9, or 2 of every 4.</summary>
    private static float[] Pruned(int rows, int cols, string pattern, int seed)
    {
        var values = Random(rows * cols, seed, 0.5f);
        var random = new Random(seed + 7);
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++)
            {
                bool drop = pattern switch
                {
                    "50%" => random.NextDouble() < 0.5,
                    "90%" => random.NextDouble() < 0.9,
                    "2:4" => (c % 4) is 1 or 2 ^ (r % 2 == 1),
                    _ => false,
                };
                if (drop)
                {
                    values[(r * cols) + c] = 0;
                }
            }
        }

        return values;
    }

    private static Tensor MakeSparse(DType type, int rows, int cols, float[] values)
    {
        byte[] bytes = SparseMatrix.Encode(type, values, rows, cols);
        var buffer = new NativeBuffer(bytes.Length);
        bytes.CopyTo(new Span<byte>(buffer.Pointer, bytes.Length));
        return new Tensor($"w{type}", type, [rows, cols], buffer.Pointer, buffer);
    }

    private float[] Run(Tensor weight, float[] x, float[]? bias, int tokens, WorkerPool pool, VectorWidth width)
    {
        var y = new float[tokens * weight.Rows];
        fixed (float* px = x, py = y, pb = bias)
        {
            using (KernelIsa.Force(width))
            {
                MatMul.Compute(weight, px, tokens, py, bias != null ? pb : null, pool, KernelIsa.Current, quantizeActivations: false);
            }
        }

        return y;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesDoublePrecisionReferenceAndScalarPath(DType type, VectorWidth width, string pattern)
    {
        foreach (var (rows, cols) in Shapes)
        {
            foreach (int tokens in new[] { 1, 3 })
            {
                int seed = (rows * 31) + cols + tokens;
                using var weight = new Disposer(MakeSparse(type, rows, cols, Pruned(rows, cols, pattern, seed)));
                var x = Random(tokens * cols, seed + 1, 2f);
                var bias = tokens == 3 ? Random(rows, seed + 2) : null;
                float[] y = Run(weight.Tensor, x, bias, tokens, _two, width);
                float[] scalar = Run(weight.Tensor, x, bias, tokens, _one, VectorWidth.Scalar);
                float[] w = weight.Tensor.ToFloatArray();
                for (int t = 0; t < tokens; t++)
                {
                    for (int o = 0; o < rows; o++)
                    {
                        double sum = 0, magnitude = 0;
                        for (int i = 0; i < cols; i++)
                        {
                            double term = (double)w[(o * cols) + i] * x[(t * cols) + i];
                            sum += term;
                            magnitude += Math.Abs(term);
                        }

                        double b = bias?[o] ?? 0;
                        double tolerance = (1e-5 * (magnitude + Math.Abs(b))) + 1e-30;
                        int k = (t * rows) + o;
                        string at = $"{type} {width} {pattern} {rows}x{cols} t={t} o={o}";
                        Assert.True(Math.Abs(y[k] - (sum + b)) <= tolerance, $"{at}: {y[k]} vs reference {sum + b}");
                        Assert.True(Math.Abs(y[k] - scalar[k]) <= tolerance, $"{at}: {y[k]} vs scalar {scalar[k]}");
                    }
                }
            }
        }
    }

    /// <summary>
    /// The vector bodies sum in the dense float path's order, so a sparse matrix gives exactly what the
    /// same values stored dense give (F16 against F16; the 8-bit form against its values as F32), decode and prefill.
    /// </summary>
    [Theory]
    [InlineData(DType.SparseF16, VectorWidth.V128)]
    [InlineData(DType.SparseF16, VectorWidth.V256)]
    [InlineData(DType.SparseQ8, VectorWidth.V128)]
    [InlineData(DType.SparseQ8, VectorWidth.V256)]
    [InlineData(DType.SparseF16, VectorWidth.V512)]
    [InlineData(DType.SparseQ8, VectorWidth.V512)]
    [InlineData(DType.SparseI8, VectorWidth.V128)]
    [InlineData(DType.SparseI8, VectorWidth.V256)]
    [InlineData(DType.SparseI8, VectorWidth.V512)]
    public void EqualsTheDenseMatrixBitForBit(DType type, VectorWidth width)
    {
        foreach (var (rows, cols) in Shapes)
        {
            foreach (string pattern in Patterns)
            {
                int seed = (rows * 17) + cols;
                using var sparse = new Disposer(MakeSparse(type, rows, cols, Pruned(rows, cols, pattern, seed)));
                var denseType = type == DType.SparseF16 ? DType.F16 : DType.F32;
                using var dense = new Disposer(MakeTensor(denseType, rows, cols, sparse.Tensor.ToFloatArray()));
                foreach (int tokens in new[] { 1, 5 })
                {
                    var x = Random(tokens * cols, seed + tokens, 2f);
                    var bias = Random(rows, seed + 3);
                    AssertBitwiseEqual(
                        Run(dense.Tensor, x, bias, tokens, _two, width), Run(sparse.Tensor, x, bias, tokens, _two, width), $"{type} {width} {pattern} {rows}x{cols} tokens {tokens}");
                }
            }
        }
    }

    [Theory]
    [InlineData(DType.SparseF16)]
    [InlineData(DType.SparseQ8)]
    [InlineData(DType.SparseI8)]
    public void EncodingKeepsExactlyTheNonZeros(DType type)
    {
        const int Rows = 9, Cols = 200;
        var values = Pruned(Rows, Cols, "50%", 5);
        using var t = new Disposer(MakeSparse(type, Rows, Cols, values));
        var back = t.Tensor.ToFloatArray();
        int scaleGroup = type == DType.SparseI8 ? Cols : SparseMatrix.ScaleGroup;
        for (int r = 0; r < Rows; r++)
        {
            for (int g = 0; g < Cols; g += scaleGroup)
            {
                var group = values.AsSpan((r * Cols) + g, Math.Min(scaleGroup, Cols - g));
                float amax = 0;
                foreach (float v in group)
                {
                    amax = MathF.Max(amax, MathF.Abs(v));
                }

                for (int j = 0; j < group.Length; j++)
                {
                    int i = (r * Cols) + g + j;
                    if (values[i] == 0)
                    {
                        Assert.Equal(0f, back[i]);
                    }
                    else if (type == DType.SparseF16)
                    {
                        Assert.Equal((float)(Half)values[i], back[i]);
                    }
                    else
                    {
                        // Half a step of the group's (or row's) scale amax / 127, plus its rounding to fp16 (up to 127 · 2^-11 of a step).
                        Assert.True(MathF.Abs(values[i] - back[i]) <= amax / 127f * 0.6f, $"[{i}] {values[i]} → {back[i]}");
                    }
                }
            }
        }
    }

    /// <summary>
    /// At 50% sparsity (exactly half of each row kept, rows of 576): SPARSE_I8 ≤ 5.1 bits per weight (dense Q8_0: 8.5),
    /// SPARSE_Q8 ≤ 5.4, F16 ≤ 9.2 (dense: 16), offsets and padding included.
    /// </summary>
    [Theory]
    [InlineData("50%")]
    [InlineData("2:4")]
    public void FiftyPercentSparseIsSmallEnough(string pattern)
    {
        const int Rows = 64, Cols = 576;
        var values = Pruned(Rows, Cols, pattern == "50%" ? "2:4" : pattern, 1);
        if (pattern == "50%")
        {
            // Unstructured: the same number of zeros per row as 2:4, at random places.
            var random = new Random(3);
            for (int r = 0; r < Rows; r++)
            {
                random.Shuffle(values.AsSpan(r * Cols, Cols));
            }
        }

        double i8 = SparseMatrix.Encode(DType.SparseI8, values, Rows, Cols).Length * 8.0 / values.Length;
        double q8 = SparseMatrix.Encode(DType.SparseQ8, values, Rows, Cols).Length * 8.0 / values.Length;
        double f16 = SparseMatrix.Encode(DType.SparseF16, values, Rows, Cols).Length * 8.0 / values.Length;
        Assert.True(i8 <= 5.1, $"sparse int8, a scale per row: {i8:F3} bits per weight");
        Assert.True(q8 <= 5.4, $"sparse 8-bit, a scale per 64 columns: {q8:F3} bits per weight");
        Assert.True(f16 <= 9.2, $"sparse F16: {f16:F3} bits per weight");
    }

    [Theory]
    [InlineData(DType.SparseQ8)]
    [InlineData(DType.SparseI8)]
    public void MeasureAcceptsWhatEncodeWritesAndRejectsDamage(DType type)
    {
        const int Rows = 5, Cols = 37;
        byte[] bytes = SparseMatrix.Encode(type, Pruned(Rows, Cols, "50%", 3), Rows, Cols);
        fixed (byte* p = bytes)
        {
            Assert.Equal(bytes.Length, SparseMatrix.Measure(type, p, bytes.Length, Rows, Cols, out string? error));
            Assert.Null(error);
            Assert.Equal(-1, SparseMatrix.Measure(type, p, bytes.Length - 1, Rows, Cols, out error));
            Assert.NotNull(error);

            // The offsets are uint32 for SPARSE_I8, uint64 for SPARSE_Q8: read as the other width, row 0 starts in the wrong place.
            DType other = type == DType.SparseI8 ? DType.SparseQ8 : DType.SparseI8;
            Assert.Equal(-1, SparseMatrix.Measure(other, p, bytes.Length, Rows, Cols, out error));
            Assert.Contains("first row", error);

            // One more bit in row 0's bitmap: the row's length no longer matches its count of values.
            int first = type == DType.SparseI8 ? (int)BitConverter.ToUInt32(bytes, 0) : (int)BitConverter.ToUInt64(bytes, 0);
            Assert.Equal(SparseMatrix.OffsetBytes(type) * (Rows + 1), first);
            byte saved = bytes[first];
            bytes[first] = (byte)(saved ^ 0xFF);
            Assert.Equal(-1, SparseMatrix.Measure(type, p, bytes.Length, Rows, Cols, out error));
            Assert.Contains("row 0", error);
            bytes[first] = saved;

            // A bit past the last column (37 = 4 · 8 + 5).
            bytes[first + 4] |= 0x80;
            Assert.Equal(-1, SparseMatrix.Measure(type, p, bytes.Length, Rows, Cols, out error));
            Assert.Contains("past", error);
        }
    }

    /// <summary>Frees a test tensor's native buffer.</summary>
    private sealed class Disposer(Tensor tensor) : IDisposable
    {
        public Tensor Tensor { get; } = tensor;

        public void Dispose() => (Tensor.Owner as IDisposable)?.Dispose();
    }
}
