using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Minnow.Kernels;
using Minnow.Tensors;
using static Minnow.Tests.Kernels.KernelTestSupport;

namespace Minnow.Tests.Kernels;

public unsafe class QuantizedMatMulTests : IDisposable
{
    private static readonly DType[] Types = [DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q4_1_G64, DType.Q4_1_G128, DType.Q3_1_G32, DType.Q3_1_G64, DType.Q3_1_G128];

    /// <summary>Every integer path this machine can run (each falls back to the next narrower where absent).</summary>
    private static readonly Int8Path[] Paths = [Int8Path.Scalar, Int8Path.Portable, Int8Path.V128, Int8Path.Avx2, Int8Path.AvxVnni];

    /// <summary>Rows off and on multiples of the interleaved groups (eight), one block and many.</summary>
    private static readonly (int Rows, int Cols)[] Shapes = [(1, 32), (3, 64), (5, 96), (8, 64), (13, 160), (17, 128), (70, 256), (9, 1536)];

    /// <summary>The shapes whose rows hold whole groups of the type (64 or 128 values for the wider INT4 groups).</summary>
    private static IEnumerable<(int Rows, int Cols)> ShapesFor(DType type) => Shapes.Where(s => s.Cols % type.BlockSize() == 0);

    private readonly WorkerPool _one = new(1);
    private readonly WorkerPool _two = new(2);

    public void Dispose()
    {
        _one.Dispose();
        _two.Dispose();
        GC.SuppressFinalize(this);
    }

    public static TheoryData<DType, int> PathCases()
    {
        var data = new TheoryData<DType, int>();
        foreach (var type in Types)
        {
            foreach (var path in Paths)
            {
                data.Add(type, (int)path);
            }
        }

        return data;
    }

    public static TheoryData<DType, VectorWidth> TypesAndWidths()
    {
        var data = new TheoryData<DType, VectorWidth>();
        foreach (var type in Types)
        {
            foreach (var width in AllWidths)
            {
                data.Add(type, width);
            }
        }

        return data;
    }

    private sealed class Problem
    {
        public required Tensor Weight;
        public required float[] X;
        public required float[]? Bias;
        public required int Tokens;

        public float[] Run(WorkerPool pool, Int8Path path)
        {
            var y = new float[Tokens * Weight.Rows];
            fixed (float* px = X, py = y, pb = Bias)
            {
                QuantizedMatMul.Compute(Weight, px, Tokens, py, Bias != null ? pb : null, pool, path);
            }

            return y;
        }

        public float[] Run(WorkerPool pool, VectorWidth width)
        {
            var y = new float[Tokens * Weight.Rows];
            fixed (float* px = X, py = y, pb = Bias)
            {
                using (KernelIsa.Force(width))
                {
                    MatMul.Compute(Weight, px, Tokens, py, Bias != null ? pb : null, pool, KernelIsa.Current, quantizeActivations: true);
                }
            }

            return y;
        }
    }

    private static Problem Make(DType type, int rows, int cols, int tokens, bool bias, int seed) => new()
    {
        Weight = MakeTensor(type, rows, cols, Random(rows * cols, seed, 0.5f)),
        X = Activations(tokens * cols, seed + 1),
        Bias = bias ? Random(rows, seed + 2, 1f) : null,
        Tokens = tokens,
    };

    /// <summary>Random activations with some blocks of zeros, of one spike, and of exact halves after scaling.</summary>
    private static float[] Activations(int n, int seed)
    {
        float[] x = Random(n, seed, 2f);
        for (int b = 0; b < n / 32; b++)
        {
            var block = x.AsSpan(b * 32, 32);
            switch (b % 5)
            {
                case 1:
                    block.Clear();
                    break;
                case 2:
                    block.Clear();
                    block[b % 32] = -3.5f;
                    break;
                case 3:
                    // amax 127 gives d = 1, id = 1: every k + 0.5 is a tie (away from zero: ±(k + 1)).
                    for (int j = 0; j < 32; j++)
                    {
                        block[j] = j == 0 ? 127f : (j % 2 == 0 ? 1 : -1) * (j + 0.5f);
                    }

                    break;
            }
        }

        return x;
    }

