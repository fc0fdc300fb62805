using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>
/// IEEE binary16 → binary32 with SIMD integer and float operations (.NET exposes no F16C instructions). Exact for
/// every bit pattern, as <c>(float)(Half)</c>: the sign, exponent and mantissa bits are moved into float position
/// and the value is rescaled by one exact multiplication by 2^112, which covers ±0, subnormals and normals alike;
/// ±∞ and NaN (payload kept) then get the all-ones exponent. The vector bodies take the 16-bit patterns
/// sign-extended to 32-bit lanes (what <c>vpmovsxwd</c> loads), so one shift and one mask place every field.
/// </summary>
internal static class HalfConversion
{
    private const int FieldMask = unchecked((int)0x8FFFE000); // sign → bit 31, exponent and mantissa → bits 13..27
    private const float Rescale = 5.192296858534828e33f; // 2^112 = 2^(127 − 15)
    private const int HalfExponent = 0x7C00;
    private const int FloatExponent = 0x7F800000;

    /// <summary>The scalar body: the same steps without branches (block scales are converted in hot loops).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToSingle(ushort bits)
    {
        int v = (short)bits;
        float f = BitConverter.Int32BitsToSingle((v << 13) & FieldMask) * Rescale;
        int infNan = (v & HalfExponent) == HalfExponent ? FloatExponent : 0;
        return BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(f) | infNan);
    }

    /// <summary>
    /// <see cref="ToSingle(Vector256{int})"/> for halves known to be finite (no ±∞ or NaN, checked once per tensor
    /// by <see cref="AllFinite"/>): the same values with three operations fewer.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> ToSingleFinite(Vector128<int> signExtended) =>
        ((signExtended << 13) & Vector128.Create(FieldMask)).AsSingle() * Vector128.Create(Rescale);

    /// <inheritdoc cref="ToSingleFinite(Vector128{int})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ToSingleFinite(Vector256<int> signExtended) =>
        ((signExtended << 13) & Vector256.Create(FieldMask)).AsSingle() * Vector256.Create(Rescale);

    /// <inheritdoc cref="ToSingleFinite(Vector128{int})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ToSingleFinite(Vector512<int> signExtended) =>
        ((signExtended << 13) & Vector512.Create(FieldMask)).AsSingle() * Vector512.Create(Rescale);

    /// <summary>Whether none of <paramref name="count"/> halves at <paramref name="p"/> is ±∞ or NaN.</summary>
    public static unsafe bool AllFinite(ushort* p, long count)
    {
        long i = 0;
        var exponent = Vector256.Create((ushort)HalfExponent);
        for (; i + 16 <= count; i += 16)
        {
            if (Vector256.EqualsAny(Vector256.Load(p + i) & exponent, exponent))
            {
                return false;
            }
        }

        for (; i < count; i++)
        {
            if ((p[i] & HalfExponent) == HalfExponent)
            {
                return false;
            }
        }

        return true;
    }

    public static Vector128<float> ToSingle(Vector128<int> signExtended)
    {
        var f = ((signExtended << 13) & Vector128.Create(FieldMask)).AsSingle() * Vector128.Create(Rescale);
        var exponent = Vector128.Create(HalfExponent);
        var infNan = Vector128.Equals(signExtended & exponent, exponent) & Vector128.Create(FloatExponent);
        return f | infNan.AsSingle();
    }

    public static Vector256<float> ToSingle(Vector256<int> signExtended)
    {
        var f = ((signExtended << 13) & Vector256.Create(FieldMask)).AsSingle() * Vector256.Create(Rescale);
        var exponent = Vector256.Create(HalfExponent);
        var infNan = Vector256.Equals(signExtended & exponent, exponent) & Vector256.Create(FloatExponent);
        return f | infNan.AsSingle();
    }

    public static Vector512<float> ToSingle(Vector512<int> signExtended)
    {
        var f = ((signExtended << 13) & Vector512.Create(FieldMask)).AsSingle() * Vector512.Create(Rescale);
        var exponent = Vector512.Create(HalfExponent);
        var infNan = Vector512.Equals(signExtended & exponent, exponent) & Vector512.Create(FloatExponent);
        return f | infNan.AsSingle();
    }
}
