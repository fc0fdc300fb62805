using Minnow.Kernels;
using Minnow.Tensors;
using static Minnow.Tests.Kernels.KernelTestSupport;

namespace Minnow.Tests.Kernels;

public unsafe class MatMulTests : IDisposable
{
    private static readonly DType[] AllTypes = [DType.F32, DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0];

    private readonly WorkerPool _one = new(1);
    private readonly WorkerPool _two = new(2);

    public void Dispose()
    {
        _one.Dispose();
        _two.Dispose();
        GC.SuppressFinalize(this);
    }

    public static TheoryData<DType, VectorWidth, int, bool> Cases()
    {
        var data = new TheoryData<DType, VectorWidth, int, bool>();
        foreach (var type in AllTypes)
        {
            foreach (var width in AllWidths)
            {
                foreach (int tokens in new[] { 1, 3, 7 })
                {
                    data.Add(type, width, tokens, false);
                    data.Add(type, width, tokens, true);
                }
            }
        }

        return data;
    }

    public static TheoryData<DType, VectorWidth> TypesAndWidths()
    {
        var data = new TheoryData<DType, VectorWidth>();
        foreach (var type in AllTypes)
        {
            foreach (var width in AllWidths)
            {
                data.Add(type, width);
            }
        }

        return data;
    }

    /// <summary>Shapes (rows, cols): rows off multiples of 4; plain types also get columns off every vector size.</summary>
    private static IEnumerable<(int Rows, int Cols)> Shapes(DType type) => type.BlockSize() == 32
        ? [(1, 32), (5, 64), (13, 96), (70, 160), (9, 1536)]
        : [(1, 1), (3, 5), (5, 33), (13, 172), (7, 176), (70, 47), (9, 1000)];

    private sealed class Problem
    {
        public required Tensor Weight;
        public required float[] X;
        public required float[]? Bias;
        public required int Tokens;

        public float[] Run(WorkerPool pool, VectorWidth width)
        {
            var y = new float[Tokens * Weight.Rows];
            fixed (float* px = X, py = y, pb = Bias)
            {
                using (KernelIsa.Force(width))
                {
                    // The float path (Q8_0 / Q4_0 otherwise go to QuantizedMatMul, tested in QuantizedMatMulTests).
                    MatMul.Compute(Weight, px, Tokens, py, Bias != null ? pb : null, pool, KernelIsa.Current, quantizeActivations: false);
                }
            }

            return y;
        }
    }

