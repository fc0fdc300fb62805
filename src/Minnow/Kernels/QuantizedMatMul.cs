using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Minnow.Tensors;

namespace Minnow.Kernels;

/// <summary>The instructions of the integer block dot products (<see cref="IInt8BlockDot"/>).</summary>
internal enum Int8Path
{
    /// <summary>The scalar reference.</summary>
    Scalar,

    /// <summary>Portable Vector128 operations only.</summary>
    Portable,

    /// <summary>SSSE3, or Arm64 SDOT / widening multiplies.</summary>
    V128,

    /// <summary>AVX2.</summary>
    Avx2,

    /// <summary>AVX-VNNI (falls back to AVX2 where absent).</summary>
    AvxVnni,
}

/// <summary>
/// y[t, o] = Σ_i x[t, i] · W[o, i] (+ bias[o]) for Q8_0 and Q4_0 weights with the activations quantized to Q8_0,
/// as llama.cpp's <c>ggml_vec_dot_q8_0_q8_0</c> and <c>ggml_vec_dot_q4_0_q8_0</c>: each token's row is quantized
/// once per call (<see cref="QuantizeActivations"/>) on the calling thread, then the pool's workers multiply groups
/// of four weight rows by every token with exact integer dot products per block.
/// <para>
/// The order of the float arithmetic is fixed and the same on every path: for each output, a float sum starts at
/// zero and, block by block in order, adds isum_b · (d_w,b · d_x,b) (three roundings: the scale product, the
/// product, the sum; isum_b, an integer below 2^20, converts exactly), then the bias is added. The integer sums
/// are exact, so every instruction set, thread count and token batching gives the scalar reference's bits.
/// </para>
/// </summary>
internal static unsafe class QuantizedMatMul
{
    private const int GroupRows = 4;
    private const int BlockSize = QuantizeActivations.BlockSize;

    private struct Job
    {
        public byte* Weight;
        public long RowBytes;
        public int Blocks;
        public int Rows;
        public sbyte* Quants;
        public float* Scales;
        public int* Sums;
        public float* Y;
        public float* Bias;
        public int Tokens;
    }

    private struct ActivationTag;

    private struct GroupTag;

    /// <summary>True for the weight types this kernel multiplies.</summary>
    public static bool Supports(Tensor weight) =>
        weight.Type is DType.Q8_0 or DType.Q4_0 && weight.Columns % BlockSize == 0;

    /// <summary>The path for a vector width: the best integer instructions the hardware has within it.</summary>
    public static Int8Path PathFor(VectorWidth width) => width switch
    {
        VectorWidth.Scalar => Int8Path.Scalar,
        VectorWidth.V128 => Int8Path.V128,
        _ => AvxVnni.IsSupported ? Int8Path.AvxVnni : Avx2.IsSupported ? Int8Path.Avx2 : Int8Path.V128,
    };

    public static void Compute(Tensor weight, float* x, int tokens, float* y, float* bias, WorkerPool pool, Int8Path path)
    {
        if (!Supports(weight))
        {
            ThrowType(weight);
        }

        if (tokens <= 0 || weight.Rows == 0)
        {
            return;
        }

        int n = weight.Columns;
        int blocks = n / BlockSize;

        // One buffer on the calling thread, read by every worker: scales, sums, then the quants.
        long perToken = (2L * blocks) + (n / sizeof(float));
        float* buffer = Scratch<ActivationTag>.Get(checked((int)(perToken * tokens)));
        float* scales = buffer;
        int* sums = (int*)(buffer + ((long)blocks * tokens));
        sbyte* quants = (sbyte*)(buffer + (2L * blocks * tokens));
        VectorWidth quantizeWidth = path == Int8Path.Scalar ? VectorWidth.Scalar : path == Int8Path.V128 || path == Int8Path.Portable ? VectorWidth.V128 : VectorWidth.V256;
        for (int t = 0; t < tokens; t++)
        {
            QuantizeActivations.ToQ8_0(
                x + ((long)t * n), n, quants + ((long)t * n), scales + ((long)t * blocks), sums + ((long)t * blocks), quantizeWidth);
        }

        var job = new Job
        {
            Weight = weight.Data,
            RowBytes = weight.RowBytes,
            Blocks = blocks,
            Rows = weight.Rows,
            Quants = quants,
            Scales = scales,
            Sums = sums,
            Y = y,
            Bias = bias,
            Tokens = tokens,
        };
        int groups = (job.Rows + GroupRows - 1) / GroupRows;

        // About four blocks per thread for balance, but no block under ~64K multiply-adds.
        long work = (long)GroupRows * n * tokens;
        int minGrain = (int)Math.Clamp((1L << 16) / Math.Max(1, work), 1, groups);
        int grain = Math.Max(minGrain, groups / (pool.ThreadCount * 4));
        pool.For(groups, grain, weight.Type == DType.Q8_0 ? Select<Q8_0Int8Weight>(path) : Select<Q4_0Int8Weight>(path), &job);
    }

