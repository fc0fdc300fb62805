using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Minnow.Tensors;

namespace Minnow.Kernels;

/// <summary>
/// y[t, o] = Σ_i x[t, i] · W[o, i] (+ bias[o]) for a weight matrix W [outputs, inputs] of any storage type and
/// <c>tokens</c> rows of float32 activations; all arithmetic is float32. Q8_0 and Q4_0 weights go by default to
/// <see cref="QuantizedMatMul"/> instead (activations quantized to Q8_0, integer dot products, as llama.cpp); the
/// description below is the float path, which they take with <c>MINNOW_Q8_ACTIVATIONS=0</c>. Sparse matrices
/// (<see cref="SparseMatrix"/>) go to <see cref="SparseMatMul"/>, which sums in the same order.
/// <para>
/// Output rows are spread over the worker pool in groups of four. Decoding (one token) streams each group's
/// weights once, converting them to float in registers. With several tokens a group is converted once into a
/// per-thread buffer (plain float32 weights are used in place) and multiplied by two tokens at a time, so every
/// weight is read once per call whatever the number of tokens.
/// </para>
/// <para>
/// Every output is one vector accumulator over the row, summed across lanes, then the leftover columns in order,
/// then the bias. That order depends only on the vector width: not on the thread count, the grouping of rows or
/// tokens, or whether the token came alone or in a batch — a token's logits are the same bit for bit in prefill
/// and in decode.
/// </para>
/// </summary>
public static unsafe class MatMul
{
    private const int GroupRows = 4;

    private struct Job
    {
        public byte* Weight;
        public long RowBytes;
        public int Columns;
        public int Rows;
        public float* X;
        public float* Y;
        public float* Bias;
        public int Tokens;
    }

    private struct ScratchTag;

    /// <summary>
    /// Whether Q8_0 and Q4_0 weights multiply Q8_0-quantized activations with integer dot products
    /// (<see cref="QuantizedMatMul"/>, as llama.cpp does) rather than unpacking the weights to float. On unless the
    /// environment variable <c>MINNOW_Q8_ACTIVATIONS</c> is <c>0</c> when the process starts.
    /// </summary>
    internal static readonly bool QuantizedActivations = Environment.GetEnvironmentVariable("MINNOW_Q8_ACTIVATIONS") != "0";

    public static void Compute(Tensor weight, float* x, int tokens, float* y, float* bias = null, WorkerPool? pool = null) =>
        Compute(weight, x, tokens, y, bias, pool, KernelIsa.Current, QuantizedActivations);

    internal static void Compute(Tensor weight, float* x, int tokens, float* y, float* bias, WorkerPool? pool, VectorWidth width) =>
        Compute(weight, x, tokens, y, bias, pool, width, QuantizedActivations);

    /// <summary>
    /// y_k = W_k · x (+ bias_k) for weights that read the same input (q, k, v; gate, up). Q8_0 / Q4_0 weights of one
    /// type go through the pool together (<see cref="QuantizedMatMul.ComputeFused"/>); others one after another.
    /// Each output is what <see cref="Compute(Tensor, float*, int, float*, float*, WorkerPool?)"/> gives alone.
    /// </summary>
    public static void ComputeFused(ReadOnlySpan<Tensor> weights, float* x, int tokens, ReadOnlySpan<nint> ys, ReadOnlySpan<nint> biases, WorkerPool? pool = null)
    {
        if ((QuantizedActivations || weights[0].Type.IsIntGroup()) && QuantizedMatMul.CanFuse(weights))
        {
            QuantizedMatMul.ComputeFused(weights, x, tokens, ys, biases, pool ?? WorkerPool.Shared, QuantizedMatMul.PathFor(KernelIsa.Current));
            return;
        }

        for (int k = 0; k < weights.Length; k++)
        {
            Compute(weights[k], x, tokens, (float*)ys[k], (float*)biases[k], pool);
        }
    }

