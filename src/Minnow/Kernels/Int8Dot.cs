using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace Minnow.Kernels;

/// <summary>
/// Integer dot products of one 32-value block of eight interleaved weight rows (<see cref="InterleavedWeights"/>)
/// against one row of Q8_0 activation quants: lane r holds the exact int32 sum Σ_j w_r[j] · x[j]. The block's
/// values come in 32-byte chunks, each holding four consecutive values of every row (row r at bytes 4r..4r+3), so
/// a chunk times four activations broadcast to every lane gives each row's partial sum in its own lane: no
/// horizontal reduction. Q8_0 blocks are eight such chunks of signed bytes (values 4k..4k+3 in chunk k); Q4_0
/// blocks are four chunks of nibble bytes (the low nibbles are values 4m..4m+3, the high ones 16 + 4m..16 + 4m + 3,
/// both 0..15 before the −8 offset). Integer sums are exact, so every implementation returns the scalar loop's
/// numbers; they differ only in the instructions. The 128-bit methods compute four rows: those of the 16 bytes
/// at the start of each chunk (rows 0..3), or, given the pointer plus 16, rows 4..7.
/// </summary>
internal unsafe interface IInt8RowsDot
{
    /// <summary>Σ_j w_r[j] · x[j] for the eight rows of an interleaved Q8_0 block (256 bytes).</summary>
    static abstract Vector256<int> Signed8(byte* q, sbyte* x);

    /// <summary>Σ_j nibble_r[j] · x[j] for the eight rows of an interleaved Q4_0 block (128 bytes).</summary>
    static abstract Vector256<int> Nibbles8(byte* q, sbyte* x);

    /// <summary><see cref="Signed8"/> for four rows (chunks 32 bytes apart, 16 bytes of each read).</summary>
    static abstract Vector128<int> Signed4(byte* q, sbyte* x);

    /// <summary><see cref="Nibbles8"/> for four rows (chunks 32 bytes apart, 16 bytes of each read).</summary>
    static abstract Vector128<int> Nibbles4(byte* q, sbyte* x);
}

/// <summary>
/// <see cref="IInt8RowsDot"/>'s 256-bit products for four tokens at once (activation rows <c>stride</c> bytes
/// apart): each chunk of weights is loaded and unpacked once for the four, as prefill multiplies many tokens.
/// </summary>
internal unsafe interface IInt8RowsDotX4 : IInt8RowsDot
{
    static abstract void Signed8x4(byte* q, sbyte* x, long stride, out Vector256<int> s0, out Vector256<int> s1, out Vector256<int> s2, out Vector256<int> s3);

    static abstract void Nibbles8x4(byte* q, sbyte* x, long stride, out Vector256<int> s0, out Vector256<int> s1, out Vector256<int> s2, out Vector256<int> s3);
}

/// <summary>The plain loops over the interleaved layout: the reference of every other implementation.</summary>
internal readonly unsafe struct ScalarInt8Dot : IInt8RowsDot
{
    public static Vector256<int> Signed8(byte* q, sbyte* x) => Vector256.Create(Signed4(q, x), Signed4(q + 16, x));

    public static Vector256<int> Nibbles8(byte* q, sbyte* x) => Vector256.Create(Nibbles4(q, x), Nibbles4(q + 16, x));

    public static Vector128<int> Signed4(byte* q, sbyte* x) =>
        Vector128.Create(SignedRow(q, x, 0), SignedRow(q, x, 1), SignedRow(q, x, 2), SignedRow(q, x, 3));

    public static Vector128<int> Nibbles4(byte* q, sbyte* x) =>
        Vector128.Create(NibbleRow(q, x, 0), NibbleRow(q, x, 1), NibbleRow(q, x, 2), NibbleRow(q, x, 3));

    private static int SignedRow(byte* q, sbyte* x, int r)
    {
        int sum = 0;
        for (int j = 0; j < 32; j++)
        {
            sum += ((sbyte*)q)[(32 * (j / 4)) + (4 * r) + (j % 4)] * x[j];
        }

        return sum;
    }

    private static int NibbleRow(byte* q, sbyte* x, int r)
    {
        int sum = 0;
        for (int j = 0; j < 16; j++)
        {
            byte b = q[(32 * (j / 4)) + (4 * r) + (j % 4)];
            sum += ((b & 0x0F) * x[j]) + ((b >> 4) * x[j + 16]);
        }

        return sum;
    }
}