    private static delegate*<void*, int, int, void> Select<TWeight>(Int8Path path)
        where TWeight : struct, IInt8Weight => path switch
        {
            Int8Path.Scalar => &RunGroupsScalar<TWeight>,
            Int8Path.Portable => &RunGroups<TWeight, PortableInt8Dot>,
            Int8Path.V128 => &RunGroups<TWeight, Vector128Int8Dot>,
            Int8Path.Avx2 => &RunGroups<TWeight, Avx2Int8Dot>,
            _ => &RunGroups<TWeight, AvxVnniInt8Dot>,
        };

    // ---- Scalar reference ----

    private static void RunGroupsScalar<TWeight>(void* context, int start, int end)
        where TWeight : struct, IInt8Weight
    {
        ref Job job = ref *(Job*)context;
        int rowEnd = Math.Min(end * GroupRows, job.Rows);
        for (int o = start * GroupRows; o < rowEnd; o++)
        {
            byte* row = job.Weight + (o * job.RowBytes);
            float b = job.Bias != null ? job.Bias[o] : 0f;
            for (int t = 0; t < job.Tokens; t++)
            {
                long a = (long)t * job.Blocks;
                job.Y[((long)t * job.Rows) + o] = DotScalar<TWeight>(row, job.Quants + (a * BlockSize), job.Scales + a, job.Sums + a, job.Blocks) + b;
            }
        }
    }

