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
/// of eight weight rows, interleaved once (<see cref="InterleavedWeights"/>), by every token with exact integer dot
/// products per block, each row's sum in its own vector lane.
/// <para>
/// The order of the float arithmetic is fixed and the same on every path: for each output, a float sum starts at
/// zero and, block by block in order, adds isum_b · (d_w,b · d_x,b) (three roundings: the scale product, the
/// product, the sum; isum_b, an integer below 2^20, converts exactly), then the bias is added. The integer sums
/// are exact, so every instruction set, thread count and token batching gives the scalar reference's bits.
/// </para>
/// </summary>
internal static unsafe class QuantizedMatMul
{
    private const int GroupRows = InterleavedWeights.GroupRows;
    private const int BlockSize = QuantizeActivations.BlockSize;

    private struct Job
    {
        public byte* Weight;
        public long RowBytes;
        public byte* Interleaved;
        public long BlockStride;
        public long GroupStride;
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

    /// <summary>True for the weight types this kernel multiplies.</summary>
    public static bool Supports(Tensor weight) =>
        (weight.Type is DType.Q8_0 or DType.Q4_0 || weight.Type.IsIntGroup()) && weight.Columns % weight.Type.BlockSize() == 0;

    /// <summary>The path for a vector width: the best integer instructions the hardware has within it.</summary>
    public static Int8Path PathFor(VectorWidth width) => width switch
    {
        VectorWidth.Scalar => Int8Path.Scalar,
        VectorWidth.V128 => Int8Path.V128,
        _ => AvxVnni.IsSupported ? Int8Path.AvxVnni : Avx2.IsSupported ? Int8Path.Avx2 : Int8Path.V128,
    };

    public static void Compute(Tensor weight, float* x, int tokens, float* y, float* bias, WorkerPool pool, Int8Path path)
    {
        nint yPointer = (nint)y, biasPointer = (nint)bias;
        ComputeFused(new ReadOnlySpan<Tensor>(in weight), x, tokens, new ReadOnlySpan<nint>(in yPointer), new ReadOnlySpan<nint>(in biasPointer), pool, path);
    }

    /// <summary>Whether <see cref="ComputeFused"/> takes these weights together: all supported, of one type and width.</summary>
    public static bool CanFuse(ReadOnlySpan<Tensor> weights)
    {
        foreach (var w in weights)
        {
            if (!Supports(w) || w.Type != weights[0].Type || w.Columns != weights[0].Columns)
            {
                return false;
            }
        }

        return weights.Length > 0;
    }

    /// <summary>
    /// y_k = W_k · x (+ bias_k) for several weights that read the same input (a layer's q, k and v projections):
    /// the activations are quantized once and all the products share one pass of the pool (one wake-up of the
    /// workers instead of one per matrix). Each output is what <see cref="Compute"/> gives for its weight alone.
    /// </summary>
    public static void ComputeFused(ReadOnlySpan<Tensor> weights, float* x, int tokens, ReadOnlySpan<nint> ys, ReadOnlySpan<nint> biases, WorkerPool pool, Int8Path path)
    {
        if (!CanFuse(weights))
        {
            ThrowType(weights[0]);
        }

        if (tokens <= 0)
        {
            return;
        }

        int n = weights[0].Columns;
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

        Job* jobs = stackalloc Job[weights.Length];
        int* firstGroups = stackalloc int[weights.Length + 1];
        firstGroups[0] = 0;
        for (int k = 0; k < weights.Length; k++)
        {
            var weight = weights[k];
            jobs[k] = new Job
            {
                Weight = weight.Data,
                RowBytes = weight.RowBytes,
                Blocks = blocks,
                Rows = weight.Rows,
                Quants = quants,
                Scales = scales,
                Sums = sums,
                Y = (float*)ys[k],
                Bias = (float*)biases[k],
                Tokens = tokens,
            };
            if (path != Int8Path.Scalar && weight.Rows > 0)
            {
                var interleaved = InterleavedWeights.For(weight, pool);
                jobs[k].Interleaved = interleaved.Data;
                jobs[k].BlockStride = interleaved.BlockStride;
                jobs[k].GroupStride = interleaved.GroupStride;
            }

            firstGroups[k + 1] = firstGroups[k] + ((weight.Rows + GroupRows - 1) / GroupRows);
        }

        int groups = firstGroups[weights.Length];
        if (groups == 0)
        {
            return;
        }

        var fused = new FusedJob
        {
            Jobs = jobs,
            FirstGroups = firstGroups,
            Count = weights.Length,
            Body = weights[0].Type switch
            {
                DType.Q8_0 => Select<Q8_0Int8Weight>(path),
                DType.Q4_0 => Select<Q4_0Int8Weight>(path),
                DType.Q4_1 => Select<Q4_1Int8Weight<Group32>>(path),
                DType.Q4_1_G64 => Select<Q4_1Int8Weight<Group64>>(path),
                DType.Q4_1_G128 => Select<Q4_1Int8Weight<Group128>>(path),
                DType.Q3_1_G32 => Select<Q3_1Int8Weight<Group32>>(path),
                DType.Q3_1_G64 => Select<Q3_1Int8Weight<Group64>>(path),
                _ => Select<Q3_1Int8Weight<Group128>>(path),
            },
        };

        // About four blocks per thread for balance, but no block under ~64K multiply-adds.
        long work = (long)GroupRows * n * tokens;
        int minGrain = (int)Math.Clamp((1L << 16) / Math.Max(1, work), 1, groups);
        int grain = Math.Max(minGrain, groups / (pool.ThreadCount * 4));
        if (weights.Length == 1)
        {
            pool.For(groups, grain, fused.Body, jobs);
        }
        else
        {
            pool.For(groups, grain, &RunFused, &fused);
        }
    }