    /// <param name="quantizeActivations">Whether Q8_0 / Q4_0 weights take the integer path; other types ignore it.</param>
    internal static void Compute(Tensor weight, float* x, int tokens, float* y, float* bias, WorkerPool? pool, VectorWidth width, bool quantizeActivations)
    {
        if (tokens <= 0 || weight.Rows == 0)
        {
            return;
        }

        if (weight.Type.IsSparse())
        {
            SparseMatMul.Compute(weight, x, tokens, y, bias, pool ?? WorkerPool.Shared, width);
            return;
        }

        // The group-wise INT4 and INT3 formats have only the integer path.
        if ((quantizeActivations || weight.Type.IsIntGroup()) && QuantizedMatMul.Supports(weight))
        {
            QuantizedMatMul.Compute(weight, x, tokens, y, bias, pool ?? WorkerPool.Shared, QuantizedMatMul.PathFor(width));
            return;
        }

        var job = new Job
        {
            Weight = weight.Data,
            RowBytes = weight.RowBytes,
            Columns = weight.Columns,
            Rows = weight.Rows,
            X = x,
            Y = y,
            Bias = bias,
            Tokens = tokens,
        };
        pool ??= WorkerPool.Shared;
        int groups = (job.Rows + GroupRows - 1) / GroupRows;

        // About four blocks per thread for balance, but no block under ~64K multiply-adds.
        long work = (long)GroupRows * job.Columns * tokens;
        int minGrain = (int)Math.Clamp((1L << 16) / Math.Max(1, work), 1, groups);
        int grain = Math.Max(minGrain, groups / (pool.ThreadCount * 4));
        var type = weight.Type == DType.F16 && FiniteHalves.Of(weight) ? FiniteF16 : weight.Type;
        pool.For(groups, grain, SelectBody(type, width), &job);
    }

    /// <summary>
    /// Makes the form of <paramref name="weight"/> the kernels keep with it (interleaved rows for the integer
    /// products, the F16 finiteness check) now rather than on first use, so a prepared model is only read by steps.
    /// </summary>
    internal static void Prepare(Tensor weight, WorkerPool pool)
    {
        if (weight.Rows == 0)
        {
            return;
        }

        if (weight.Type.IsSparse())
        {
            SparseMatMul.Prepare(weight);
        }
        else if ((QuantizedActivations || weight.Type.IsIntGroup()) && QuantizedMatMul.Supports(weight))
        {
            if (QuantizedMatMul.PathFor(KernelIsa.Current) != Int8Path.Scalar)
            {
                InterleavedWeights.For(weight, pool);
            }
        }
        else if (weight.Type == DType.F16)
        {
            FiniteHalves.Of(weight);
        }
    }

    /// <summary>Stands for F16 weights without ±∞ or NaN in <see cref="SelectBody"/> (not a storage type).</summary>
    private const DType FiniteF16 = (DType)(-1);

    /// <summary>Whether an F16 matrix is free of ±∞ and NaN, found once and kept with the tensor.</summary>
    private sealed class FiniteHalves
    {
        private FiniteHalves(bool value) => Value = value;

        private bool Value { get; }

        public static bool Of(Tensor weight) =>
            weight.KernelForm(0, static (w, _) => new FiniteHalves(HalfConversion.AllFinite((ushort*)w.Data, w.ElementCount))).Value;
    }

    private static delegate*<void*, int, int, void> SelectBody(DType type, VectorWidth width) => type switch
    {
        DType.F32 => Select<F32Format>(width),
        DType.F16 => Select<F16Format>(width),
        FiniteF16 => Select<FiniteF16Format>(width),
        DType.BF16 => Select<BF16Format>(width),
        DType.Q8_0 => Select<Q8_0Format>(width),
        DType.Q4_0 => Select<Q4_0Format>(width),
        _ => throw new NotSupportedException($"MatMul does not support {type} weights."),
    };