    /// <summary>Σ_b isum_b · (d_w,b · d_x,b) in block order, isum_b the exact integer dot of block b.</summary>
    internal static float DotScalar<TWeight>(byte* row, sbyte* quants, float* scales, int* sums, int blocks)
        where TWeight : struct, IInt8Weight
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++)
        {
            byte* block = row + ((long)b * TWeight.BlockBytes);
            int isum = TWeight.Dot(block, quants + (b * BlockSize), sums[b]);
            float scale = HalfConversion.ToSingle(Unsafe.ReadUnaligned<ushort>(block)) * scales[b];
            sum += isum * scale;
        }

        return sum;
    }

    // ---- Vector paths ----

    private static void RunGroups<TWeight, TDot>(void* context, int start, int end)
        where TWeight : struct, IInt8Weight
        where TDot : struct, IInt8BlockDot
    {
        ref Job job = ref *(Job*)context;
        int rows = job.Rows;
        int rowEnd = Math.Min(end * GroupRows, rows);

        // Several tokens: each group's blocks are unpacked once into a per-thread buffer, block by block with the
        // four rows side by side (32 bytes each), and the four scales of every block converted once.
        float* groupScales = null;
        byte* unpacked = null;
        if (job.Tokens > 1)
        {
            groupScales = Scratch<GroupTag>.Get((GroupRows * job.Blocks) + (GroupRows * BlockSize * job.Blocks / sizeof(float)));
            unpacked = (byte*)(groupScales + (GroupRows * job.Blocks));
        }

        for (int r = start * GroupRows; r < rowEnd; r += GroupRows)
        {
            // A short last group repeats its last row in the missing lanes and stores only the real ones.
            int count = Math.Min(GroupRows, rowEnd - r);
            byte* w0 = job.Weight + (r * job.RowBytes);
            byte* w1 = job.Weight + ((r + Math.Min(1, count - 1)) * job.RowBytes);
            byte* w2 = job.Weight + ((r + Math.Min(2, count - 1)) * job.RowBytes);
            byte* w3 = job.Weight + ((r + Math.Min(3, count - 1)) * job.RowBytes);
            var bias = Vector128<float>.Zero;
            if (job.Bias != null)
            {
                bias = count == GroupRows
                    ? Vector128.Load(job.Bias + r)
                    : Vector128.Create(job.Bias[r], job.Bias[r + Math.Min(1, count - 1)], job.Bias[r + Math.Min(2, count - 1)], job.Bias[r + Math.Min(3, count - 1)]);
            }

            if (unpacked != null)
            {
                Unpack4<TWeight>(w0, w1, w2, w3, job.Blocks, groupScales, unpacked);
            }

            int t = 0;
            if (TDot.PairsTokens && unpacked != null)
            {
                // Two tokens at a time: every unpacked weight vector is loaded once for both.
                for (; t + 2 <= job.Tokens; t += 2)
                {
                    long a = (long)t * job.Blocks, b = a + job.Blocks;
                    var s = DotUnpacked4x2<TWeight, TDot>(
                        unpacked, groupScales, job.Quants + (a * BlockSize), job.Quants + (b * BlockSize), job.Scales + a, job.Scales + b, job.Sums + a, job.Sums + b, job.Blocks);
                    Store(ref job, t, r, count, s.GetLower() + bias);
                    Store(ref job, t + 1, r, count, s.GetUpper() + bias);
                }
            }

            for (; t < job.Tokens; t++)
            {
                long a = (long)t * job.Blocks;
                sbyte* quants = job.Quants + (a * BlockSize);
                var s = unpacked != null
                    ? DotUnpacked4<TWeight, TDot>(unpacked, groupScales, quants, job.Scales + a, job.Sums + a, job.Blocks)
                    : Dot4<TWeight, TDot>(w0, w1, w2, w3, quants, job.Scales + a, job.Sums + a, job.Blocks);
                Store(ref job, t, r, count, s + bias);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(ref Job job, int t, int r, int count, Vector128<float> s)
    {
        float* y = job.Y + ((long)t * job.Rows) + r;
        if (count == GroupRows)
        {
            s.Store(y);
        }
        else
        {
            for (int k = 0; k < count; k++)
            {
                y[k] = s.GetElement(k);
            }
        }
    }

    /// <summary>Four rows times one token: each lane follows <see cref="DotScalar"/>'s order exactly.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> Dot4<TWeight, TDot>(byte* w0, byte* w1, byte* w2, byte* w3, sbyte* quants, float* scales, int* sums, int blocks)
        where TWeight : struct, IInt8Weight
        where TDot : struct, IInt8BlockDot
    {
        var acc = Vector128<float>.Zero;
        for (int b = 0; b < blocks; b++)
        {
            long offset = (long)b * TWeight.BlockBytes;
            byte* p0 = w0 + offset, p1 = w1 + offset, p2 = w2 + offset, p3 = w3 + offset;
            Vector128<int> isum = TWeight.Dot4<TDot>(p0, p1, p2, p3, quants + (b * BlockSize), sums[b]);
            Vector128<float> scale = HalfConversion.ToSingle(Vector128.Create(
                (int)Unsafe.ReadUnaligned<short>(p0), Unsafe.ReadUnaligned<short>(p1), Unsafe.ReadUnaligned<short>(p2), Unsafe.ReadUnaligned<short>(p3)));
            acc += Vector128.ConvertToSingle(isum) * (scale * Vector128.Create(scales[b]));
        }

        return acc;
    }

    /// <summary>
    /// Converts four rows' block scales (as <see cref="Dot4"/> does) and unpacks their quants
    /// (<see cref="IInt8Weight.Unpack"/>) into <paramref name="unpacked"/>: block b's rows at 128b, 128b + 32, ….
    /// </summary>
    private static void Unpack4<TWeight>(byte* w0, byte* w1, byte* w2, byte* w3, int blocks, float* scales, byte* unpacked)
        where TWeight : struct, IInt8Weight
    {
        for (int b = 0; b < blocks; b++)
        {
            long offset = (long)b * TWeight.BlockBytes;
            byte* p0 = w0 + offset, p1 = w1 + offset, p2 = w2 + offset, p3 = w3 + offset;
            HalfConversion.ToSingle(Vector128.Create(
                (int)Unsafe.ReadUnaligned<short>(p0), Unsafe.ReadUnaligned<short>(p1), Unsafe.ReadUnaligned<short>(p2), Unsafe.ReadUnaligned<short>(p3)))
                .Store(scales + (GroupRows * b));
            byte* u = unpacked + (b * GroupRows * BlockSize);
            TWeight.Unpack(p0, u);
            TWeight.Unpack(p1, u + BlockSize);
            TWeight.Unpack(p2, u + (2 * BlockSize));
            TWeight.Unpack(p3, u + (3 * BlockSize));
        }
    }

    /// <summary>Four unpacked rows times one token: the same arithmetic, in the same order, as <see cref="Dot4"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> DotUnpacked4<TWeight, TDot>(byte* unpacked, float* weightScales, sbyte* quants, float* scales, int* sums, int blocks)
        where TWeight : struct, IInt8Weight
        where TDot : struct, IInt8BlockDot
    {
        var acc = Vector128<float>.Zero;
        for (int b = 0; b < blocks; b++)
        {
            Vector128<int> isum = TWeight.DotUnpacked4<TDot>(unpacked + (b * GroupRows * BlockSize), quants + (b * BlockSize), sums[b]);
            acc += Vector128.ConvertToSingle(isum) * (Vector128.Load(weightScales + (GroupRows * b)) * Vector128.Create(scales[b]));
        }

        return acc;
    }

    /// <summary>
    /// Four unpacked rows times two tokens, [token a's four sums, token b's]: lane for lane the arithmetic of
    /// <see cref="DotUnpacked4"/>, so the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> DotUnpacked4x2<TWeight, TDot>(
        byte* unpacked, float* weightScales, sbyte* quantsA, sbyte* quantsB, float* scalesA, float* scalesB, int* sumsA, int* sumsB, int blocks)
        where TWeight : struct, IInt8Weight
        where TDot : struct, IInt8BlockDot
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++)
        {
            Vector256<int> isum = TWeight.DotUnpacked4x2<TDot>(
                unpacked + (b * GroupRows * BlockSize), quantsA + (b * BlockSize), quantsB + (b * BlockSize), sumsA[b], sumsB[b]);
            var w = Vector128.Load(weightScales + (GroupRows * b));
            var x = Vector256.Create(Vector128.Create(scalesA[b]), Vector128.Create(scalesB[b]));
            acc += Vector256.ConvertToSingle(isum) * (Vector256.Create(w, w) * x);
        }

        return acc;
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowType(Tensor weight) =>
        throw new NotSupportedException($"Integer matrix products need Q8_0 or Q4_0 weights with whole blocks, not {weight.Type} [{weight.Rows}, {weight.Columns}].");
}