    /// <summary>Several weights' row groups numbered one after the other.</summary>
    private struct FusedJob
    {
        public Job* Jobs;
        public int* FirstGroups;
        public int Count;
        public delegate*<void*, int, int, void> Body;
    }

    private static void RunFused(void* context, int start, int end)
    {
        ref FusedJob fused = ref *(FusedJob*)context;
        for (int k = 0; k < fused.Count; k++)
        {
            int first = fused.FirstGroups[k];
            int from = Math.Max(start, first), to = Math.Min(end, fused.FirstGroups[k + 1]);
            if (from < to)
            {
                fused.Body(fused.Jobs + k, from - first, to - first);
            }
        }
    }

    private static delegate*<void*, int, int, void> Select<TWeight>(Int8Path path)
        where TWeight : struct, IInt8Weight => path switch
        {
            Int8Path.Scalar => &RunGroupsScalar<TWeight>,
            Int8Path.Portable => &RunNarrow<TWeight, PortableInt8Dot>,
            Int8Path.V128 => &RunNarrow<TWeight, Vector128Int8Dot>,
            _ when !Avx2.IsSupported => &RunNarrow<TWeight, Vector128Int8Dot>,
            Int8Path.Avx2 => &RunWide<TWeight, Avx2Int8Dot>,
            _ => &RunWide<TWeight, AvxVnniInt8Dot>,
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

    /// <summary>
    /// Σ_b isum_b · (d_w,b · d_x,b) in block order (of 32 values), isum_b the exact integer dot of block b; for
    /// the formats with a minimum, each block adds (isum_b · (d_w · d_x,b)) + (m_w · (d_x,b · Σx_b)).
    /// </summary>
    internal static float DotScalar<TWeight>(byte* row, sbyte* quants, float* scales, int* sums, int blocks)
        where TWeight : struct, IInt8Weight
    {
        float sum = 0;
        for (int b = 0; b < blocks; b++)
        {
            byte* head = TWeight.Head(row, b);
            int isum = TWeight.Dot(TWeight.Quants(row, b), quants + (b * BlockSize), sums[b]);
            float term = isum * (HalfConversion.ToSingle(Unsafe.ReadUnaligned<ushort>(head)) * scales[b]);
            if (TWeight.HasMinimum)
            {
                term += HalfConversion.ToSingle(Unsafe.ReadUnaligned<ushort>(head + 2)) * (scales[b] * sums[b]);
            }

            sum += term;
        }

        return sum;
    }

    // ---- Vector paths ----

    /// <summary>256-bit: a group's eight outputs for a token are one vector; each block adds one vector product.</summary>
    private static void RunWide<TWeight, TDot>(void* context, int start, int end)
        where TWeight : struct, IInt8Weight
        where TDot : struct, IInt8RowsDotX4
    {
        ref Job job = ref *(Job*)context;
        int blocks = job.Blocks;
        long stride = job.BlockStride;
        for (int g = start; g < end; g++)
        {
            int r = g * GroupRows;
            int count = Math.Min(GroupRows, job.Rows - r);
            var bias = Vector256<float>.Zero;
            if (job.Bias != null)
            {
                bias = count == GroupRows ? Vector256.Load(job.Bias + r) : LoadPartial(job.Bias + r, count);
            }

            byte* group = job.Interleaved + (g * job.GroupStride);
            int t = 0;
            for (; t + 4 <= job.Tokens; t += 4)
            {
                // Four tokens: each block's weights loaded and unpacked once for the four.
                long a = (long)t * blocks;
                long n = (long)blocks * BlockSize;
                sbyte* quants = job.Quants + (a * BlockSize);
                float* scales = job.Scales + a;
                int* sums = job.Sums + a;
                Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
                byte* block = group;
                for (int b = 0; b < blocks; b++, block += stride)
                {
                    TWeight.Dot8x4<TDot>(block + TWeight.HeaderBytes, quants + (b * BlockSize), n, sums + b, blocks, out var i0, out var i1, out var i2, out var i3);
                    var weightScales = HalfConversion.ToSingle(Avx2.ConvertToVector256Int32((short*)block));
                    if (TWeight.HasMinimum)
                    {
                        var minimums = HalfConversion.ToSingle(Avx2.ConvertToVector256Int32((short*)block + GroupRows));
                        acc0 += Term(i0, weightScales, minimums, scales[b], sums[b]);
                        acc1 += Term(i1, weightScales, minimums, scales[blocks + b], sums[blocks + b]);
                        acc2 += Term(i2, weightScales, minimums, scales[(2 * blocks) + b], sums[(2 * blocks) + b]);
                        acc3 += Term(i3, weightScales, minimums, scales[(3 * blocks) + b], sums[(3 * blocks) + b]);
                    }
                    else
                    {
                        acc0 += Vector256.ConvertToSingle(i0) * (weightScales * Vector256.Create(scales[b]));
                        acc1 += Vector256.ConvertToSingle(i1) * (weightScales * Vector256.Create(scales[blocks + b]));
                        acc2 += Vector256.ConvertToSingle(i2) * (weightScales * Vector256.Create(scales[(2 * blocks) + b]));
                        acc3 += Vector256.ConvertToSingle(i3) * (weightScales * Vector256.Create(scales[(3 * blocks) + b]));
                    }
                }

                StoreWide(ref job, t, r, count, acc0 + bias);
                StoreWide(ref job, t + 1, r, count, acc1 + bias);
                StoreWide(ref job, t + 2, r, count, acc2 + bias);
                StoreWide(ref job, t + 3, r, count, acc3 + bias);
            }

            for (; t < job.Tokens; t++)
            {
                long a = (long)t * blocks;
                sbyte* quants = job.Quants + (a * BlockSize);
                float* scales = job.Scales + a;
                int* sums = job.Sums + a;
                var acc = Vector256<float>.Zero;
                byte* block = group;
                for (int b = 0; b < blocks; b++, block += stride)
                {
                    var isum = TWeight.Dot8<TDot>(block + TWeight.HeaderBytes, quants + (b * BlockSize), sums[b]);
                    var weightScales = HalfConversion.ToSingle(Avx2.ConvertToVector256Int32((short*)block));
                    if (TWeight.HasMinimum)
                    {
                        var minimums = HalfConversion.ToSingle(Avx2.ConvertToVector256Int32((short*)block + GroupRows));
                        acc += Term(isum, weightScales, minimums, scales[b], sums[b]);
                    }
                    else
                    {
                        acc += Vector256.ConvertToSingle(isum) * (weightScales * Vector256.Create(scales[b]));
                    }
                }

                StoreWide(ref job, t, r, count, acc + bias);
            }
        }
    }

    /// <summary>(isum · (d_w · d_x)) + (m_w · (d_x · Σx)), lane for lane as <see cref="DotScalar"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Term(Vector256<int> isum, Vector256<float> weightScales, Vector256<float> minimums, float xScale, int xSum) =>
        (Vector256.ConvertToSingle(isum) * (weightScales * Vector256.Create(xScale))) + (minimums * Vector256.Create(xScale * xSum));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreWide(ref Job job, int t, int r, int count, Vector256<float> value)
    {
        float* y = job.Y + ((long)t * job.Rows) + r;
        if (count == GroupRows)
        {
            value.Store(y);
        }
        else
        {
            for (int k = 0; k < count; k++)
            {
                y[k] = value.GetElement(k);
            }
        }
    }

    /// <summary>128-bit: the same arithmetic lane for lane, a group as two halves of four rows.</summary>
    private static void RunNarrow<TWeight, TDot>(void* context, int start, int end)
        where TWeight : struct, IInt8Weight
        where TDot : struct, IInt8RowsDot
    {
        ref Job job = ref *(Job*)context;
        int blocks = job.Blocks;
        long stride = job.BlockStride;
        for (int g = start; g < end; g++)
        {
            int r = g * GroupRows;
            int count = Math.Min(GroupRows, job.Rows - r);
            Vector128<float> biasLow = Vector128<float>.Zero, biasHigh = Vector128<float>.Zero;
            if (job.Bias != null)
            {
                var bias = count == GroupRows ? Vector256.Load(job.Bias + r) : LoadPartial(job.Bias + r, count);
                biasLow = bias.GetLower();
                biasHigh = bias.GetUpper();
            }

            byte* group = job.Interleaved + (g * job.GroupStride);
            for (int t = 0; t < job.Tokens; t++)
            {
                long a = (long)t * blocks;
                sbyte* quants = job.Quants + (a * BlockSize);
                float* scales = job.Scales + a;
                int* sums = job.Sums + a;
                Vector128<float> low = Vector128<float>.Zero, high = Vector128<float>.Zero;
                byte* block = group;
                for (int b = 0; b < blocks; b++, block += stride)
                {
                    byte* q = block + TWeight.HeaderBytes;
                    sbyte* x = quants + (b * BlockSize);
                    var xs = Vector128.Create(scales[b]);
                    var halves = Vector128.Load((short*)block);
                    var scalesLow = HalfConversion.ToSingle(Vector128.WidenLower(halves));
                    var scalesHigh = HalfConversion.ToSingle(Vector128.WidenUpper(halves));
                    var termLow = Vector128.ConvertToSingle(TWeight.Dot4<TDot>(q, x, sums[b])) * (scalesLow * xs);
                    var termHigh = Vector128.ConvertToSingle(TWeight.Dot4<TDot>(q + 16, x, sums[b])) * (scalesHigh * xs);
                    if (TWeight.HasMinimum)
                    {
                        var minimums = Vector128.Load((short*)block + GroupRows);
                        var xsum = Vector128.Create(scales[b] * sums[b]);
                        termLow += HalfConversion.ToSingle(Vector128.WidenLower(minimums)) * xsum;
                        termHigh += HalfConversion.ToSingle(Vector128.WidenUpper(minimums)) * xsum;
                    }

                    low += termLow;
                    high += termHigh;
                }

                float* y = job.Y + ((long)t * job.Rows) + r;
                low += biasLow;
                high += biasHigh;
                for (int k = 0; k < count; k++)
                {
                    y[k] = k < 4 ? low.GetElement(k) : high.GetElement(k - 4);
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Vector256<float> LoadPartial(float* p, int count)
    {
        var v = Vector256<float>.Zero;
        for (int k = 0; k < count; k++)
        {
            v = v.WithElement(k, p[k]);
        }

        return v;
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowType(Tensor weight) =>
        throw new NotSupportedException($"Integer matrix products need Q8_0, Q4_0, INT4 or INT3 group weights with whole groups, not {weight.Type} [{weight.Rows}, {weight.Columns}].");
}

/// <summary>A block format the integer kernels read: the exact integer dot of one block with 32 activation quants.</summary>
internal unsafe interface IInt8Weight
{
    /// <summary>The stored block that holds 32-value block <paramref name="b"/> of a row: its fp16 scale (and minimum) come first.</summary>
    static abstract byte* Head(byte* row, int b);

    /// <summary>The quants of 32-value block <paramref name="b"/> of a row, in their stored form.</summary>
    static abstract byte* Quants(byte* row, int b);

    /// <summary>Whether values are q · d + m (a minimum per group) rather than q · d.</summary>
    static virtual bool HasMinimum => false;

    /// <summary>Bytes before the quants in an interleaved block: eight fp16 scales (and eight fp16 minimums).</summary>
    static virtual int HeaderBytes => 16;

    /// <summary>Σ_j q[j] · x[j] over one block's stored quants (the scalar reference); <paramref name="xsum"/> = Σ_j x[j].</summary>
    static abstract int Dot(byte* quants, sbyte* x, int xsum);

    /// <summary>The same for the eight rows of an interleaved block, through <typeparamref name="TDot"/>'s instructions.</summary>
    static abstract Vector256<int> Dot8<TDot>(byte* interleaved, sbyte* x, int xsum)
        where TDot : struct, IInt8RowsDot;

    /// <summary><see cref="Dot8"/> for four tokens' activations, <paramref name="stride"/> bytes apart.</summary>
    static abstract void Dot8x4<TDot>(byte* interleaved, sbyte* x, long stride, int* sums, int sumStride, out Vector256<int> s0, out Vector256<int> s1, out Vector256<int> s2, out Vector256<int> s3)
        where TDot : struct, IInt8RowsDotX4;

    /// <summary>The same for four rows (<see cref="IInt8RowsDot.Signed4"/>'s addressing).</summary>
    static abstract Vector128<int> Dot4<TDot>(byte* interleaved, sbyte* x, int xsum)
        where TDot : struct, IInt8RowsDot;
}

/// <summary>Q8_0: fp16 d, then 32 signed quants.</summary>
internal readonly unsafe struct Q8_0Int8Weight : IInt8Weight
{
    public static byte* Head(byte* row, int b) => row + ((long)b * 34);

    public static byte* Quants(byte* row, int b) => row + ((long)b * 34) + 2;

    public static int Dot(byte* quants, sbyte* x, int xsum)
    {
        sbyte* w = (sbyte*)quants;
        int sum = 0;
        for (int j = 0; j < 32; j++)
        {
            sum += w[j] * x[j];
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot8<TDot>(byte* interleaved, sbyte* x, int xsum)
        where TDot : struct, IInt8RowsDot => TDot.Signed8(interleaved, x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Dot8x4<TDot>(byte* interleaved, sbyte* x, long stride, int* sums, int sumStride, out Vector256<int> s0, out Vector256<int> s1, out Vector256<int> s2, out Vector256<int> s3)
        where TDot : struct, IInt8RowsDotX4 => TDot.Signed8x4(interleaved, x, stride, out s0, out s1, out s2, out s3);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Dot4<TDot>(byte* interleaved, sbyte* x, int xsum)
        where TDot : struct, IInt8RowsDot => TDot.Signed4(interleaved, x);
}

/// <summary>
/// Q4_0: fp16 d, then 16 bytes of nibbles; Σ (nibble − 8) · x = Σ nibble · x − 8 · Σ x, so the vector bodies
/// multiply the unsigned nibbles directly (llama.cpp's q8_1 trick, with Σ x from the quantizer).
/// </summary>
internal readonly unsafe struct Q4_0Int8Weight : IInt8Weight
{
    public static byte* Head(byte* row, int b) => row + ((long)b * 18);

    public static byte* Quants(byte* row, int b) => row + ((long)b * 18) + 2;

    public static int Dot(byte* quants, sbyte* x, int xsum)
    {
        byte* q = quants;
        int sum = 0;
        for (int j = 0; j < 16; j++)
        {
            sum += (((q[j] & 0x0F) - 8) * x[j]) + (((q[j] >> 4) - 8) * x[j + 16]);
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot8<TDot>(byte* interleaved, sbyte* x, int xsum)
        where TDot : struct, IInt8RowsDot => TDot.Nibbles8(interleaved, x) - Vector256.Create(8 * xsum);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Dot8x4<TDot>(byte* interleaved, sbyte* x, long stride, int* sums, int sumStride, out Vector256<int> s0, out Vector256<int> s1, out Vector256<int> s2, out Vector256<int> s3)
        where TDot : struct, IInt8RowsDotX4
    {
        TDot.Nibbles8x4(interleaved, x, stride, out s0, out s1, out s2, out s3);
        s0 -= Vector256.Create(8 * sums[0]);
        s1 -= Vector256.Create(8 * sums[sumStride]);
        s2 -= Vector256.Create(8 * sums[2 * sumStride]);
        s3 -= Vector256.Create(8 * sums[3 * sumStride]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Dot4<TDot>(byte* interleaved, sbyte* x, int xsum)
        where TDot : struct, IInt8RowsDot => TDot.Nibbles4(interleaved, x) - Vector128.Create(8 * xsum);
}

/// <summary>The number of values sharing one scale and minimum in the <see cref="Q4_1Int8Weight{TGroup}"/> formats.</summary>
internal interface IGroupSize
{
    static abstract int Values { get; }
}

internal readonly struct Group32 : IGroupSize
{
    public static int Values => 32;
}

internal readonly struct Group64 : IGroupSize
{
    public static int Values => 64;
}

internal readonly struct Group128 : IGroupSize
{
    public static int Values => 128;
}

/// <summary>
/// INT4 with a scale and minimum per group (Q4_1 and its groups of 64 and 128): fp16 d, fp16 m, then one 16-byte
/// Q4_1 nibble block per 32 values; Σ (q · d + m) · x = d · Σ q · x + m · Σ x, the first an exact integer dot of
/// the unsigned nibbles, the second from the quantizer's Σ x.
/// </summary>
internal readonly unsafe struct Q4_1Int8Weight<TGroup> : IInt8Weight
    where TGroup : struct, IGroupSize
{
    private static int GroupBytes => 4 + (TGroup.Values / 2);

    public static bool HasMinimum => true;

    public static int HeaderBytes => 32;

    public static byte* Head(byte* row, int b) => row + ((long)(b / (TGroup.Values / 32)) * GroupBytes);

    public static byte* Quants(byte* row, int b) => Head(row, b) + 4 + (16 * (b % (TGroup.Values / 32)));

    public static int Dot(byte* quants, sbyte* x, int xsum)
    {
        int sum = 0;
        for (int j = 0; j < 16; j++)
        {
            sum += ((quants[j] & 0x0F) * x[j]) + ((quants[j] >> 4) * x[j + 16]);
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot8<TDot>(byte* interleaved, sbyte* x, int xsum)
        where TDot : struct, IInt8RowsDot => TDot.Nibbles8(interleaved, x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Dot8x4<TDot>(byte* interleaved, sbyte* x, long stride, int* sums, int sumStride, out Vector256<int> s0, out Vector256<int> s1, out Vector256<int> s2, out Vector256<int> s3)
        where TDot : struct, IInt8RowsDotX4 => TDot.Nibbles8x4(interleaved, x, stride, out s0, out s1, out s2, out s3);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Dot4<TDot>(byte* interleaved, sbyte* x, int xsum)
        where TDot : struct, IInt8RowsDot => TDot.Nibbles4(interleaved, x);
}

/// <summary>
/// INT3 with a scale and minimum per group of 32, 64 or 128 (<see cref="DType.Q3_1_G32"/>): fp16 d, fp16 m, then 12
/// bytes of codes per 32 values (<see cref="GroupCodes"/>). The scalar reference reads the 3-bit codes where they are
/// stored; the vector paths read the interleaved form, where <see cref="InterleavedWeights"/> has unpacked them into
/// Q4_1 nibbles, so they are <see cref="Q4_1Int8Weight{TGroup}"/>'s bodies: the same exact integer dots, the same bits.
/// </summary>
internal readonly unsafe struct Q3_1Int8Weight<TGroup> : IInt8Weight
    where TGroup : struct, IGroupSize
{
    private static int GroupBytes => 4 + (TGroup.Values / 32 * GroupCodes.Int3Bytes);

    public static bool HasMinimum => true;

    public static int HeaderBytes => 32;

    public static byte* Head(byte* row, int b) => row + ((long)(b / (TGroup.Values / 32)) * GroupBytes);

    public static byte* Quants(byte* row, int b) => Head(row, b) + 4 + (GroupCodes.Int3Bytes * (b % (TGroup.Values / 32)));

    public static int Dot(byte* quants, sbyte* x, int xsum)
    {
        Span<byte> codes = stackalloc byte[GroupCodes.BlockSize];
        GroupCodes.Unpack(DType.Q3_1_G32, new ReadOnlySpan<byte>(quants, GroupCodes.Int3Bytes), codes);
        int sum = 0;
        for (int j = 0; j < GroupCodes.BlockSize; j++)
        {
            sum += codes[j] * x[j];
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot8<TDot>(byte* interleaved, sbyte* x, int xsum)
        where TDot : struct, IInt8RowsDot => TDot.Nibbles8(interleaved, x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Dot8x4<TDot>(byte* interleaved, sbyte* x, long stride, int* sums, int sumStride, out Vector256<int> s0, out Vector256<int> s1, out Vector256<int> s2, out Vector256<int> s3)
        where TDot : struct, IInt8RowsDotX4 => TDot.Nibbles8x4(interleaved, x, stride, out s0, out s1, out s2, out s3);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Dot4<TDot>(byte* interleaved, sbyte* x, int xsum)
        where TDot : struct, IInt8RowsDot => TDot.Nibbles4(interleaved, x);
}