    private static Problem Make(DType type, int rows, int cols, int tokens, bool bias, int seed) => new()
    {
        Weight = MakeTensor(type, rows, cols, Random(rows * cols, seed, 0.5f)),
        X = Random(tokens * cols, seed + 1, 2f),
        Bias = bias ? Random(rows, seed + 2, 1f) : null,
        Tokens = tokens,
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesDoublePrecisionReferenceAndScalarPath(DType type, VectorWidth width, int tokens, bool withBias)
    {
        foreach (var (rows, cols) in Shapes(type))
        {
            var p = Make(type, rows, cols, tokens, withBias, rows + cols);
            float[] y = p.Run(_two, width);
            float[] scalar = p.Run(_one, VectorWidth.Scalar);
            float[] w = p.Weight.ToFloatArray(); // Dequantize.Row, the scalar definition of every type
            for (int t = 0; t < tokens; t++)
            {
                for (int o = 0; o < rows; o++)
                {
                    double sum = 0, magnitude = 0;
                    for (int i = 0; i < cols; i++)
                    {
                        double term = (double)w[(o * cols) + i] * p.X[(t * cols) + i];
                        sum += term;
                        magnitude += Math.Abs(term);
                    }

                    double b = p.Bias?[o] ?? 0;
                    double tolerance = (1e-5 * (magnitude + Math.Abs(b))) + 1e-30;
                    int k = (t * rows) + o;
                    string at = $"{type} {width} {rows}x{cols} t={t} o={o}";
                    Assert.True(Math.Abs(y[k] - (sum + b)) <= tolerance, $"{at}: {y[k]} vs reference {sum + b}");
                    Assert.True(Math.Abs(y[k] - scalar[k]) <= tolerance, $"{at}: {y[k]} vs scalar {scalar[k]}");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(TypesAndWidths))]
    public void IdenticalAcrossThreadCountsAndBatching(DType type, VectorWidth width)
    {
        foreach (var (rows, cols) in Shapes(type))
        {
            var p = Make(type, rows, cols, 7, true, 3 * (rows + cols));
            float[] one = p.Run(_one, width);
            float[] two = p.Run(_two, width);
            AssertBitwiseEqual(one, two, $"{type} {width} {rows}x{cols} threads");

            // Each token alone (decode) gives the same bits as the batch (prefill).
            for (int t = 0; t < p.Tokens; t++)
            {
                var single = new Problem { Weight = p.Weight, X = p.X.AsSpan(t * cols, cols).ToArray(), Bias = p.Bias, Tokens = 1 };
                AssertBitwiseEqual(one.AsSpan(t * rows, rows), single.Run(_two, width), $"{type} {width} {rows}x{cols} token {t}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(TypesAndWidths))]
    public void ManyBlocksOverThePool(DType type, VectorWidth width)
    {
        // Enough rows for many pool blocks; the scalar path is the reference.
        var p = Make(type, 1027, 256, 2, true, 99);
        float[] y = p.Run(_two, width);
        float[] reference = p.Run(_one, VectorWidth.Scalar);
        AssertClose(reference, y, 2e-5, 2e-5, $"{type} {width}");
    }

    [Theory]
    [MemberData(nameof(TypesAndWidths))]
    public void RowKernelsAgreeBitForBit(DType type, VectorWidth width)
    {
        // The four-row kernel, the one-row kernel, and conversion followed by the float kernel give the same bits.
        Action<Tensor, float[]> check = (type, width) switch
        {
            (_, VectorWidth.Scalar) => (_, _) => { }
            ,
            (DType.F32, _) => CheckRowKernels<F32Format>(width),
            (DType.F16, _) => CheckRowKernels<F16Format>(width),
            (DType.BF16, _) => CheckRowKernels<BF16Format>(width),
            (DType.Q8_0, _) => CheckRowKernels<Q8_0Format>(width),
            _ => CheckRowKernels<Q4_0Format>(width),
        };
        int cols = type.BlockSize() == 32 ? 160 : 77;
        check(MakeTensor(type, 4, cols, Random(4 * cols, 31, 1f)), Random(cols, 32, 1f));
    }

    private static Action<Tensor, float[]> CheckRowKernels<TFormat>(VectorWidth width)
        where TFormat : struct, IWeightFormat => width switch
        {
            VectorWidth.V128 => CheckRowKernels<TFormat, System.Runtime.Intrinsics.Vector128<float>>,
            VectorWidth.V256 => CheckRowKernels<TFormat, System.Runtime.Intrinsics.Vector256<float>>,
            _ => CheckRowKernels<TFormat, System.Runtime.Intrinsics.Vector512<float>>,
        };

    private static void CheckRowKernels<TFormat, T>(Tensor weight, float[] x)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        int cols = weight.Columns;
        var four = new float[4];
        var one = new float[4];
        var converted = new float[4];
        var expanded = new float[4 * cols];
        fixed (float* px = x, f = four, e = expanded)
        {
            MatMul.Dot4<TFormat, T>(weight.Data, weight.RowBytes, px, cols, f);
            for (int r = 0; r < 4; r++)
            {
                one[r] = MatMul.Dot1<TFormat, T>(weight.RowPointer(r), px, cols);
                MatMul.Expand<TFormat, T>(weight.RowPointer(r), cols, e + (r * cols));
                converted[r] = MatMul.Dot1<F32Format, T>((byte*)(e + (r * cols)), px, cols);
            }
        }

        AssertBitwiseEqual(four, one, $"{weight.Type} {typeof(T).Name} Dot4 vs Dot1");
        AssertBitwiseEqual(four, converted, $"{weight.Type} {typeof(T).Name} Dot4 vs Expand + F32");

        // Expand gives Dequantize.Row's values (a zero's sign may differ: (8 − 8)·d is −0 for d < 0, 8d − 8d is +0).
        float[] reference = weight.ToFloatArray();
        for (int i = 0; i < reference.Length; i++)
        {
            Assert.True(reference[i] == expanded[i], $"{weight.Type} {typeof(T).Name} Expand [{i}]: {expanded[i]} vs {reference[i]}");
        }
    }

    [Fact]
    public void DecodeAndPrefillAllocateNothingOnceWarm()
    {
        foreach (var type in AllTypes)
        {
            var decode = Make(type, 64, 512, 1, true, 5);
            var prefill = Make(type, 64, 512, 5, false, 6);
            var y = new float[5 * 64];
            fixed (float* px1 = decode.X, px5 = prefill.X, py = y, pb = decode.Bias)
            {
                MatMul.Compute(decode.Weight, px1, 1, py, pb, _one);
                MatMul.Compute(prefill.Weight, px5, 5, py, null, _one);
                // The runtime itself may allocate once on this thread while a method tiers up (on-stack replacement
                // of a hot loop), so the check takes the least of a few rounds: a kernel that allocates per call
                // never reaches zero.
                long least = long.MaxValue;
                for (int round = 0; round < 5 && least != 0; round++)
                {
                    long before = GC.GetAllocatedBytesForCurrentThread();
                    MatMul.Compute(decode.Weight, px1, 1, py, pb, _one);
                    MatMul.Compute(prefill.Weight, px5, 5, py, null, _one);
                    least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
                }

                Assert.Equal(0, least);
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LongRowsNeedNoAllocationPerCall(bool quantizeActivations)
    {
        // The old scalar kernel allocated for rows over 8192 columns.
        var p = Make(DType.Q8_0, 8, 16384, 3, false, 7);
        var y = new float[3 * 8];
        var reference = new float[3 * 8];
        fixed (float* px = p.X, py = y, pr = reference)
        {
            MatMul.Compute(p.Weight, px, 3, py, null, _one, KernelIsa.Current, quantizeActivations);
            long least = long.MaxValue; // least of a few rounds, as in DecodeAndPrefillAllocateNothingOnceWarm
            for (int round = 0; round < 5 && least != 0; round++)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                MatMul.Compute(p.Weight, px, 3, py, null, _one, KernelIsa.Current, quantizeActivations);
                least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
            }

            Assert.Equal(0, least);
            MatMul.Compute(p.Weight, px, 3, pr, null, _one, VectorWidth.Scalar, quantizeActivations);
        }

        AssertClose(reference, y, 1e-5, 1e-4);
    }
}