    private static delegate*<void*, int, int, void> Select<TFormat>(VectorWidth width)
        where TFormat : struct, IWeightFormat => width switch
        {
            VectorWidth.V512 => &RunGroups<TFormat, Vector512<float>>,
            VectorWidth.V256 => &RunGroups<TFormat, Vector256<float>>,
            VectorWidth.V128 => &RunGroups<TFormat, Vector128<float>>,
            _ => &RunGroupsScalar<TFormat>,
        };

    // ---- Scalar reference ----

    private static void RunGroupsScalar<TFormat>(void* context, int start, int end)
        where TFormat : struct, IWeightFormat
    {
        ref Job job = ref *(Job*)context;
        int n = job.Columns;
        int rowEnd = Math.Min(end * GroupRows, job.Rows);
        for (int o = start * GroupRows; o < rowEnd; o++)
        {
            byte* row = job.Weight + (o * job.RowBytes);
            float b = job.Bias != null ? job.Bias[o] : 0f;
            for (int t = 0; t < job.Tokens; t++)
            {
                job.Y[((long)t * job.Rows) + o] = DotScalar<TFormat>(row, job.X + ((long)t * n), n) + b;
            }
        }
    }

    /// <summary>Σ w[i] · x[i] in order, one rounding per multiply and per add.</summary>
    internal static float DotScalar<TFormat>(byte* row, float* x, int n)
        where TFormat : struct, IWeightFormat
    {
        float sum = 0;
        if (!TFormat.Blocked)
        {
            for (int i = 0; i < n; i++)
            {
                sum += TFormat.Value(row, i) * x[i];
            }
        }
        else
        {
            for (int b = 0; b < n / 32; b++)
            {
                byte* block = row + (b * TFormat.BlockBytes);
                float d = TFormat.Scale(block);
                float* xb = x + (b * 32);
                for (int j = 0; j < 32; j++)
                {
                    sum += TFormat.Value(block, j, d) * xb[j];
                }
            }
        }

        return sum;
    }

    // ---- Vector paths ----

    private static void RunGroups<TFormat, T>(void* context, int start, int end)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        ref Job job = ref *(Job*)context;
        int n = job.Columns;
        int rows = job.Rows;
        int rowEnd = Math.Min(end * GroupRows, rows);
        float* s = stackalloc float[GroupRows];
        if (job.Tokens == 1)
        {
            // Decode: straight from the stored weights, converted in registers.
            for (int r = start * GroupRows; r < rowEnd; r += GroupRows)
            {
                byte* w = job.Weight + (r * job.RowBytes);
                if (rowEnd - r >= GroupRows)
                {
                    Dot4<TFormat, T>(w, job.RowBytes, job.X, n, s);
                    Store(ref job, 0, r, s, GroupRows);
                }
                else
                {
                    for (int k = r; k < rowEnd; k++, w += job.RowBytes)
                    {
                        s[0] = Dot1<TFormat, T>(w, job.X, n);
                        Store(ref job, 0, k, s, 1);
                    }
                }
            }

            return;
        }