    [Theory]
    [MemberData(nameof(Widths), MemberType = typeof(KernelTestSupport))]
    public void ActivationQuantizationMatchesDequantizeFromFloats(VectorWidth width)
    {
        foreach (int n in new[] { 32, 64, 896, 4864 })
        {
            float[] x = Activations(n, n);
            byte[] expected = Dequantize.FromFloats(DType.Q8_0, x);
            int blocks = n / 32;
            var quants = new sbyte[n];
            var scales = new float[blocks];
            var sums = new int[blocks];
            fixed (float* px = x, ps = scales)
            fixed (sbyte* pq = quants)
            fixed (int* pu = sums)
            {
                QuantizeActivations.ToQ8_0(px, n, pq, ps, pu, width);
            }

            for (int b = 0; b < blocks; b++)
            {
                ushort d = (ushort)(expected[b * 34] | (expected[(b * 34) + 1] << 8));
                Assert.True(d == BitConverter.HalfToUInt16Bits((Half)scales[b]), $"{width} n={n} block {b}: scale {scales[b]}");
                Assert.Equal((float)BitConverter.UInt16BitsToHalf(d), scales[b]);
                int sum = 0;
                for (int j = 0; j < 32; j++)
                {
                    sbyte q = (sbyte)expected[(b * 34) + 2 + j];
                    Assert.True(q == quants[(b * 32) + j], $"{width} n={n} block {b} [{j}]: {quants[(b * 32) + j]} vs {q}");
                    sum += q;
                }

                Assert.Equal(sum, sums[b]);
            }
        }
    }

    [Fact]
    public void RoundingIsHalfAwayFromZeroEvenJustBelowAHalf()
    {
        // 0.49999997 · 1 must round to 0 (adding 0.5 first would give 1); 2.5 to 3, −2.5 to −3.
        float[] x = new float[32];
        x[0] = 127f;
        x[1] = 0.49999997f;
        x[2] = 2.5f;
        x[3] = -2.5f;
        x[4] = -0.49999997f;
        foreach (var width in AllWidths)
        {
            var quants = new sbyte[32];
            float scale;
            int sum;
            fixed (float* px = x)
            fixed (sbyte* pq = quants)
            {
                QuantizeActivations.ToQ8_0(px, 32, pq, &scale, &sum, width);
            }

            Assert.Equal(new sbyte[] { 127, 0, 3, -3, 0 }, quants.AsSpan(0, 5).ToArray());
            Assert.Equal(127, sum);
        }
    }

