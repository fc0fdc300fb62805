using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace Minnow.Kernels;

/// <summary>
/// Integer dot products of one 32-value block, for four weight rows against one row of Q8_0 activation quants:
/// the exact int32 sums Σ_j w_r[j] · x[j], r = 0..3. Integer sums are exact, so every implementation returns the
/// same numbers as the scalar loop; they differ only in the instructions. Weights are either signed bytes (Q8_0)
/// or the 16 packed bytes of a Q4_0 block, whose nibbles (0..15, before the −8 offset) are values j (low) and
/// j + 16 (high).
/// </summary>
internal unsafe interface IInt8BlockDot
{
    /// <summary>Σ_j w_r[j] · x[j] for four rows of 32 signed bytes.</summary>
    static abstract Vector128<int> Signed(sbyte* w0, sbyte* w1, sbyte* w2, sbyte* w3, sbyte* x);

    /// <summary>Σ_j nibble_r[j] · x[j] for four Q4_0 blocks' 16 bytes of nibbles.</summary>
    static abstract Vector128<int> Nibbles(byte* q0, byte* q1, byte* q2, byte* q3, sbyte* x);

    /// <summary>Σ_j u_r[j] · x[j] for four rows of 32 bytes 0..127 (unpacked nibbles), which read the same signed.</summary>
    static abstract Vector128<int> Unsigned(byte* u0, byte* u1, byte* u2, byte* u3, sbyte* x);

    /// <summary>Whether <see cref="Signed2"/> and <see cref="Unsigned2"/> are native (256-bit) rather than two calls.</summary>
    static virtual bool PairsTokens => false;

    /// <summary>[<see cref="Signed"/>(xa), <see cref="Signed"/>(xb)] for four rows 32 bytes apart: each weight loaded once.</summary>
    static virtual Vector256<int> Signed2(sbyte* w, sbyte* xa, sbyte* xb) => throw new NotSupportedException();

    /// <summary>[<see cref="Unsigned"/>(xa), <see cref="Unsigned"/>(xb)] for four rows 32 bytes apart.</summary>
    static virtual Vector256<int> Unsigned2(byte* u, sbyte* xa, sbyte* xb) => throw new NotSupportedException();
}

/// <summary>The plain loops: the reference of every other implementation.</summary>
internal readonly unsafe struct ScalarInt8Dot : IInt8BlockDot
{
    public static Vector128<int> Signed(sbyte* w0, sbyte* w1, sbyte* w2, sbyte* w3, sbyte* x) =>
        Vector128.Create(Signed(w0, x), Signed(w1, x), Signed(w2, x), Signed(w3, x));

    public static Vector128<int> Nibbles(byte* q0, byte* q1, byte* q2, byte* q3, sbyte* x) =>
        Vector128.Create(Nibbles(q0, x), Nibbles(q1, x), Nibbles(q2, x), Nibbles(q3, x));

    public static Vector128<int> Unsigned(byte* u0, byte* u1, byte* u2, byte* u3, sbyte* x) =>
        Vector128.Create(Unsigned(u0, x), Unsigned(u1, x), Unsigned(u2, x), Unsigned(u3, x));

    public static int Unsigned(byte* u, sbyte* x)
    {
        int sum = 0;
        for (int j = 0; j < 32; j++)
        {
            sum += u[j] * x[j];
        }

        return sum;
    }

    public static int Signed(sbyte* w, sbyte* x)
    {
        int sum = 0;
        for (int j = 0; j < 32; j++)
        {
            sum += w[j] * x[j];
        }

        return sum;
    }

    public static int Nibbles(byte* q, sbyte* x)
    {
        int sum = 0;
        for (int j = 0; j < 16; j++)
        {
            sum += ((q[j] & 0x0F) * x[j]) + ((q[j] >> 4) * x[j + 16]);
        }

        return sum;
    }
}