        // Several tokens: float32 rows in place, other types converted group by group into a buffer.
        bool convert = typeof(TFormat) != typeof(F32Format);
        float* buffer = convert ? Scratch<ScratchTag>.Get(GroupRows * n) : null;
        for (int r = start * GroupRows; r < rowEnd; r += GroupRows)
        {
            int count = Math.Min(GroupRows, rowEnd - r);
            float* w = (float*)(job.Weight + (r * job.RowBytes));
            int stride = n;
            if (convert)
            {
                for (int k = 0; k < count; k++)
                {
                    Expand<TFormat, T>(job.Weight + ((r + k) * job.RowBytes), n, buffer + (k * n));
                }

                w = buffer;
            }

            if (count == GroupRows)
            {
                RunTokens4<T>(ref job, w, stride, r, s);
            }
            else
            {
                for (int k = 0; k < count; k++)
                {
                    RunTokens1<T>(ref job, w + (k * stride), r + k, s);
                }
            }
        }
    }

    private static void RunTokens4<T>(ref Job job, float* w, int stride, int r, float* s)
        where T : struct
    {
        int n = job.Columns;
        float* s2 = stackalloc float[GroupRows];
        int t = 0;
        for (; t + 2 <= job.Tokens; t += 2)
        {
            Tile4x2<T>(w, stride, job.X + ((long)t * n), job.X + ((long)(t + 1) * n), n, s, s2);
            Store(ref job, t, r, s, GroupRows);
            Store(ref job, t + 1, r, s2, GroupRows);
        }

        if (t < job.Tokens)
        {
            Dot4<F32Format, T>((byte*)w, (long)stride * sizeof(float), job.X + ((long)t * n), n, s);
            Store(ref job, t, r, s, GroupRows);
        }
    }

    private static void RunTokens1<T>(ref Job job, float* w, int r, float* s)
        where T : struct
    {
        int n = job.Columns;
        int t = 0;
        for (; t + 2 <= job.Tokens; t += 2)
        {
            Tile1x2<T>(w, job.X + ((long)t * n), job.X + ((long)(t + 1) * n), n, out s[0], out s[1]);
            Store(ref job, t, r, s, 1);
            Store(ref job, t + 1, r, s + 1, 1);
        }

        if (t < job.Tokens)
        {
            s[0] = Dot1<F32Format, T>((byte*)w, job.X + ((long)t * n), n);
            Store(ref job, t, r, s, 1);
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

    /// <summary>Sum of the accumulator's lanes, then the leftover columns i.. in order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish<TFormat, T>(T acc, byte* row, float* x, int i, int n)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        float sum = Simd.Sum(acc);
        for (; i < n; i++)
        {
            sum += TFormat.Value(row, i) * x[i];
        }

        return sum;
    }

    /// <summary>Four consecutive rows (rowBytes apart) times one token.</summary>
    internal static void Dot4<TFormat, T>(byte* w, long rowBytes, float* x, int n, float* s)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        int c = Simd.Count<T>();
        byte* w0 = w, w1 = w + rowBytes, w2 = w + (2 * rowBytes), w3 = w + (3 * rowBytes);
        T a0 = default, a1 = default, a2 = default, a3 = default;
        if (!TFormat.Blocked)
        {
            // The four rows are read side by side: short streams the hardware prefetcher barely picks up before
            // they end. Each step asks for the matching share of the next four rows (contiguous after these).
            byte* next = w + (4 * rowBytes);
            int stepBytes = 4 * c * TFormat.BlockBytes;
            int i = 0;
            for (; i <= n - c; i += c)
            {
                if (Sse.IsSupported)
                {
                    byte* ahead = next + ((long)i * 4 * TFormat.BlockBytes);
                    for (int b = 0; b < stepBytes; b += 64)
                    {
                        Sse.Prefetch0(ahead + b);
                    }
                }

                T xv = Simd.Load<T>(x + i);
                a0 = Simd.MultiplyAdd(TFormat.Load<T>(w0, i), xv, a0);
                a1 = Simd.MultiplyAdd(TFormat.Load<T>(w1, i), xv, a1);
                a2 = Simd.MultiplyAdd(TFormat.Load<T>(w2, i), xv, a2);
                a3 = Simd.MultiplyAdd(TFormat.Load<T>(w3, i), xv, a3);
            }

            s[0] = Finish<TFormat, T>(a0, w0, x, i, n);
            s[1] = Finish<TFormat, T>(a1, w1, x, i, n);
            s[2] = Finish<TFormat, T>(a2, w2, x, i, n);
            s[3] = Finish<TFormat, T>(a3, w3, x, i, n);
            return;
        }

        int blocks = n / 32;
        for (int b = 0; b < blocks; b++)
        {
            long offset = (long)b * TFormat.BlockBytes;
            byte* p0 = w0 + offset, p1 = w1 + offset, p2 = w2 + offset, p3 = w3 + offset;
            Vector128<float> scales = TFormat.Scales(p0, p1, p2, p3), offsets = TFormat.Offsets(scales);
            T d0 = Simd.Broadcast<T>(scales.GetElement(0)), d1 = Simd.Broadcast<T>(scales.GetElement(1));
            T d2 = Simd.Broadcast<T>(scales.GetElement(2)), d3 = Simd.Broadcast<T>(scales.GetElement(3));
            T o0 = Simd.Broadcast<T>(offsets.GetElement(0)), o1 = Simd.Broadcast<T>(offsets.GetElement(1));
            T o2 = Simd.Broadcast<T>(offsets.GetElement(2)), o3 = Simd.Broadcast<T>(offsets.GetElement(3));
            float* xb = x + (b * 32);
            for (int j = 0; j < 16; j += c)
            {
                T xv = Simd.Load<T>(xb + j);
                a0 = Simd.MultiplyAdd(TFormat.Load(p0, j, false, d0, o0), xv, a0);
                a1 = Simd.MultiplyAdd(TFormat.Load(p1, j, false, d1, o1), xv, a1);
                a2 = Simd.MultiplyAdd(TFormat.Load(p2, j, false, d2, o2), xv, a2);
                a3 = Simd.MultiplyAdd(TFormat.Load(p3, j, false, d3, o3), xv, a3);
            }

            for (int j = 16; j < 32; j += c)
            {
                T xv = Simd.Load<T>(xb + j);
                a0 = Simd.MultiplyAdd(TFormat.Load(p0, j, true, d0, o0), xv, a0);
                a1 = Simd.MultiplyAdd(TFormat.Load(p1, j, true, d1, o1), xv, a1);
                a2 = Simd.MultiplyAdd(TFormat.Load(p2, j, true, d2, o2), xv, a2);
                a3 = Simd.MultiplyAdd(TFormat.Load(p3, j, true, d3, o3), xv, a3);
            }
        }

        s[0] = Simd.Sum(a0);
        s[1] = Simd.Sum(a1);
        s[2] = Simd.Sum(a2);
        s[3] = Simd.Sum(a3);
    }

    /// <summary>One row times one token (the same order as one row of <see cref="Dot4"/>).</summary>
    internal static float Dot1<TFormat, T>(byte* w, float* x, int n)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        int c = Simd.Count<T>();
        T a = default;
        if (!TFormat.Blocked)
        {
            int i = 0;
            for (; i <= n - c; i += c)
            {
                a = Simd.MultiplyAdd(TFormat.Load<T>(w, i), Simd.Load<T>(x + i), a);
            }

            return Finish<TFormat, T>(a, w, x, i, n);
        }

        for (int b = 0; b < n / 32; b++)
        {
            byte* p = w + ((long)b * TFormat.BlockBytes);
            BlockScale<TFormat, T>(p, out T d, out T o);
            float* xb = x + (b * 32);
            for (int j = 0; j < 16; j += c)
            {
                a = Simd.MultiplyAdd(TFormat.Load(p, j, false, d, o), Simd.Load<T>(xb + j), a);
            }

            for (int j = 16; j < 32; j += c)
            {
                a = Simd.MultiplyAdd(TFormat.Load(p, j, true, d, o), Simd.Load<T>(xb + j), a);
            }
        }

        return Simd.Sum(a);
    }

    /// <summary>One block's scale and offset, broadcast (the values <see cref="Dot4"/> gets from the four-block path).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void BlockScale<TFormat, T>(byte* block, out T scale, out T offset)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        float d = TFormat.Scale(block);
        scale = Simd.Broadcast<T>(d);
        offset = Simd.Broadcast<T>(TFormat.Offsets(Vector128.Create(d)).ToScalar());
    }

    /// <summary>Converts one row to float32 with the vector body (bit for bit what <see cref="Dot1"/> multiplies).</summary>
    internal static void Expand<TFormat, T>(byte* row, int n, float* destination)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        int c = Simd.Count<T>();
        if (!TFormat.Blocked)
        {
            int i = 0;
            for (; i <= n - c; i += c)
            {
                Simd.Store(TFormat.Load<T>(row, i), destination + i);
            }

            for (; i < n; i++)
            {
                destination[i] = TFormat.Value(row, i);
            }

            return;
        }

        for (int b = 0; b < n / 32; b++)
        {
            byte* p = row + ((long)b * TFormat.BlockBytes);
            BlockScale<TFormat, T>(p, out T d, out T o);
            float* out32 = destination + (b * 32);
            for (int j = 0; j < 16; j += c)
            {
                Simd.Store(TFormat.Load(p, j, false, d, o), out32 + j);
            }

            for (int j = 16; j < 32; j += c)
            {
                Simd.Store(TFormat.Load(p, j, true, d, o), out32 + j);
            }
        }
    }

    /// <summary>Four float rows (stride apart) times two tokens: each weight vector is loaded once for both.</summary>
    internal static void Tile4x2<T>(float* w, int stride, float* xa, float* xb, int n, float* sa, float* sb)
        where T : struct
    {
        int c = Simd.Count<T>();
        float* w0 = w, w1 = w + stride, w2 = w + (2 * stride), w3 = w + (3 * stride);
        T a0 = default, a1 = default, a2 = default, a3 = default;
        T b0 = default, b1 = default, b2 = default, b3 = default;
        int i = 0;
        for (; i <= n - c; i += c)
        {
            T x0 = Simd.Load<T>(xa + i), x1 = Simd.Load<T>(xb + i);
            T v = Simd.Load<T>(w0 + i);
            a0 = Simd.MultiplyAdd(v, x0, a0);
            b0 = Simd.MultiplyAdd(v, x1, b0);
            v = Simd.Load<T>(w1 + i);
            a1 = Simd.MultiplyAdd(v, x0, a1);
            b1 = Simd.MultiplyAdd(v, x1, b1);
            v = Simd.Load<T>(w2 + i);
            a2 = Simd.MultiplyAdd(v, x0, a2);
            b2 = Simd.MultiplyAdd(v, x1, b2);
            v = Simd.Load<T>(w3 + i);
            a3 = Simd.MultiplyAdd(v, x0, a3);
            b3 = Simd.MultiplyAdd(v, x1, b3);
        }

        sa[0] = Finish<F32Format, T>(a0, (byte*)w0, xa, i, n);
        sa[1] = Finish<F32Format, T>(a1, (byte*)w1, xa, i, n);
        sa[2] = Finish<F32Format, T>(a2, (byte*)w2, xa, i, n);
        sa[3] = Finish<F32Format, T>(a3, (byte*)w3, xa, i, n);
        sb[0] = Finish<F32Format, T>(b0, (byte*)w0, xb, i, n);
        sb[1] = Finish<F32Format, T>(b1, (byte*)w1, xb, i, n);
        sb[2] = Finish<F32Format, T>(b2, (byte*)w2, xb, i, n);
        sb[3] = Finish<F32Format, T>(b3, (byte*)w3, xb, i, n);
    }

    /// <summary>One float row times two tokens.</summary>
    private static void Tile1x2<T>(float* w, float* xa, float* xb, int n, out float sa, out float sb)
        where T : struct
    {
        int c = Simd.Count<T>();
        T a = default, b = default;
        int i = 0;
        for (; i <= n - c; i += c)
        {
            T v = Simd.Load<T>(w + i);
            a = Simd.MultiplyAdd(v, Simd.Load<T>(xa + i), a);
            b = Simd.MultiplyAdd(v, Simd.Load<T>(xb + i), b);
        }

        sa = Finish<F32Format, T>(a, (byte*)w, xa, i, n);
        sb = Finish<F32Format, T>(b, (byte*)w, xb, i, n);
    }
}