    [Fact]
    public void BlockDotsAreExactOnEveryImplementation()
    {
        // Eight rows' blocks interleaved as InterleavedWeights stores them, checked against plain loops over the
        // original blocks. Extremes included: −128 weights (not written by quantizers but valid int8), ±127 activations.
        var random = new Random(17);
        var w = new sbyte[8 * 32];
        var q = new byte[8 * 16];
        var x = new sbyte[32];
        var signedInterleaved = new byte[256];
        var nibbleInterleaved = new byte[128];
        for (int trial = 0; trial < 200; trial++)
        {
            for (int i = 0; i < w.Length; i++)
            {
                w[i] = trial % 4 == 0 ? (sbyte)(random.Next(2) == 0 ? -128 : 127) : (sbyte)random.Next(-128, 128);
            }

            random.NextBytes(q);
            if (trial % 4 == 2)
            {
                q.AsSpan().Fill(0xFF);
            }

            for (int i = 0; i < x.Length; i++)
            {
                x[i] = trial % 4 is 1 or 2 ? (sbyte)(random.Next(2) == 0 ? -127 : 127) : (sbyte)random.Next(-127, 128);
            }

            for (int r = 0; r < 8; r++)
            {
                for (int j = 0; j < 32; j++)
                {
                    signedInterleaved[(32 * (j / 4)) + (4 * r) + (j % 4)] = (byte)w[(r * 32) + j];
                }

                for (int j = 0; j < 16; j++)
                {
                    nibbleInterleaved[(32 * (j / 4)) + (4 * r) + (j % 4)] = q[(r * 16) + j];
                }
            }

            var signed = new int[8];
            var nibbles = new int[8];
            for (int r = 0; r < 8; r++)
            {
                for (int j = 0; j < 32; j++)
                {
                    signed[r] += w[(r * 32) + j] * x[j];
                    int nibble = j < 16 ? q[(r * 16) + j] & 15 : q[(r * 16) + j - 16] >> 4;
                    nibbles[r] += nibble * x[j];
                }
            }

            var expectedSigned = Vector256.Create(signed);
            var expectedNibbles = Vector256.Create(nibbles);
            fixed (sbyte* px = x)
            fixed (byte* ps = signedInterleaved, pn = nibbleInterleaved)
            {
                Check<ScalarInt8Dot>(ps, pn, px, expectedSigned, expectedNibbles);
                Check<PortableInt8Dot>(ps, pn, px, expectedSigned, expectedNibbles);
                Check<Vector128Int8Dot>(ps, pn, px, expectedSigned, expectedNibbles);
                Check<Avx2Int8Dot>(ps, pn, px, expectedSigned, expectedNibbles);
                Check<AvxVnniInt8Dot>(ps, pn, px, expectedSigned, expectedNibbles);
            }
        }

        static void Check<TDot>(byte* signedBlock, byte* nibbleBlock, sbyte* x, Vector256<int> signed, Vector256<int> nibbles)
            where TDot : struct, IInt8RowsDot
        {
            string name = typeof(TDot).Name;
            Assert.True(signed == TDot.Signed8(signedBlock, x), $"{name} Signed8");
            Assert.True(nibbles == TDot.Nibbles8(nibbleBlock, x), $"{name} Nibbles8");
            Assert.True(signed.GetLower() == TDot.Signed4(signedBlock, x), $"{name} Signed4 rows 0-3");
            Assert.True(signed.GetUpper() == TDot.Signed4(signedBlock + 16, x), $"{name} Signed4 rows 4-7");
            Assert.True(nibbles.GetLower() == TDot.Nibbles4(nibbleBlock, x), $"{name} Nibbles4 rows 0-3");
            Assert.True(nibbles.GetUpper() == TDot.Nibbles4(nibbleBlock + 16, x), $"{name} Nibbles4 rows 4-7");
        }
    }

