using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Minnow.Tensors;

namespace Minnow.Kernels;

/// <summary>
/// y[t, o] = Σ_i x[t, i] · W[o, i] (+ bias[o]) for a sparse weight matrix (<see cref="SparseMatrix"/>: per row a
/// bitmap of the kept columns and the kept values packed), float32 arithmetic. Output rows are spread over the
/// worker pool in groups of four.
/// <para>
/// The vector bodies take the bitmap 8 columns (256-bit, and each half of 512-bit) or 4 columns (128-bit) at a time: they load that many
/// packed values, move value k to the lane of the k-th set bit with one permute from a table indexed by the mask,
/// zero the other lanes, and multiply-add with the activations; the mask's population count advances the value
/// pointer. Lane j of the accumulator so sums the columns ≡ j modulo the vector size in order, then the lanes are
/// summed and the leftover columns added in order: the order of <see cref="MatMul"/>'s float path over the same
/// matrix stored dense, so a sparse matrix gives the dense one's results. Decoding (one token) reads each row once
/// straight from the packed form; with several tokens each group of rows is expanded once into a per-thread float
/// buffer and multiplied by every token there. The 512-bit body expands 16 columns as two 256-bit halves.
/// </para>
/// </summary>
internal static unsafe class SparseMatMul
{
    private const int GroupRows = 4;

    private struct Job
    {
        public byte* Weight;
        public int Columns;
        public int Rows;
        public float* X;
        public float* Y;
        public float* Bias;
        public int Tokens;
    }

    private struct ScratchTag;

    /// <summary>For mask m (8 bits), lane j's source: the number of set bits below j (the table of the 256-bit permute).</summary>
    private static readonly int* Expand8 = BuildExpandTable(8);

    /// <summary>The same for 4-bit masks (the 128-bit permute).</summary>
    private static readonly int* Expand4 = BuildExpandTable(4);

    /// <summary>For mask m (8 bits), lane j all ones when bit j is set: the lanes that keep a value.</summary>
    private static readonly int* Lanes8 = BuildLaneTable(8);

    /// <summary>The same for 4-bit masks.</summary>
    private static readonly int* Lanes4 = BuildLaneTable(4);

    public static void Compute(Tensor weight, float* x, int tokens, float* y, float* bias, WorkerPool pool, VectorWidth width)
    {
        if (!weight.Type.IsSparse() || weight.Rank != 2)
        {
            ThrowType(weight);
        }

        if (tokens <= 0 || weight.Rows == 0)
        {
            return;
        }

        var job = new Job
        {
            Weight = weight.Data,
            Columns = weight.Columns,
            Rows = weight.Rows,
            X = x,
            Y = y,
            Bias = bias,
            Tokens = tokens,
        };
        int groups = (job.Rows + GroupRows - 1) / GroupRows;

        // About four blocks per thread for balance, but no block under ~64K multiply-adds.
        long work = (long)GroupRows * job.Columns * tokens;
        int minGrain = (int)Math.Clamp((1L << 16) / Math.Max(1, work), 1, groups);
        int grain = Math.Max(minGrain, groups / (pool.ThreadCount * 4));
        var body = weight.Type switch
        {
            DType.SparseQ8 => Select<SparseQ8Values>(width),
            DType.SparseI8 => Select<SparseI8Values>(width),
            _ => FiniteValues.Of(weight) ? Select<SparseFiniteF16Values>(width) : Select<SparseF16Values>(width),
        };
        pool.For(groups, grain, body, &job);
    }

    /// <summary>Makes the form the kernel keeps of a sparse matrix (for SPARSE_F16, its finiteness check) now.</summary>
    internal static void Prepare(Tensor weight)
    {
        if (weight.Type == DType.SparseF16)
        {
            FiniteValues.Of(weight);
        }
    }