/// <summary>A block format the integer kernels read: the exact integer dot of one block with 32 activation quants.</summary>
internal unsafe interface IInt8Weight
{
    static abstract int BlockBytes { get; }

    /// <summary>Σ_j w[j] · x[j] over one block (the scalar reference); <paramref name="xsum"/> = Σ_j x[j].</summary>
    static abstract int Dot(byte* block, sbyte* x, int xsum);

    /// <summary>The same for four blocks (one per row), through <typeparamref name="TDot"/>'s instructions.</summary>
    static abstract Vector128<int> Dot4<TDot>(byte* b0, byte* b1, byte* b2, byte* b3, sbyte* x, int xsum)
        where TDot : struct, IInt8BlockDot;

    /// <summary>Writes a block's 32 quants in the form <see cref="DotUnpacked4"/> multiplies (for reuse over tokens).</summary>
    static abstract void Unpack(byte* block, byte* destination);

    /// <summary><see cref="Dot4"/> for four unpacked blocks, 32 bytes apart.</summary>
    static abstract Vector128<int> DotUnpacked4<TDot>(byte* unpacked, sbyte* x, int xsum)
        where TDot : struct, IInt8BlockDot;

    /// <summary><see cref="DotUnpacked4"/> for two tokens at once (where <see cref="IInt8BlockDot.PairsTokens"/>).</summary>
    static abstract Vector256<int> DotUnpacked4x2<TDot>(byte* unpacked, sbyte* xa, sbyte* xb, int sumA, int sumB)
        where TDot : struct, IInt8BlockDot;
}