/// <summary>Portable <see cref="Vector128"/> operations only (what runs where no integer dot instruction is known).</summary>
internal readonly unsafe struct PortableInt8Dot : IInt8BlockDot
{
    public static Vector128<int> Signed(sbyte* w0, sbyte* w1, sbyte* w2, sbyte* w3, sbyte* x)
    {
        Vector128<sbyte> xl = Vector128.Load(x), xh = Vector128.Load(x + 16);
        return Vector128.Create(Row(w0, xl, xh), Row(w1, xl, xh), Row(w2, xl, xh), Row(w3, xl, xh));
    }

    public static Vector128<int> Nibbles(byte* q0, byte* q1, byte* q2, byte* q3, sbyte* x)
    {
        Vector128<sbyte> xl = Vector128.Load(x), xh = Vector128.Load(x + 16);
        return Vector128.Create(Row(q0, xl, xh), Row(q1, xl, xh), Row(q2, xl, xh), Row(q3, xl, xh));
    }

    public static Vector128<int> Unsigned(byte* u0, byte* u1, byte* u2, byte* u3, sbyte* x) =>
        Signed((sbyte*)u0, (sbyte*)u1, (sbyte*)u2, (sbyte*)u3, x);

    private static int Row(sbyte* w, Vector128<sbyte> xl, Vector128<sbyte> xh) =>
        Vector128.Sum(Products(Vector128.Load(w), xl) + Products(Vector128.Load(w + 16), xh));

    private static int Row(byte* q, Vector128<sbyte> xl, Vector128<sbyte> xh)
    {
        var v = Vector128.Load(q);
        return Vector128.Sum(Products((v & Vector128.Create((byte)0x0F)).AsSByte(), xl) + Products((v >>> 4).AsSByte(), xh));
    }

    /// <summary>Sixteen products in 16 bits (|w · x| ≤ 128 · 127 fits), widened and summed to four int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Products(Vector128<sbyte> w, Vector128<sbyte> x)
    {
        var (wl, wh) = Vector128.Widen(w);
        var (xl, xh) = Vector128.Widen(x);
        var (a, b) = Vector128.Widen(wl * xl);
        var (c, d) = Vector128.Widen(wh * xh);
        return (a + b) + (c + d);
    }
}