/// <summary>Portable <see cref="Vector128"/> operations only (what runs where no integer dot instruction is known).</summary>
internal readonly unsafe struct PortableInt8Dot : IInt8RowsDot
{
    public static Vector256<int> Signed8(byte* q, sbyte* x) => Vector256.Create(Signed4(q, x), Signed4(q + 16, x));

    public static Vector256<int> Nibbles8(byte* q, sbyte* x) => Vector256.Create(Nibbles4(q, x), Nibbles4(q + 16, x));

    public static Vector128<int> Signed4(byte* q, sbyte* x)
    {
        Vector128<int> r01 = Vector128<int>.Zero, r23 = Vector128<int>.Zero;
        for (int k = 0; k < 8; k++)
        {
            Accumulate(Vector128.Load((sbyte*)q + (32 * k)), Broadcast(x + (4 * k)), ref r01, ref r23);
        }

        return Finish(r01, r23);
    }

    public static Vector128<int> Nibbles4(byte* q, sbyte* x)
    {
        Vector128<int> r01 = Vector128<int>.Zero, r23 = Vector128<int>.Zero;
        for (int m = 0; m < 4; m++)
        {
            var v = Vector128.Load(q + (32 * m));
            Accumulate((v & Vector128.Create((byte)0x0F)).AsSByte(), Broadcast(x + (4 * m)), ref r01, ref r23);
            Accumulate((v >>> 4).AsSByte(), Broadcast(x + 16 + (4 * m)), ref r01, ref r23);
        }

        return Finish(r01, r23);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<sbyte> Broadcast(sbyte* x) => Vector128.Create(Unsafe.ReadUnaligned<int>(x)).AsSByte();

    /// <summary>Sixteen products in 16 bits (|w · x| ≤ 128 · 127 fits), widened: rows 0 and 1 to r01, 2 and 3 to r23.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Accumulate(Vector128<sbyte> w, Vector128<sbyte> x, ref Vector128<int> r01, ref Vector128<int> r23)
    {
        var (wl, wh) = Vector128.Widen(w);
        var (xl, xh) = Vector128.Widen(x);
        var (a, b) = Vector128.Widen(wl * xl);
        var (c, d) = Vector128.Widen(wh * xh);
        r01 += Vector128.Create(Vector128.Sum(a), Vector128.Sum(b), 0, 0);
        r23 += Vector128.Create(Vector128.Sum(c), Vector128.Sum(d), 0, 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Finish(Vector128<int> r01, Vector128<int> r23) =>
        Vector128.Create(r01.GetElement(0), r01.GetElement(1), r23.GetElement(0), r23.GetElement(1));
}

/// <summary>
/// 128-bit instructions: Arm64 SDOT (<see cref="Dp"/>, one instruction per chunk), else Arm64 widening multiplies
/// and pairwise adds; x86 SSSE3 <c>pmaddubsw</c> (with ggml's sign trick for signed weights) and <c>pmaddwd</c>;
/// else portable.
/// </summary>
internal readonly unsafe struct Vector128Int8Dot : IInt8RowsDot
{
    public static Vector256<int> Signed8(byte* q, sbyte* x) => Vector256.Create(Signed4(q, x), Signed4(q + 16, x));

    public static Vector256<int> Nibbles8(byte* q, sbyte* x) => Vector256.Create(Nibbles4(q, x), Nibbles4(q + 16, x));

    public static Vector128<int> Signed4(byte* q, sbyte* x)
    {
        if (Ssse3.IsSupported)
        {
            var sum = Vector128<int>.Zero;
            for (int k = 0; k < 8; k++)
            {
                var w = Vector128.Load((sbyte*)q + (32 * k));
                sum += Sse2.MultiplyAddAdjacent(Ssse3.MultiplyAddAdjacent(Ssse3.Abs(w), Ssse3.Sign(Broadcast(x + (4 * k)), w)), Vector128<short>.One);
            }

            return sum;
        }

        if (AdvSimd.Arm64.IsSupported)
        {
            var sum = Vector128<int>.Zero;
            for (int k = 0; k < 8; k++)
            {
                sum = Arm(sum, Vector128.Load((sbyte*)q + (32 * k)), Broadcast(x + (4 * k)));
            }

            return sum;
        }

        return PortableInt8Dot.Signed4(q, x);
    }

    public static Vector128<int> Nibbles4(byte* q, sbyte* x)
    {
        if (Ssse3.IsSupported)
        {
            // Nibbles are unsigned already; eight pair sums of at most 2 · 15 · 127 stay exact in 16 bits.
            var sum = Vector128<short>.Zero;
            for (int m = 0; m < 4; m++)
            {
                var v = Vector128.Load(q + (32 * m));
                sum += Ssse3.MultiplyAddAdjacent(v & Vector128.Create((byte)0x0F), Broadcast(x + (4 * m)));
                sum += Ssse3.MultiplyAddAdjacent((v.AsUInt16() >>> 4).AsByte() & Vector128.Create((byte)0x0F), Broadcast(x + 16 + (4 * m)));
            }

            return Sse2.MultiplyAddAdjacent(sum, Vector128<short>.One);
        }

        if (AdvSimd.Arm64.IsSupported)
        {
            var sum = Vector128<int>.Zero;
            for (int m = 0; m < 4; m++)
            {
                var v = Vector128.Load(q + (32 * m));
                sum = Arm(sum, (v & Vector128.Create((byte)0x0F)).AsSByte(), Broadcast(x + (4 * m)));
                sum = Arm(sum, (v >>> 4).AsSByte(), Broadcast(x + 16 + (4 * m)));
            }

            return sum;
        }

        return PortableInt8Dot.Nibbles4(q, x);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<sbyte> Broadcast(sbyte* x) => Vector128.Create(Unsafe.ReadUnaligned<int>(x)).AsSByte();

    /// <summary>sum + each lane's four products: SDOT, or widening multiplies and two rounds of pairwise adds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Arm(Vector128<int> sum, Vector128<sbyte> w, Vector128<sbyte> x)
    {
        if (Dp.IsSupported)
        {
            return Dp.DotProduct(sum, w, x);
        }

        var low = AdvSimd.AddPairwiseWidening(AdvSimd.MultiplyWideningLower(w.GetLower(), x.GetLower()));
        var high = AdvSimd.AddPairwiseWidening(AdvSimd.MultiplyWideningUpper(w, x));
        return sum + AdvSimd.Arm64.AddPairwise(low, high);
    }
}

/// <summary>
/// AVX2: one 256-bit <c>vpmaddubsw</c> per chunk against four activations broadcast to every lane
/// (<c>vpbroadcastd</c> from memory), with ggml's sign trick for signed weights, then <c>vpmaddwd</c> by ones.
/// Without AVX2 it falls back to <see cref="Vector128Int8Dot"/>.
/// </summary>
internal readonly unsafe struct Avx2Int8Dot : IInt8RowsDotX4
{
    public static Vector256<int> Signed8(byte* q, sbyte* x)
    {
        if (!Avx2.IsSupported)
        {
            return Vector128Int8Dot.Signed8(q, x);
        }

        // Pair sums reach 2 · 128 · 127: two would overflow 16 bits, so each chunk widens on its own.
        var sum0 = Vector256<int>.Zero;
        var sum1 = Vector256<int>.Zero;
        for (int k = 0; k < 8; k += 2)
        {
            sum0 += SignedChunk(q + (32 * k), x + (4 * k));
            sum1 += SignedChunk(q + (32 * (k + 1)), x + (4 * (k + 1)));
        }

        return sum0 + sum1;
    }

    public static Vector256<int> Nibbles8(byte* q, sbyte* x)
    {
        if (!Avx2.IsSupported)
        {
            return Vector128Int8Dot.Nibbles8(q, x);
        }

        // Eight pair sums of at most 2 · 15 · 127 stay exact in 16 bits: one widening for the whole block.
        var mask = Vector256.Create((byte)0x0F);
        var sum = Vector256<short>.Zero;
        for (int m = 0; m < 4; m++)
        {
            var v = Vector256.Load(q + (32 * m));
            sum += Avx2.MultiplyAddAdjacent(v & mask, Broadcast(x + (4 * m)));
            sum += Avx2.MultiplyAddAdjacent((v.AsUInt16() >>> 4).AsByte() & mask, Broadcast(x + 16 + (4 * m)));
        }

        return Avx2.MultiplyAddAdjacent(sum, Vector256<short>.One);
    }

    public static void Signed8x4(byte* q, sbyte* x, long stride, out Vector256<int> s0, out Vector256<int> s1, out Vector256<int> s2, out Vector256<int> s3)
    {
        if (!Avx2.IsSupported)
        {
            s0 = Signed8(q, x);
            s1 = Signed8(q, x + stride);
            s2 = Signed8(q, x + (2 * stride));
            s3 = Signed8(q, x + (3 * stride));
            return;
        }

        s0 = s1 = s2 = s3 = Vector256<int>.Zero;
        for (int k = 0; k < 8; k++)
        {
            var w = Vector256.Load((sbyte*)q + (32 * k));
            var u = Avx2.Abs(w);
            sbyte* xk = x + (4 * k);
            s0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, Avx2.Sign(Broadcast(xk), w)), Vector256<short>.One);
            s1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, Avx2.Sign(Broadcast(xk + stride), w)), Vector256<short>.One);
            s2 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, Avx2.Sign(Broadcast(xk + (2 * stride)), w)), Vector256<short>.One);
            s3 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, Avx2.Sign(Broadcast(xk + (3 * stride)), w)), Vector256<short>.One);
        }
    }

    public static void Nibbles8x4(byte* q, sbyte* x, long stride, out Vector256<int> s0, out Vector256<int> s1, out Vector256<int> s2, out Vector256<int> s3)
    {
        if (!Avx2.IsSupported)
        {
            s0 = Nibbles8(q, x);
            s1 = Nibbles8(q, x + stride);
            s2 = Nibbles8(q, x + (2 * stride));
            s3 = Nibbles8(q, x + (3 * stride));
            return;
        }

        var mask = Vector256.Create((byte)0x0F);
        Vector256<short> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int m = 0; m < 4; m++)
        {
            var v = Vector256.Load(q + (32 * m));
            var low = v & mask;
            var high = (v.AsUInt16() >>> 4).AsByte() & mask;
            sbyte* xl = x + (4 * m);
            sbyte* xh = xl + 16;
            a0 += Avx2.MultiplyAddAdjacent(low, Broadcast(xl)) + Avx2.MultiplyAddAdjacent(high, Broadcast(xh));
            a1 += Avx2.MultiplyAddAdjacent(low, Broadcast(xl + stride)) + Avx2.MultiplyAddAdjacent(high, Broadcast(xh + stride));
            a2 += Avx2.MultiplyAddAdjacent(low, Broadcast(xl + (2 * stride))) + Avx2.MultiplyAddAdjacent(high, Broadcast(xh + (2 * stride)));
            a3 += Avx2.MultiplyAddAdjacent(low, Broadcast(xl + (3 * stride))) + Avx2.MultiplyAddAdjacent(high, Broadcast(xh + (3 * stride)));
        }

        s0 = Avx2.MultiplyAddAdjacent(a0, Vector256<short>.One);
        s1 = Avx2.MultiplyAddAdjacent(a1, Vector256<short>.One);
        s2 = Avx2.MultiplyAddAdjacent(a2, Vector256<short>.One);
        s3 = Avx2.MultiplyAddAdjacent(a3, Vector256<short>.One);
    }

    public static Vector128<int> Signed4(byte* q, sbyte* x) => Vector128Int8Dot.Signed4(q, x);

    public static Vector128<int> Nibbles4(byte* q, sbyte* x) => Vector128Int8Dot.Nibbles4(q, x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<sbyte> Broadcast(sbyte* x) => Avx2.BroadcastScalarToVector256((int*)x).AsSByte();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SignedChunk(byte* q, sbyte* x)
    {
        var w = Vector256.Load((sbyte*)q);
        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Avx2.Abs(w), Avx2.Sign(Broadcast(x), w)), Vector256<short>.One);
    }
}