    [Fact]
    public void FourTokenBlockDotsMatchOneTokenAtATime()
    {
        var random = new Random(23);
        var signedBlock = new byte[256];
        var nibbleBlock = new byte[128];
        const int stride = 96;
        var x = new sbyte[4 * stride];
        for (int trial = 0; trial < 50; trial++)
        {
            random.NextBytes(signedBlock);
            random.NextBytes(nibbleBlock);
            for (int i = 0; i < x.Length; i++)
            {
                x[i] = (sbyte)random.Next(-127, 128);
            }

            fixed (sbyte* px = x)
            fixed (byte* ps = signedBlock, pn = nibbleBlock)
            {
                Check<Avx2Int8Dot>(ps, pn, px);
                Check<AvxVnniInt8Dot>(ps, pn, px);
            }
        }

        static void Check<TDot>(byte* signedBlock, byte* nibbleBlock, sbyte* x)
            where TDot : struct, IInt8RowsDotX4
        {
            TDot.Signed8x4(signedBlock, x, stride, out var s0, out var s1, out var s2, out var s3);
            TDot.Nibbles8x4(nibbleBlock, x, stride, out var n0, out var n1, out var n2, out var n3);
            Vector256<int>[] signed = [s0, s1, s2, s3], nibbles = [n0, n1, n2, n3];
            for (int t = 0; t < 4; t++)
            {
                Assert.True(ScalarInt8Dot.Signed8(signedBlock, x + (t * stride)) == signed[t], $"{typeof(TDot).Name} Signed8x4 token {t}");
                Assert.True(ScalarInt8Dot.Nibbles8(nibbleBlock, x + (t * stride)) == nibbles[t], $"{typeof(TDot).Name} Nibbles8x4 token {t}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(PathCases))]
    public void FusedProductsEqualSeparateOnes(DType type, int path)
    {
        const int cols = 256;
        foreach (int tokens in new[] { 1, 6 })
        {
            var q = Make(type, 24, cols, tokens, true, 31);
            var k = Make(type, 13, cols, tokens, false, 32);
            var v = Make(type, 5, cols, tokens, true, 33);
            var expectedQ = q.Run(_two, (Int8Path)path);
            var expectedK = new Problem { Weight = k.Weight, X = q.X, Bias = null, Tokens = tokens }.Run(_two, (Int8Path)path);
            var expectedV = new Problem { Weight = v.Weight, X = q.X, Bias = v.Bias, Tokens = tokens }.Run(_two, (Int8Path)path);
            var yq = new float[expectedQ.Length];
            var yk = new float[expectedK.Length];
            var yv = new float[expectedV.Length];
            fixed (float* px = q.X, pq = yq, pk = yk, pv = yv, bq = q.Bias, bv = v.Bias)
            {
                QuantizedMatMul.ComputeFused([q.Weight, k.Weight, v.Weight], px, tokens, [(nint)pq, (nint)pk, (nint)pv], [(nint)bq, 0, (nint)bv], _two, (Int8Path)path);
            }

            AssertBitwiseEqual(expectedQ, yq, $"{type} {(Int8Path)path} q tokens={tokens}");
            AssertBitwiseEqual(expectedK, yk, $"{type} {(Int8Path)path} k tokens={tokens}");
            AssertBitwiseEqual(expectedV, yv, $"{type} {(Int8Path)path} v tokens={tokens}");
        }
    }

    [Fact]
    public void TheDefaultPathUsesTheBestInstructionsPresent()
    {
        var expected = AvxVnni.IsSupported ? Int8Path.AvxVnni : Avx2.IsSupported ? Int8Path.Avx2 : Int8Path.V128;
        Assert.Equal(expected, QuantizedMatMul.PathFor(VectorWidth.V256));
        Assert.Equal(expected, QuantizedMatMul.PathFor(VectorWidth.V512));
        Assert.Equal(Int8Path.V128, QuantizedMatMul.PathFor(VectorWidth.V128));
        Assert.Equal(Int8Path.Scalar, QuantizedMatMul.PathFor(VectorWidth.Scalar));
    }

    [Theory]
    [MemberData(nameof(PathCases))]
    public void EveryPathGivesTheScalarReferenceBitForBit(DType type, int path)
    {
        foreach (var (rows, cols) in ShapesFor(type))
        {
            foreach (int tokens in new[] { 1, 2, 7 })
            {
                var p = Make(type, rows, cols, tokens, tokens != 2, rows + cols + tokens);
                float[] reference = p.Run(_one, Int8Path.Scalar);
                AssertBitwiseEqual(reference, p.Run(_two, (Int8Path)path), $"{type} {(Int8Path)path} {rows}x{cols} tokens={tokens}");
                AssertBitwiseEqual(reference, p.Run(_one, (Int8Path)path), $"{type} {(Int8Path)path} {rows}x{cols} tokens={tokens} one thread");
            }
        }
    }

    [Fact]
    public void TheScalarReferenceIsTheDocumentedSum()
    {
        // Σ_b isum_b · (d_w · d_x) in block order from exact integers, plus the bias, recomputed here from the bytes.
        foreach (var type in new[] { DType.Q8_0, DType.Q4_0 })
        {
            var p = Make(type, 5, 160, 3, true, 23);
            float[] y = p.Run(_two, Int8Path.Scalar);
            int cols = 160, blocks = cols / 32, blockBytes = type == DType.Q8_0 ? 34 : 18;
            var weight = new ReadOnlySpan<byte>(p.Weight.Data, (int)(p.Weight.RowBytes * 5));
            for (int t = 0; t < 3; t++)
            {
                byte[] xq = Dequantize.FromFloats(DType.Q8_0, p.X.AsSpan(t * cols, cols));
                for (int o = 0; o < 5; o++)
                {
                    float sum = 0;
                    for (int b = 0; b < blocks; b++)
                    {
                        var wb = weight.Slice((int)(o * p.Weight.RowBytes) + (b * blockBytes), blockBytes);
                        int isum = 0;
                        for (int j = 0; j < 32; j++)
                        {
                            int wq = type == DType.Q8_0 ? (sbyte)wb[2 + j] : (j < 16 ? wb[2 + j] & 15 : wb[2 + j - 16] >> 4) - 8;
                            isum += wq * (sbyte)xq[(b * 34) + 2 + j];
                        }

                        float dw = (float)BitConverter.UInt16BitsToHalf((ushort)(wb[0] | (wb[1] << 8)));
                        float dx = (float)BitConverter.UInt16BitsToHalf((ushort)(xq[b * 34] | (xq[(b * 34) + 1] << 8)));
                        sum += isum * (dw * dx);
                    }

                    AssertBitwiseEqual([sum + p.Bias![o]], [y[(t * 5) + o]], $"{type} t={t} o={o}");
                }
            }
        }
    }

    public static TheoryData<DType, int> Int3PathCases()
    {
        var data = new TheoryData<DType, int>();
        foreach (var type in Types.Where(t => t.IsInt3Group()))
        {
            foreach (var path in Paths)
            {
                data.Add(type, (int)path);
            }
        }

        return data;
    }

    /// <summary>The INT4 group type of the same group size, and its bytes for the same d, m and codes as an INT3 matrix.</summary>
    private static Tensor AsInt4(Tensor int3)
    {
        var type = int3.Type switch
        {
            DType.Q3_1_G32 => DType.Q4_1,
            DType.Q3_1_G64 => DType.Q4_1_G64,
            _ => DType.Q4_1_G128,
        };
        int groups = (int)(int3.ElementCount / type.BlockSize()), subBlocks = type.BlockSize() / 32;
        var source = new ReadOnlySpan<byte>(int3.Data, (int)int3.ByteSize);
        var bytes = new byte[type.ByteCount(int3.ElementCount)];
        Span<byte> codes = stackalloc byte[32];
        for (int g = 0; g < groups; g++)
        {
            var from = source.Slice(g * int3.Type.BlockBytes(), int3.Type.BlockBytes());
            var to = bytes.AsSpan(g * type.BlockBytes(), type.BlockBytes());
            from[..4].CopyTo(to);
            for (int s = 0; s < subBlocks; s++)
            {
                GroupCodes.Unpack(int3.Type, from.Slice(4 + (12 * s), 12), codes);
                GroupCodes.Pack(type, codes, to.Slice(4 + (16 * s), 16));
            }
        }

        var buffer = new NativeBuffer(bytes.Length);
        bytes.CopyTo(new Span<byte>(buffer.Pointer, bytes.Length));
        return new Tensor($"w{type}", type, [int3.Rows, int3.Columns], buffer.Pointer, buffer);
    }

    [Theory]
    [MemberData(nameof(Int3PathCases))]
    public void Int3GivesTheInt4KernelsBitsForTheSameCodes(DType type, int path)
    {
        // INT3 runs on the INT4 kernels after unpacking: the same d, m and codes stored as INT4 give the same bits on
        // every path, and the INT3 scalar reference (which reads the 3-bit codes in place) agrees with them.
        foreach (var (rows, cols) in ShapesFor(type))
        {
            foreach (int tokens in new[] { 1, 5 })
            {
                var p = Make(type, rows, cols, tokens, tokens == 1, (3 * rows) + cols + tokens);
                var q = new Problem { Weight = AsInt4(p.Weight), X = p.X, Bias = p.Bias, Tokens = tokens };
                string context = $"{type} {(Int8Path)path} {rows}x{cols} tokens={tokens}";
                Assert.Equal(p.Weight.ToFloatArray(), q.Weight.ToFloatArray());

                // The unpacked interleaved form is the INT4 one byte for byte (so it takes INT4's memory).
                var int3Form = InterleavedWeights.For(p.Weight, _two);
                var int4Form = InterleavedWeights.For(q.Weight, _two);
                Assert.Equal(int4Form.GroupStride, int3Form.GroupStride);
                Assert.True(new ReadOnlySpan<byte>(int4Form.Data, (int)(int4Form.GroupStride * int4Form.Groups))
                    .SequenceEqual(new ReadOnlySpan<byte>(int3Form.Data, (int)(int3Form.GroupStride * int3Form.Groups))), context + " interleaved bytes");
                float[] reference = q.Run(_one, Int8Path.Scalar);
                AssertBitwiseEqual(reference, p.Run(_one, Int8Path.Scalar), context + " scalar");
                AssertBitwiseEqual(reference, p.Run(_two, (Int8Path)path), context);
                AssertBitwiseEqual(q.Run(_two, (Int8Path)path), p.Run(_two, (Int8Path)path), context + " int4");
            }
        }
    }

    [Fact]
    public void TheInt3ScalarReferenceIsTheDocumentedSum()
    {
        // Σ_b (isum_b · (d_w · d_x,b)) + (m_w · (d_x,b · Σx_b)) in block order, isum_b over the codes the dequantizer reads
        // (value = q · d + m), recomputed here from the bytes.
        var codes = new byte[32];
        foreach (var type in Types.Where(t => t.IsInt3Group()))
        {
            int rows = 5, cols = 256, blocks = cols / 32;
            var p = Make(type, rows, cols, 3, true, 29);
            float[] y = p.Run(_two, Int8Path.Scalar);
            var weight = new ReadOnlySpan<byte>(p.Weight.Data, (int)(p.Weight.RowBytes * rows));
            int perGroup = type.BlockSize() / 32;
            for (int t = 0; t < 3; t++)
            {
                byte[] xq = Dequantize.FromFloats(DType.Q8_0, p.X.AsSpan(t * cols, cols));
                for (int o = 0; o < rows; o++)
                {
                    float sum = 0;
                    for (int b = 0; b < blocks; b++)
                    {
                        var group = weight.Slice((int)(o * p.Weight.RowBytes) + (b / perGroup * type.BlockBytes()), type.BlockBytes());
                        GroupCodes.Unpack(type, group.Slice(4 + (12 * (b % perGroup)), 12), codes);
                        int isum = 0, xsum = 0;
                        for (int j = 0; j < 32; j++)
                        {
                            Assert.InRange(codes[j], 0, 7);
                            isum += codes[j] * (sbyte)xq[(b * 34) + 2 + j];
                            xsum += (sbyte)xq[(b * 34) + 2 + j];
                        }

                        float dw = (float)BitConverter.UInt16BitsToHalf((ushort)(group[0] | (group[1] << 8)));
                        float mw = (float)BitConverter.UInt16BitsToHalf((ushort)(group[2] | (group[3] << 8)));
                        float dx = (float)BitConverter.UInt16BitsToHalf((ushort)(xq[b * 34] | (xq[(b * 34) + 1] << 8)));
                        sum += (isum * (dw * dx)) + (mw * (dx * xsum));
                    }

                    AssertBitwiseEqual([sum + p.Bias![o]], [y[(t * rows) + o]], $"{type} t={t} o={o}");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(TypesAndWidths))]
    public void EveryWidthThroughMatMulGivesTheScalarReference(DType type, VectorWidth width)
    {
        foreach (var (rows, cols) in ShapesFor(type))
        {
            var p = Make(type, rows, cols, 3, true, 7 * (rows + cols));
            AssertBitwiseEqual(p.Run(_one, Int8Path.Scalar), p.Run(_two, width), $"{type} {width} {rows}x{cols}");
        }
    }

    [Theory]
    [MemberData(nameof(TypesAndWidths))]
    public void IdenticalAcrossThreadCountsAndBatching(DType type, VectorWidth width)
    {
        foreach (var (rows, cols) in ShapesFor(type))
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
    public void ApproximatesTheFloatProductWithinTheActivationQuantizationError(DType type, VectorWidth width)
    {
        // Each activation becomes q · d16 with |q · d − x| ≤ d / 2 and |q| · |d16 − d| ≤ 127 · d · 2^−11, so
        // |Σ w · (x̂ − x)| ≤ Σ |w| · 0.562 d per block; float rounding adds far less than 1e-5 of Σ |w · x|.
        foreach (var (rows, cols) in ShapesFor(type))
        {
            var p = Make(type, rows, cols, 3, true, 11 * (rows + cols));
            float[] y = p.Run(_two, width);
            float[] w = p.Weight.ToFloatArray();
            for (int t = 0; t < p.Tokens; t++)
            {
                for (int o = 0; o < rows; o++)
                {
                    double sum = 0, magnitude = 0, bound = 0;
                    for (int b = 0; b < cols / 32; b++)
                    {
                        double amax = 0;
                        for (int j = 0; j < 32; j++)
                        {
                            amax = Math.Max(amax, Math.Abs(p.X[(t * cols) + (b * 32) + j]));
                        }

                        for (int j = 0; j < 32; j++)
                        {
                            int i = (b * 32) + j;
                            double term = (double)w[(o * cols) + i] * p.X[(t * cols) + i];
                            sum += term;
                            magnitude += Math.Abs(term);
                            bound += Math.Abs(w[(o * cols) + i]) * amax / 127 * 0.5625;
                        }
                    }

                    double expected = sum + p.Bias![o];
                    double tolerance = bound + (1e-5 * (magnitude + Math.Abs(p.Bias[o]))) + 1e-30;
                    int k = (t * rows) + o;
                    Assert.True(Math.Abs(y[k] - expected) <= tolerance, $"{type} {width} {rows}x{cols} t={t} o={o}: {y[k]} vs {expected} (bound {tolerance})");
                }
            }
        }
    }

    [Fact]
    public void DecodeAndPrefillAllocateNothingOnceWarm()
    {
        foreach (var type in Types)
        {
            var decode = Make(type, 64, 512, 1, true, 5);
            var prefill = Make(type, 64, 512, 5, false, 6);
            var y = new float[5 * 64];
            var path = QuantizedMatMul.PathFor(KernelIsa.Current);
            fixed (float* px1 = decode.X, px5 = prefill.X, py = y, pb = decode.Bias)
            {
                QuantizedMatMul.Compute(decode.Weight, px1, 1, py, pb, _two, path);
                QuantizedMatMul.Compute(prefill.Weight, px5, 5, py, null, _two, path);
                // The least of a few rounds: the runtime may allocate once while a hot loop tiers up; a kernel
                // that allocates per call never reaches zero.
                long least = long.MaxValue;
                for (int round = 0; round < 5 && least != 0; round++)
                {
                    long before = GC.GetAllocatedBytesForCurrentThread();
                    QuantizedMatMul.Compute(decode.Weight, px1, 1, py, pb, _two, path);
                    QuantizedMatMul.Compute(prefill.Weight, px5, 5, py, null, _two, path);
                    least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
                }

                Assert.Equal(0, least);
            }
        }
    }
}