    /// <summary>Whether a SPARSE_F16 matrix's values are free of ±∞ and NaN, found once and kept with the tensor.</summary>
    private sealed class FiniteValues
    {
        private FiniteValues(bool value) => Value = value;

        private bool Value { get; }

        public static bool Of(Tensor weight) => weight.KernelForm(0, static (w, _) => new FiniteValues(AllFinite(w))).Value;

        private static bool AllFinite(Tensor weight)
        {
            int n = weight.Columns, maskBytes = SparseMatrix.MaskBytes(n);
            for (int r = 0; r < weight.Rows; r++)
            {
                byte* values = SparseMatrix.Row64(weight.Data, r) + maskBytes;
                long count = (SparseMatrix.Row64(weight.Data, r + 1) - values) / sizeof(ushort);
                if (!HalfConversion.AllFinite((ushort*)values, count))
                {
                    return false;
                }
            }

            return true;
        }
    }

    private static delegate*<void*, int, int, void> Select<TValues>(VectorWidth width)
        where TValues : struct, ISparseValues => width switch
        {
            VectorWidth.Scalar => &RunGroupsScalar<TValues>,
            VectorWidth.V128 => &RunGroups<TValues, Vector128<float>>,
            VectorWidth.V256 => &RunGroups<TValues, Vector256<float>>,
            _ => &RunGroups<TValues, Vector512<float>>,
        };

    // ---- Scalar reference ----

    private static void RunGroupsScalar<TValues>(void* context, int start, int end)
        where TValues : struct, ISparseValues
    {
        ref Job job = ref *(Job*)context;
        int n = job.Columns;
        int rowEnd = Math.Min(end * GroupRows, job.Rows);
        for (int o = start * GroupRows; o < rowEnd; o++)
        {
            byte* row = TValues.Row(job.Weight, o);
            float b = job.Bias != null ? job.Bias[o] : 0f;
            for (int t = 0; t < job.Tokens; t++)
            {
                job.Y[((long)t * job.Rows) + o] = DotScalar<TValues>(row, job.X + ((long)t * n), n) + b;
            }
        }
    }

    /// <summary>Σ w[i] · x[i] over the kept columns in order, one rounding per multiply and per add.</summary>
    internal static float DotScalar<TValues>(byte* row, float* x, int n)
        where TValues : struct, ISparseValues
    {
        byte* scales = row + SparseMatrix.MaskBytes(n);
        byte* values = scales + TValues.ScaleBytes(n);
        float sum = 0;
        int k = 0;
        for (int i = 0; i < n; i++)
        {
            if ((row[i >> 3] & (1 << (i & 7))) != 0)
            {
                sum += TValues.Value(values, k++, scales, i) * x[i];
            }
        }

        return sum;
    }

    // ---- Vector paths ----

