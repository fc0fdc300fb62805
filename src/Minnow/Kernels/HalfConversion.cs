using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>
/// IEEE binary16 → binary32 in SIMD integer and float operations (x86 .NET exposes no F16C instructions).
/// Exact for every bit pattern, as <c>(float)(Half)</c>: normal values only move the exponent; subnormals are
/// renormalised by a subtraction of normal floats (no subnormal arithmetic); ±0, ±∞ and NaN (payload kept) come out
/// as the same kinds. Each body takes the 16-bit patterns zero-extended to 32-bit lanes.
/// </summary>
internal static class HalfConversion
{
    private const uint ExponentAdjust = (127 - 15) << 23; // rebias a normal value
    private const uint InfNanAdjust = (255 - 31 - (127 - 15)) << 23; // the rest of the way to the all-ones exponent
    private const uint MagicBits = 113 << 23; // 2^-14, the smallest normal half
    private const uint SmallestNormal = 0x0400;
    private const uint Infinity = 0x7C00;

    public static float ToSingle(uint bits)
    {
        uint magnitude = bits & 0x7FFF;
        uint shifted = magnitude << 13;
        uint result;
        if (magnitude < SmallestNormal)
        {
            result = BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle(shifted + MagicBits) - BitConverter.UInt32BitsToSingle(MagicBits));
        }
        else
        {
            result = shifted + ExponentAdjust + (magnitude >= Infinity ? InfNanAdjust : 0);
        }

        return BitConverter.UInt32BitsToSingle(result | ((bits & 0x8000) << 16));
    }

    public static Vector128<float> ToSingle(Vector128<uint> bits)
    {
        var magnitude = bits & Vector128.Create(0x7FFFu);
        var shifted = magnitude << 13;
        var infNan = Vector128.GreaterThanOrEqual(magnitude.AsInt32(), Vector128.Create((int)Infinity)).AsUInt32();
        var normal = shifted + Vector128.Create(ExponentAdjust) + (infNan & Vector128.Create(InfNanAdjust));
        var subnormal = ((shifted + Vector128.Create(MagicBits)).AsSingle() - Vector128.Create(MagicBits).AsSingle()).AsUInt32();
        var isSubnormal = Vector128.LessThan(magnitude.AsInt32(), Vector128.Create((int)SmallestNormal)).AsUInt32();
        var result = Vector128.ConditionalSelect(isSubnormal, subnormal, normal);
        return (result | ((bits & Vector128.Create(0x8000u)) << 16)).AsSingle();
    }

    public static Vector256<float> ToSingle(Vector256<uint> bits)
    {
        var magnitude = bits & Vector256.Create(0x7FFFu);
        var shifted = magnitude << 13;
        var infNan = Vector256.GreaterThanOrEqual(magnitude.AsInt32(), Vector256.Create((int)Infinity)).AsUInt32();
        var normal = shifted + Vector256.Create(ExponentAdjust) + (infNan & Vector256.Create(InfNanAdjust));
        var subnormal = ((shifted + Vector256.Create(MagicBits)).AsSingle() - Vector256.Create(MagicBits).AsSingle()).AsUInt32();
        var isSubnormal = Vector256.LessThan(magnitude.AsInt32(), Vector256.Create((int)SmallestNormal)).AsUInt32();
        var result = Vector256.ConditionalSelect(isSubnormal, subnormal, normal);
        return (result | ((bits & Vector256.Create(0x8000u)) << 16)).AsSingle();
    }

    public static Vector512<float> ToSingle(Vector512<uint> bits)
    {
        var magnitude = bits & Vector512.Create(0x7FFFu);
        var shifted = magnitude << 13;
        var infNan = Vector512.GreaterThanOrEqual(magnitude.AsInt32(), Vector512.Create((int)Infinity)).AsUInt32();
        var normal = shifted + Vector512.Create(ExponentAdjust) + (infNan & Vector512.Create(InfNanAdjust));
        var subnormal = ((shifted + Vector512.Create(MagicBits)).AsSingle() - Vector512.Create(MagicBits).AsSingle()).AsUInt32();
        var isSubnormal = Vector512.LessThan(magnitude.AsInt32(), Vector512.Create((int)SmallestNormal)).AsUInt32();
        var result = Vector512.ConditionalSelect(isSubnormal, subnormal, normal);
        return (result | ((bits & Vector512.Create(0x8000u)) << 16)).AsSingle();
    }
}