/// <summary>
/// 128-bit instructions: Arm64 SDOT (<see cref="Dp"/>), else Arm64 widening multiplies; x86 SSSE3 <c>pmaddubsw</c>
/// with ggml's sign trick (|w| unsigned times x with w's sign) then <c>pmaddwd</c> by ones; else portable.
/// </summary>
internal readonly unsafe struct Vector128Int8Dot : IInt8BlockDot
{
    public static Vector128<int> Signed(sbyte* w0, sbyte* w1, sbyte* w2, sbyte* w3, sbyte* x)
    {
        if (!Ssse3.IsSupported && !AdvSimd.Arm64.IsSupported)
        {
            return PortableInt8Dot.Signed(w0, w1, w2, w3, x);
        }

        Vector128<sbyte> xl = Vector128.Load(x), xh = Vector128.Load(x + 16);
        return Reduce(
            Row(Vector128.Load(w0), Vector128.Load(w0 + 16), xl, xh),
            Row(Vector128.Load(w1), Vector128.Load(w1 + 16), xl, xh),
            Row(Vector128.Load(w2), Vector128.Load(w2 + 16), xl, xh),
            Row(Vector128.Load(w3), Vector128.Load(w3 + 16), xl, xh));
    }

    public static Vector128<int> Nibbles(byte* q0, byte* q1, byte* q2, byte* q3, sbyte* x)
    {
        if (!Ssse3.IsSupported && !AdvSimd.Arm64.IsSupported)
        {
            return PortableInt8Dot.Nibbles(q0, q1, q2, q3, x);
        }

        Vector128<sbyte> xl = Vector128.Load(x), xh = Vector128.Load(x + 16);
        return Reduce(NibbleRow(q0, xl, xh), NibbleRow(q1, xl, xh), NibbleRow(q2, xl, xh), NibbleRow(q3, xl, xh));
    }

    public static Vector128<int> Unsigned(byte* u0, byte* u1, byte* u2, byte* u3, sbyte* x)
    {
        if (!Ssse3.IsSupported)
        {
            return AdvSimd.Arm64.IsSupported ? Signed((sbyte*)u0, (sbyte*)u1, (sbyte*)u2, (sbyte*)u3, x) : PortableInt8Dot.Unsigned(u0, u1, u2, u3, x);
        }

        Vector128<sbyte> xl = Vector128.Load(x), xh = Vector128.Load(x + 16);
        return Reduce(UnsignedRow(u0, xl, xh), UnsignedRow(u1, xl, xh), UnsignedRow(u2, xl, xh), UnsignedRow(u3, xl, xh));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> UnsignedRow(byte* u, Vector128<sbyte> xl, Vector128<sbyte> xh) =>
        Sse2.MultiplyAddAdjacent(Ssse3.MultiplyAddAdjacent(Vector128.Load(u), xl), Vector128<short>.One)
        + Sse2.MultiplyAddAdjacent(Ssse3.MultiplyAddAdjacent(Vector128.Load(u + 16), xh), Vector128<short>.One);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> NibbleRow(byte* q, Vector128<sbyte> xl, Vector128<sbyte> xh)
    {
        var v = Vector128.Load(q);
        var low = v & Vector128.Create((byte)0x0F);
        var high = v >>> 4;
        if (Ssse3.IsSupported)
        {
            // Nibbles are already unsigned: no sign trick.
            return Sse2.MultiplyAddAdjacent(Ssse3.MultiplyAddAdjacent(low, xl), Vector128<short>.One)
                + Sse2.MultiplyAddAdjacent(Ssse3.MultiplyAddAdjacent(high, xh), Vector128<short>.One);
        }

        return Row(low.AsSByte(), high.AsSByte(), xl, xh);
    }

    /// <summary>Four int32 partial sums of one row's 32 products.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Row(Vector128<sbyte> wl, Vector128<sbyte> wh, Vector128<sbyte> xl, Vector128<sbyte> xh)
    {
        if (Ssse3.IsSupported)
        {
            // |w| · (x with w's sign) = w · x; pair sums ≤ 2 · 128 · 127 cannot saturate.
            return Sse2.MultiplyAddAdjacent(Ssse3.MultiplyAddAdjacent(Ssse3.Abs(wl), Ssse3.Sign(xl, wl)), Vector128<short>.One)
                + Sse2.MultiplyAddAdjacent(Ssse3.MultiplyAddAdjacent(Ssse3.Abs(wh), Ssse3.Sign(xh, wh)), Vector128<short>.One);
        }

        if (Dp.IsSupported)
        {
            return Dp.DotProduct(Dp.DotProduct(Vector128<int>.Zero, wl, xl), wh, xh);
        }

        var low = AdvSimd.MultiplyWideningLower(wl.GetLower(), xl.GetLower()) + AdvSimd.MultiplyWideningUpper(wl, xl);
        var high = AdvSimd.MultiplyWideningLower(wh.GetLower(), xh.GetLower()) + AdvSimd.MultiplyWideningUpper(wh, xh);
        return AdvSimd.AddPairwiseWidening(low) + AdvSimd.AddPairwiseWidening(high);
    }

    /// <summary>[Σa0, Σa1, Σa2, Σa3] by two rounds of pairwise adds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Reduce(Vector128<int> a0, Vector128<int> a1, Vector128<int> a2, Vector128<int> a3)
    {
        if (Ssse3.IsSupported)
        {
            return Ssse3.HorizontalAdd(Ssse3.HorizontalAdd(a0, a1), Ssse3.HorizontalAdd(a2, a3));
        }

        return AdvSimd.Arm64.AddPairwise(AdvSimd.Arm64.AddPairwise(a0, a1), AdvSimd.Arm64.AddPairwise(a2, a3));
    }
}

/// <summary>
/// AVX2, as ggml's <c>mul_sum_i8_pairs</c>: one 256-bit <c>vpmaddubsw</c> (with the sign trick for signed
/// weights) and <c>vpmaddwd</c> by ones per row, then three <c>vphaddd</c> for the four rows. Without AVX2 it
/// falls back to <see cref="Vector128Int8Dot"/>.
/// </summary>
internal readonly unsafe struct Avx2Int8Dot : IInt8BlockDot
{
    public static Vector128<int> Signed(sbyte* w0, sbyte* w1, sbyte* w2, sbyte* w3, sbyte* x)
    {
        if (!Avx2.IsSupported)
        {
            return Vector128Int8Dot.Signed(w0, w1, w2, w3, x);
        }

        var xv = Vector256.Load(x);
        return Reduce(SignedRow(w0, xv), SignedRow(w1, xv), SignedRow(w2, xv), SignedRow(w3, xv));
    }

    public static Vector128<int> Nibbles(byte* q0, byte* q1, byte* q2, byte* q3, sbyte* x)
    {
        if (!Avx2.IsSupported)
        {
            return Vector128Int8Dot.Nibbles(q0, q1, q2, q3, x);
        }

        var xv = Vector256.Load(x);
        return ReduceSmall(
            Avx2.MultiplyAddAdjacent(Unpack(q0), xv), Avx2.MultiplyAddAdjacent(Unpack(q1), xv),
            Avx2.MultiplyAddAdjacent(Unpack(q2), xv), Avx2.MultiplyAddAdjacent(Unpack(q3), xv));
    }

    public static Vector128<int> Unsigned(byte* u0, byte* u1, byte* u2, byte* u3, sbyte* x)
    {
        if (!Avx2.IsSupported)
        {
            return Vector128Int8Dot.Unsigned(u0, u1, u2, u3, x);
        }

        var xv = Vector256.Load(x);
        return ReduceSmall(
            Avx2.MultiplyAddAdjacent(Vector256.Load(u0), xv), Avx2.MultiplyAddAdjacent(Vector256.Load(u1), xv),
            Avx2.MultiplyAddAdjacent(Vector256.Load(u2), xv), Avx2.MultiplyAddAdjacent(Vector256.Load(u3), xv));
    }

    public static bool PairsTokens => Avx2.IsSupported;

    public static Vector256<int> Signed2(sbyte* w, sbyte* xa, sbyte* xb)
    {
        Vector256<sbyte> w0 = Vector256.Load(w), w1 = Vector256.Load(w + 32), w2 = Vector256.Load(w + 64), w3 = Vector256.Load(w + 96);
        Vector256<byte> u0 = Avx2.Abs(w0), u1 = Avx2.Abs(w1), u2 = Avx2.Abs(w2), u3 = Avx2.Abs(w3);
        Vector256<sbyte> a = Vector256.Load(xa), b = Vector256.Load(xb);
        return Reduce(
            Pairs(u0, Avx2.Sign(a, w0)), Pairs(u1, Avx2.Sign(a, w1)), Pairs(u2, Avx2.Sign(a, w2)), Pairs(u3, Avx2.Sign(a, w3)),
            Pairs(u0, Avx2.Sign(b, w0)), Pairs(u1, Avx2.Sign(b, w1)), Pairs(u2, Avx2.Sign(b, w2)), Pairs(u3, Avx2.Sign(b, w3)));
    }

    public static Vector256<int> Unsigned2(byte* u, sbyte* xa, sbyte* xb)
    {
        Vector256<byte> u0 = Vector256.Load(u), u1 = Vector256.Load(u + 32), u2 = Vector256.Load(u + 64), u3 = Vector256.Load(u + 96);
        Vector256<sbyte> a = Vector256.Load(xa), b = Vector256.Load(xb);
        var sa = ReduceSmall(Avx2.MultiplyAddAdjacent(u0, a), Avx2.MultiplyAddAdjacent(u1, a), Avx2.MultiplyAddAdjacent(u2, a), Avx2.MultiplyAddAdjacent(u3, a));
        var sb = ReduceSmall(Avx2.MultiplyAddAdjacent(u0, b), Avx2.MultiplyAddAdjacent(u1, b), Avx2.MultiplyAddAdjacent(u2, b), Avx2.MultiplyAddAdjacent(u3, b));
        return Vector256.Create(sa, sb);
    }

    /// <summary>
    /// [Σp0, Σp1, Σp2, Σp3] of four rows' <c>vpmaddubsw</c> outputs with small weights (nibbles: |pair sum| ≤
    /// 2 · 15 · 127 = 3810): two rounds of <c>vphaddw</c> stay exact in 16 bits (≤ 15240), so one <c>vpmaddwd</c>
    /// by ones widens all four rows at once, saving three multiplies per block.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> ReduceSmall(Vector256<short> p0, Vector256<short> p1, Vector256<short> p2, Vector256<short> p3)
    {
        var h = Avx2.HorizontalAdd(Avx2.HorizontalAdd(p0, p1), Avx2.HorizontalAdd(p2, p3));
        var s = Avx2.MultiplyAddAdjacent(h, Vector256<short>.One);
        return s.GetLower() + s.GetUpper();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Pairs(Vector256<byte> u, Vector256<sbyte> x) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, x), Vector256<short>.One);

    /// <summary>[Σa0 … Σa3, Σb0 … Σb3].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Reduce(
        Vector256<int> a0, Vector256<int> a1, Vector256<int> a2, Vector256<int> a3, Vector256<int> b0, Vector256<int> b1, Vector256<int> b2, Vector256<int> b3)
    {
        var a = Avx2.HorizontalAdd(Avx2.HorizontalAdd(a0, a1), Avx2.HorizontalAdd(a2, a3));
        var b = Avx2.HorizontalAdd(Avx2.HorizontalAdd(b0, b1), Avx2.HorizontalAdd(b2, b3));
        return Avx2.Permute2x128(a, b, 0x20) + Avx2.Permute2x128(a, b, 0x31);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> UnsignedRow(byte* u, Vector256<sbyte> x) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Vector256.Load(u), x), Vector256<short>.One);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> SignedRow(sbyte* w, Vector256<sbyte> x)
    {
        var wv = Vector256.Load(w);
        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Avx2.Abs(wv), Avx2.Sign(x, wv)), Vector256<short>.One);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> NibbleRow(byte* q, Vector256<sbyte> x) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Unpack(q), x), Vector256<short>.One);

    /// <summary>A Q4_0 block's 32 nibbles in value order: the low nibbles, then the high ones.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> Unpack(byte* q)
    {
        var v = Vector128.Load(q);
        return Vector256.Create(v, Sse2.ShiftRightLogical(v.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
    }

    /// <summary>[Σa0, Σa1, Σa2, Σa3]: three horizontal adds leave each row's two half-sums in the two 128-bit lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<int> Reduce(Vector256<int> a0, Vector256<int> a1, Vector256<int> a2, Vector256<int> a3)
    {
        var h = Avx2.HorizontalAdd(Avx2.HorizontalAdd(a0, a1), Avx2.HorizontalAdd(a2, a3));
        return h.GetLower() + h.GetUpper();
    }
}

/// <summary>
/// AVX-VNNI <c>vpdpbusd</c>: unsigned × signed bytes summed in fours straight into int32 lanes (no 16-bit step).
/// Without AVX-VNNI it falls back to <see cref="Avx2Int8Dot"/>. (.NET 10 exposes no separate AVX-512 VNNI class;
/// the 512-bit path uses these 256-bit bodies, one block per vector.)
/// </summary>
internal readonly unsafe struct AvxVnniInt8Dot : IInt8BlockDot
{
    public static Vector128<int> Signed(sbyte* w0, sbyte* w1, sbyte* w2, sbyte* w3, sbyte* x)
    {
        if (!AvxVnni.IsSupported)
        {
            return Avx2Int8Dot.Signed(w0, w1, w2, w3, x);
        }

        var xv = Vector256.Load(x);
        return Avx2Int8Dot.Reduce(SignedRow(w0, xv), SignedRow(w1, xv), SignedRow(w2, xv), SignedRow(w3, xv));
    }

    public static Vector128<int> Nibbles(byte* q0, byte* q1, byte* q2, byte* q3, sbyte* x)
    {
        if (!AvxVnni.IsSupported)
        {
            return Avx2Int8Dot.Nibbles(q0, q1, q2, q3, x);
        }

        var xv = Vector256.Load(x);
        return Avx2Int8Dot.Reduce(NibbleRow(q0, xv), NibbleRow(q1, xv), NibbleRow(q2, xv), NibbleRow(q3, xv));
    }

    public static Vector128<int> Unsigned(byte* u0, byte* u1, byte* u2, byte* u3, sbyte* x)
    {
        if (!AvxVnni.IsSupported)
        {
            return Avx2Int8Dot.Unsigned(u0, u1, u2, u3, x);
        }

        var xv = Vector256.Load(x);
        return Avx2Int8Dot.Reduce(
            AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, Vector256.Load(u0), xv),
            AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, Vector256.Load(u1), xv),
            AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, Vector256.Load(u2), xv),
            AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, Vector256.Load(u3), xv));
    }

    public static bool PairsTokens => Avx2.IsSupported;

    public static Vector256<int> Signed2(sbyte* w, sbyte* xa, sbyte* xb)
    {
        if (!AvxVnni.IsSupported)
        {
            return Avx2Int8Dot.Signed2(w, xa, xb);
        }

        Vector256<sbyte> w0 = Vector256.Load(w), w1 = Vector256.Load(w + 32), w2 = Vector256.Load(w + 64), w3 = Vector256.Load(w + 96);
        Vector256<byte> u0 = Avx2.Abs(w0), u1 = Avx2.Abs(w1), u2 = Avx2.Abs(w2), u3 = Avx2.Abs(w3);
        Vector256<sbyte> a = Vector256.Load(xa), b = Vector256.Load(xb);
        return Avx2Int8Dot.Reduce(
            Dot(u0, Avx2.Sign(a, w0)), Dot(u1, Avx2.Sign(a, w1)), Dot(u2, Avx2.Sign(a, w2)), Dot(u3, Avx2.Sign(a, w3)),
            Dot(u0, Avx2.Sign(b, w0)), Dot(u1, Avx2.Sign(b, w1)), Dot(u2, Avx2.Sign(b, w2)), Dot(u3, Avx2.Sign(b, w3)));
    }

    public static Vector256<int> Unsigned2(byte* u, sbyte* xa, sbyte* xb)
    {
        if (!AvxVnni.IsSupported)
        {
            return Avx2Int8Dot.Unsigned2(u, xa, xb);
        }

        Vector256<byte> u0 = Vector256.Load(u), u1 = Vector256.Load(u + 32), u2 = Vector256.Load(u + 64), u3 = Vector256.Load(u + 96);
        Vector256<sbyte> a = Vector256.Load(xa), b = Vector256.Load(xb);
        return Avx2Int8Dot.Reduce(Dot(u0, a), Dot(u1, a), Dot(u2, a), Dot(u3, a), Dot(u0, b), Dot(u1, b), Dot(u2, b), Dot(u3, b));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Dot(Vector256<byte> u, Vector256<sbyte> x) =>
        AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u, x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SignedRow(sbyte* w, Vector256<sbyte> x)
    {
        var wv = Vector256.Load(w);
        return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, Avx2.Abs(wv), Avx2.Sign(x, wv));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> NibbleRow(byte* q, Vector256<sbyte> x) =>
        AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, Avx2Int8Dot.Unpack(q), x);
}