    private static void RunGroups<TValues, T>(void* context, int start, int end)
        where TValues : struct, ISparseValues
        where T : struct
    {
        ref Job job = ref *(Job*)context;
        int n = job.Columns;
        int rowEnd = Math.Min(end * GroupRows, job.Rows);
        float* s = stackalloc float[GroupRows];
        float* s2 = stackalloc float[GroupRows];
        if (job.Tokens == 1)
        {
            // Decode: straight from the packed rows, two at a time (two independent chains of multiply-adds).
            int o = start * GroupRows;
            for (; o + 2 <= rowEnd; o += 2)
            {
                Dot2<TValues, T>(TValues.Row(job.Weight, o), TValues.Row(job.Weight, o + 1), job.X, n, s);
                Store(ref job, 0, o, s, 2);
            }

            if (o < rowEnd)
            {
                s[0] = Dot1<TValues, T>(TValues.Row(job.Weight, o), job.X, n);
                Store(ref job, 0, o, s, 1);
            }

            return;
        }

        // Several tokens: each group of rows expanded once to float32, then multiplied by every token.
        float* buffer = Scratch<ScratchTag>.Get(GroupRows * n);
        for (int r = start * GroupRows; r < rowEnd; r += GroupRows)
        {
            int count = Math.Min(GroupRows, rowEnd - r);
            for (int k = 0; k < count; k++)
            {
                Expand<TValues, T>(TValues.Row(job.Weight, r + k), n, buffer + ((long)k * n));
            }

            int t = 0;
            if (count == GroupRows)
            {
                // Two tokens at a time, each weight vector loaded once for both (as the dense path does).
                for (; t + 2 <= job.Tokens; t += 2)
                {
                    MatMul.Tile4x2<T>(buffer, n, job.X + ((long)t * n), job.X + ((long)(t + 1) * n), n, s, s2);
                    Store(ref job, t, r, s, GroupRows);
                    Store(ref job, t + 1, r, s2, GroupRows);
                }
            }

            for (; t < job.Tokens; t++)
            {
                float* x = job.X + ((long)t * n);
                if (count == GroupRows)
                {
                    MatMul.Dot4<F32Format, T>((byte*)buffer, (long)n * sizeof(float), x, n, s);
                }
                else
                {
                    for (int k = 0; k < count; k++)
                    {
                        s[k] = MatMul.Dot1<F32Format, T>((byte*)(buffer + ((long)k * n)), x, n);
                    }
                }

                Store(ref job, t, r, s, count);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(ref Job job, int t, int r, float* s, int count)
    {
        float* y = job.Y + ((long)t * job.Rows) + r;
        for (int k = 0; k < count; k++)
        {
            y[k] = job.Bias != null ? s[k] + job.Bias[r + k] : s[k];
        }
    }

    /// <summary>One packed row times one token: the lanes as <see cref="MatMul.Dot1"/> over the dense row, then the leftover columns.</summary>
    internal static float Dot1<TValues, T>(byte* row, float* x, int n)
        where TValues : struct, ISparseValues
        where T : struct
    {
        int c = Simd.Count<T>();
        byte* scales = row + SparseMatrix.MaskBytes(n);
        byte* values = scales + TValues.ScaleBytes(n);
        T acc = default, scale = default;
        int i = 0;
        for (; i <= n - c; i += c)
        {
            if (TValues.Scaled && (i & (TValues.ScaleGroup - 1)) == 0)
            {
                scale = Simd.Broadcast<T>(TValues.Scale(scales, i));
            }

            acc = Simd.MultiplyAdd(Next<TValues, T>(row, i, ref values, scale), Simd.Load<T>(x + i), acc);
        }

        float sum = Simd.Sum(acc);
        for (int k = 0; i < n; i++)
        {
            if ((row[i >> 3] & (1 << (i & 7))) != 0)
            {
                sum += TValues.Value(values, k++, scales, i) * x[i];
            }
        }

        return sum;
    }

    /// <summary>Two packed rows times one token, each exactly as <see cref="Dot1"/> computes it.</summary>
    internal static void Dot2<TValues, T>(byte* row0, byte* row1, float* x, int n, float* s)
        where TValues : struct, ISparseValues
        where T : struct
    {
        int c = Simd.Count<T>();
        int maskBytes = SparseMatrix.MaskBytes(n), scaleBytes = TValues.ScaleBytes(n);
        byte* scales0 = row0 + maskBytes, scales1 = row1 + maskBytes;
        byte* values0 = scales0 + scaleBytes, values1 = scales1 + scaleBytes;
        T acc0 = default, acc1 = default, scale0 = default, scale1 = default;
        int i = 0;
        for (; i <= n - c; i += c)
        {
            if (TValues.Scaled && (i & (TValues.ScaleGroup - 1)) == 0)
            {
                scale0 = Simd.Broadcast<T>(TValues.Scale(scales0, i));
                scale1 = Simd.Broadcast<T>(TValues.Scale(scales1, i));
            }

            T xv = Simd.Load<T>(x + i);
            acc0 = Simd.MultiplyAdd(Next<TValues, T>(row0, i, ref values0, scale0), xv, acc0);
            acc1 = Simd.MultiplyAdd(Next<TValues, T>(row1, i, ref values1, scale1), xv, acc1);
        }

        float sum0 = Simd.Sum(acc0), sum1 = Simd.Sum(acc1);
        for (int k0 = 0, k1 = 0; i < n; i++)
        {
            int bit = 1 << (i & 7);
            if ((row0[i >> 3] & bit) != 0)
            {
                sum0 += TValues.Value(values0, k0++, scales0, i) * x[i];
            }

            if ((row1[i >> 3] & bit) != 0)
            {
                sum1 += TValues.Value(values1, k1++, scales1, i) * x[i];
            }
        }

        s[0] = sum0;
        s[1] = sum1;
    }

    /// <summary>Converts one packed row to dense float32 with the vector body (bit for bit the values <see cref="Dot1"/> multiplies).</summary>
    internal static void Expand<TValues, T>(byte* row, int n, float* destination)
        where TValues : struct, ISparseValues
        where T : struct
    {
        int c = Simd.Count<T>();
        byte* scales = row + SparseMatrix.MaskBytes(n);
        byte* values = scales + TValues.ScaleBytes(n);
        T scale = default;
        int i = 0;
        for (; i <= n - c; i += c)
        {
            if (TValues.Scaled && (i & (TValues.ScaleGroup - 1)) == 0)
            {
                scale = Simd.Broadcast<T>(TValues.Scale(scales, i));
            }

            Simd.Store(Next<TValues, T>(row, i, ref values, scale), destination + i);
        }

        for (int k = 0; i < n; i++)
        {
            destination[i] = (row[i >> 3] & (1 << (i & 7))) != 0 ? TValues.Value(values, k++, scales, i) : 0f;
        }
    }

    /// <summary>
    /// Columns i .. i + Count − 1 of a row (i a multiple of Count) as a dense vector: the packed values at
    /// <paramref name="values"/> moved to the lanes of the bitmap's set bits, the other lanes +0; advances
    /// <paramref name="values"/> past the ones used. 512-bit vectors are two 256-bit halves of 8 columns each.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Next<TValues, T>(byte* row, int i, ref byte* values, T scale)
        where TValues : struct, ISparseValues
        where T : struct
    {
        if (typeof(T) == typeof(Vector512<float>) && Avx512F.IsSupported)
        {
            // AVX-512 expands the packed values into the mask's lanes (zeroing the others) in one instruction.
            int m16 = Unsafe.ReadUnaligned<ushort>(row + (i >> 3));
            var bits = Vector512.Create(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
            var kept = Vector512.Equals(Vector512.Create(m16) & bits, bits).AsSingle();
            T packed = TValues.Load(values, scale);
            var wide = Avx512F.Expand(Vector512<float>.Zero, kept, Unsafe.As<T, Vector512<float>>(ref packed));
            values += BitOperations.PopCount((uint)m16) * TValues.ValueBytes;
            return Unsafe.As<Vector512<float>, T>(ref wide);
        }

        if (typeof(T) == typeof(Vector512<float>))
        {
            var half = Unsafe.As<T, Vector512<float>>(ref scale).GetLower();
            int low = row[i >> 3], high = row[(i >> 3) + 1];
            var first = ExpandLanes(TValues.Load(values, half), low);
            values += BitOperations.PopCount((uint)low) * TValues.ValueBytes;
            var second = ExpandLanes(TValues.Load(values, half), high);
            values += BitOperations.PopCount((uint)high) * TValues.ValueBytes;
            var result = Vector512.Create(first, second);
            return Unsafe.As<Vector512<float>, T>(ref result);
        }

        int m = typeof(T) == typeof(Vector256<float>) ? row[i >> 3] : (row[i >> 3] >> (i & 4)) & 0xF;
        var expanded = ExpandLanes(TValues.Load(values, scale), m);
        values += BitOperations.PopCount((uint)m) * TValues.ValueBytes;
        return expanded;
    }

    /// <summary>Packed values 0, 1, … moved to the lanes of mask <paramref name="m"/>'s set bits, the other lanes +0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T ExpandLanes<T>(T packed, int m)
        where T : struct
    {
        if (typeof(T) == typeof(Vector256<float>))
        {
            var v = Unsafe.As<T, Vector256<float>>(ref packed);
            var index = Vector256.Load(Expand8 + (m * 8));
            var moved = Avx2.IsSupported ? Avx2.PermuteVar8x32(v, index) : Vector256.Shuffle(v, index);
            var result = moved & Vector256.Load((float*)Lanes8 + (m * 8));
            return Unsafe.As<Vector256<float>, T>(ref result);
        }

        if (typeof(T) == typeof(Vector128<float>))
        {
            var v = Unsafe.As<T, Vector128<float>>(ref packed);
            var index = Vector128.Load(Expand4 + (m * 4));
            var moved = Avx.IsSupported ? Avx.PermuteVar(v, index) : Vector128.Shuffle(v, index);
            var result = moved & Vector128.Load((float*)Lanes4 + (m * 4));
            return Unsafe.As<Vector128<float>, T>(ref result);
        }

        throw new NotSupportedException($"{typeof(T).Name} is not a sparse kernel vector.");
    }

    private static int* BuildExpandTable(int lanes)
    {
        int masks = 1 << lanes;
        int* table = (int*)NativeMemory.AlignedAlloc((nuint)(masks * lanes * sizeof(int)), 64);
        for (int m = 0; m < masks; m++)
        {
            for (int j = 0; j < lanes; j++)
            {
                table[(m * lanes) + j] = (m & (1 << j)) != 0 ? BitOperations.PopCount((uint)(m & ((1 << j) - 1))) : 0;
            }
        }

        return table;
    }

    private static int* BuildLaneTable(int lanes)
    {
        int masks = 1 << lanes;
        int* table = (int*)NativeMemory.AlignedAlloc((nuint)(masks * lanes * sizeof(int)), 64);
        for (int m = 0; m < masks; m++)
        {
            for (int j = 0; j < lanes; j++)
            {
                table[(m * lanes) + j] = (m & (1 << j)) != 0 ? -1 : 0;
            }
        }

        return table;
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowType(Tensor weight) =>
        throw new NotSupportedException($"Sparse matrix products need a SPARSE_F16, SPARSE_Q8 or SPARSE_I8 matrix, not {weight.Type.Name()} {weight.ShapeText}.");
}

/// <summary>How a sparse matrix's packed values are stored (<see cref="SparseMatrix"/>): scalar and vector bodies.</summary>
internal unsafe interface ISparseValues
{
    /// <summary>Bytes per packed value.</summary>
    static abstract int ValueBytes { get; }

    /// <summary>Whether the values are scaled per group of <see cref="ScaleGroup"/> columns.</summary>
    static abstract bool Scaled { get; }

    /// <summary>Columns per scale, a power of two (<see cref="SparseMatrix.RowScaleGroup"/>: one scale per row).</summary>
    static abstract int ScaleGroup { get; }

    /// <summary>Where row <paramref name="row"/> starts (the width of the offsets differs between types).</summary>
    static abstract byte* Row(byte* data, int row);

    /// <summary>Bytes of scales between a row's bitmap and its values.</summary>
    static abstract int ScaleBytes(int columns);

    /// <summary>The scale of column <paramref name="column"/>'s group.</summary>
    static abstract float Scale(byte* scales, int column);

    /// <summary>Packed value k of a row (whose column is <paramref name="column"/>), as float: the scalar reference.</summary>
    static abstract float Value(byte* values, int k, byte* scales, int column);

    /// <summary>Count&lt;T&gt; packed values from <paramref name="values"/> (reading past the row's last is allowed: <see cref="SparseMatrix.Padding"/>).</summary>
    static abstract T Load<T>(byte* values, T scale)
        where T : struct;
}

/// <summary>Packed fp16 values.</summary>
internal readonly unsafe struct SparseF16Values : ISparseValues
{
    public static int ValueBytes => 2;

    public static bool Scaled => false;

    public static int ScaleGroup => SparseMatrix.RowScaleGroup;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* Row(byte* data, int row) => SparseMatrix.Row64(data, row);

    public static int ScaleBytes(int columns) => 0;

    public static float Scale(byte* scales, int column) => 1f;

    public static float Value(byte* values, int k, byte* scales, int column) => HalfConversion.ToSingle(Unsafe.ReadUnaligned<ushort>(values + (2L * k)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* values, T scale)
        where T : struct => Simd.LoadHalves<T>((ushort*)values);
}

/// <summary>
/// SPARSE_F16 values with no ±∞ or NaN (checked once per tensor): the same values as <see cref="SparseF16Values"/>,
/// converted with three vector operations fewer.
/// </summary>
internal readonly unsafe struct SparseFiniteF16Values : ISparseValues
{
    public static int ValueBytes => 2;

    public static bool Scaled => false;

    public static int ScaleGroup => SparseMatrix.RowScaleGroup;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* Row(byte* data, int row) => SparseMatrix.Row64(data, row);

    public static int ScaleBytes(int columns) => 0;

    public static float Scale(byte* scales, int column) => 1f;

    public static float Value(byte* values, int k, byte* scales, int column) => HalfConversion.ToSingle(Unsafe.ReadUnaligned<ushort>(values + (2L * k)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* values, T scale)
        where T : struct => Simd.LoadFiniteHalves<T>((ushort*)values);
}

/// <summary>Packed int8 q with an fp16 scale d per 64 columns; value = q · d (exact in float: 8 × 11 significant bits).</summary>
internal readonly unsafe struct SparseQ8Values : ISparseValues
{
    public static int ValueBytes => 1;

    public static bool Scaled => true;

    public static int ScaleGroup => SparseMatrix.ScaleGroup;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* Row(byte* data, int row) => SparseMatrix.Row64(data, row);

    public static int ScaleBytes(int columns) => SparseMatrix.ScaleBytes(DType.SparseQ8, columns);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Scale(byte* scales, int column) =>
        HalfConversion.ToSingle(Unsafe.ReadUnaligned<ushort>(scales + (2 * (column / SparseMatrix.ScaleGroup))));

    public static float Value(byte* values, int k, byte* scales, int column) => ((sbyte*)values)[k] * Scale(scales, column);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* values, T scale)
        where T : struct => Simd.Multiply(Simd.LoadSBytes<T>((sbyte*)values), scale);
}

/// <summary>
/// Packed int8 q with one fp16 scale d per row (SPARSE_I8); value = q · d, exact in float. The kernels broadcast d
/// once per row (at column 0: no column but the first is a multiple of <see cref="SparseMatrix.RowScaleGroup"/>).
/// </summary>
internal readonly unsafe struct SparseI8Values : ISparseValues
{
    public static int ValueBytes => 1;

    public static bool Scaled => true;

    public static int ScaleGroup => SparseMatrix.RowScaleGroup;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* Row(byte* data, int row) => SparseMatrix.Row32(data, row);

    public static int ScaleBytes(int columns) => SparseMatrix.ScaleBytes(DType.SparseI8, columns);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Scale(byte* scales, int column) => HalfConversion.ToSingle(Unsafe.ReadUnaligned<ushort>(scales));

    public static float Value(byte* values, int k, byte* scales, int column) => ((sbyte*)values)[k] * Scale(scales, column);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* values, T scale)
        where T : struct => Simd.Multiply(Simd.LoadSBytes<T>((sbyte*)values), scale);
}