/// <summary>Q8_0: fp16 d, then 32 signed quants.</summary>
internal readonly unsafe struct Q8_0Int8Weight : IInt8Weight
{
    public static int BlockBytes => 34;

    public static int Dot(byte* block, sbyte* x, int xsum) => ScalarInt8Dot.Signed((sbyte*)(block + 2), x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Dot4<TDot>(byte* b0, byte* b1, byte* b2, byte* b3, sbyte* x, int xsum)
        where TDot : struct, IInt8BlockDot =>
        TDot.Signed((sbyte*)(b0 + 2), (sbyte*)(b1 + 2), (sbyte*)(b2 + 2), (sbyte*)(b3 + 2), x);

    /// <summary>The quants as they are.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Unpack(byte* block, byte* destination) => Unsafe.CopyBlockUnaligned(destination, block + 2, 32);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> DotUnpacked4<TDot>(byte* unpacked, sbyte* x, int xsum)
        where TDot : struct, IInt8BlockDot =>
        TDot.Signed((sbyte*)unpacked, (sbyte*)(unpacked + 32), (sbyte*)(unpacked + 64), (sbyte*)(unpacked + 96), x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotUnpacked4x2<TDot>(byte* unpacked, sbyte* xa, sbyte* xb, int sumA, int sumB)
        where TDot : struct, IInt8BlockDot => TDot.Signed2((sbyte*)unpacked, xa, xb);
}

/// <summary>
/// Q4_0: fp16 d, then 16 bytes of nibbles; Σ (nibble − 8) · x = Σ nibble · x − 8 · Σ x, so the vector bodies
/// multiply the unsigned nibbles directly (llama.cpp's q8_1 trick, with Σ x from the quantizer).
/// </summary>
internal readonly unsafe struct Q4_0Int8Weight : IInt8Weight
{
    public static int BlockBytes => 18;

    public static int Dot(byte* block, sbyte* x, int xsum)
    {
        byte* q = block + 2;
        int sum = 0;
        for (int j = 0; j < 16; j++)
        {
            sum += (((q[j] & 0x0F) - 8) * x[j]) + (((q[j] >> 4) - 8) * x[j + 16]);
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Dot4<TDot>(byte* b0, byte* b1, byte* b2, byte* b3, sbyte* x, int xsum)
        where TDot : struct, IInt8BlockDot =>
        TDot.Nibbles(b0 + 2, b1 + 2, b2 + 2, b3 + 2, x) - Vector128.Create(8 * xsum);

    /// <summary>The 32 nibbles (0..15, before the −8) in value order, one per byte.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Unpack(byte* block, byte* destination)
    {
        var v = Vector128.Load(block + 2);
        (v & Vector128.Create((byte)0x0F)).Store(destination);
        (v >>> 4).Store(destination + 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> DotUnpacked4<TDot>(byte* unpacked, sbyte* x, int xsum)
        where TDot : struct, IInt8BlockDot =>
        TDot.Unsigned(unpacked, unpacked + 32, unpacked + 64, unpacked + 96, x) - Vector128.Create(8 * xsum);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotUnpacked4x2<TDot>(byte* unpacked, sbyte* xa, sbyte* xb, int sumA, int sumB)
        where TDot : struct, IInt8BlockDot =>
        TDot.Unsigned2(unpacked, xa, xb) - Vector256.Create(Vector128.Create(8 * sumA), Vector128.Create(8 * sumB));
}