/// <summary>
/// AVX-VNNI <c>vpdpbusd</c>: unsigned × signed bytes summed in fours straight into int32 lanes, one instruction
/// per chunk. Without AVX-VNNI it falls back to <see cref="Avx2Int8Dot"/>. (.NET 10 exposes no separate AVX-512
/// VNNI class; the 512-bit path uses these 256-bit bodies.)
/// </summary>
internal readonly unsafe struct AvxVnniInt8Dot : IInt8RowsDotX4
{
    public static Vector256<int> Signed8(byte* q, sbyte* x)
    {
        if (!AvxVnni.IsSupported)
        {
            return Avx2Int8Dot.Signed8(q, x);
        }

        var sum0 = Vector256<int>.Zero;
        var sum1 = Vector256<int>.Zero;
        for (int k = 0; k < 8; k += 2)
        {
            var w0 = Vector256.Load((sbyte*)q + (32 * k));
            var w1 = Vector256.Load((sbyte*)q + (32 * (k + 1)));
            sum0 = AvxVnni.MultiplyWideningAndAdd(sum0, Avx2.Abs(w0), Avx2.Sign(Avx2Int8Dot.Broadcast(x + (4 * k)), w0));
            sum1 = AvxVnni.MultiplyWideningAndAdd(sum1, Avx2.Abs(w1), Avx2.Sign(Avx2Int8Dot.Broadcast(x + (4 * (k + 1))), w1));
        }

        return sum0 + sum1;
    }

    public static Vector256<int> Nibbles8(byte* q, sbyte* x)
    {
        if (!AvxVnni.IsSupported)
        {
            return Avx2Int8Dot.Nibbles8(q, x);
        }

        var mask = Vector256.Create((byte)0x0F);
        var sum0 = Vector256<int>.Zero;
        var sum1 = Vector256<int>.Zero;
        for (int m = 0; m < 4; m++)
        {
            var v = Vector256.Load(q + (32 * m));
            sum0 = AvxVnni.MultiplyWideningAndAdd(sum0, v & mask, Avx2Int8Dot.Broadcast(x + (4 * m)));
            sum1 = AvxVnni.MultiplyWideningAndAdd(sum1, (v.AsUInt16() >>> 4).AsByte() & mask, Avx2Int8Dot.Broadcast(x + 16 + (4 * m)));
        }

        return sum0 + sum1;
    }

    public static Vector128<int> Signed4(byte* q, sbyte* x) => Vector128Int8Dot.Signed4(q, x);

    public static Vector128<int> Nibbles4(byte* q, sbyte* x) => Vector128Int8Dot.Nibbles4(q, x);

    public static void Signed8x4(byte* q, sbyte* x, long stride, out Vector256<int> s0, out Vector256<int> s1, out Vector256<int> s2, out Vector256<int> s3)
    {
        if (!AvxVnni.IsSupported)
        {
            Avx2Int8Dot.Signed8x4(q, x, stride, out s0, out s1, out s2, out s3);
            return;
        }

        s0 = s1 = s2 = s3 = Vector256<int>.Zero;
        for (int k = 0; k < 8; k++)
        {
            var w = Vector256.Load((sbyte*)q + (32 * k));
            var u = Avx2.Abs(w);
            sbyte* xk = x + (4 * k);
            s0 = AvxVnni.MultiplyWideningAndAdd(s0, u, Avx2.Sign(Avx2Int8Dot.Broadcast(xk), w));
            s1 = AvxVnni.MultiplyWideningAndAdd(s1, u, Avx2.Sign(Avx2Int8Dot.Broadcast(xk + stride), w));
            s2 = AvxVnni.MultiplyWideningAndAdd(s2, u, Avx2.Sign(Avx2Int8Dot.Broadcast(xk + (2 * stride)), w));
            s3 = AvxVnni.MultiplyWideningAndAdd(s3, u, Avx2.Sign(Avx2Int8Dot.Broadcast(xk + (3 * stride)), w));
        }
    }

    public static void Nibbles8x4(byte* q, sbyte* x, long stride, out Vector256<int> s0, out Vector256<int> s1, out Vector256<int> s2, out Vector256<int> s3)
    {
        if (!AvxVnni.IsSupported)
        {
            Avx2Int8Dot.Nibbles8x4(q, x, stride, out s0, out s1, out s2, out s3);
            return;
        }

        var mask = Vector256.Create((byte)0x0F);
        s0 = s1 = s2 = s3 = Vector256<int>.Zero;
        for (int m = 0; m < 4; m++)
        {
            var v = Vector256.Load(q + (32 * m));
            var low = v & mask;
            var high = (v.AsUInt16() >>> 4).AsByte() & mask;
            sbyte* xl = x + (4 * m);
            sbyte* xh = xl + 16;
            s0 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(s0, low, Avx2Int8Dot.Broadcast(xl)), high, Avx2Int8Dot.Broadcast(xh));
            s1 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(s1, low, Avx2Int8Dot.Broadcast(xl + stride)), high, Avx2Int8Dot.Broadcast(xh + stride));
            s2 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(s2, low, Avx2Int8Dot.Broadcast(xl + (2 * stride))), high, Avx2Int8Dot.Broadcast(xh + (2 * stride)));
            s3 = AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(s3, low, Avx2Int8Dot.Broadcast(xl + (3 * stride))), high, Avx2Int8Dot.Broadcast(xh + (3 * stride)));
        }
    }
}
