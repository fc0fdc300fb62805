using System.Runtime.Intrinsics;
using Minnow.Kernels;
using Minnow.Tensors;

namespace Minnow.Tests.Kernels;

/// <summary>The SIMD fp16 and bf16 conversions, over all 65536 bit patterns.</summary>
public unsafe class HalfConversionTests
{
    private static readonly ushort[] AllPatterns = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();

    private static void AssertHalfExact(ushort bits, float actual)
    {
        float expected = (float)BitConverter.UInt16BitsToHalf(bits);
        if (float.IsNaN(expected))
        {
            Assert.True(float.IsNaN(actual), $"0x{bits:X4}: expected NaN, got {actual}");
        }
        else if (BitConverter.SingleToInt32Bits(expected) != BitConverter.SingleToInt32Bits(actual))
        {
            Assert.Fail($"0x{bits:X4}: expected {expected:R}, got {actual:R}");
        }
    }

    [Fact]
    public void ScalarMatchesHalfCastForEveryPattern()
    {
        foreach (ushort bits in AllPatterns)
        {
            AssertHalfExact(bits, HalfConversion.ToSingle(bits));
            AssertHalfExact(bits, F16Format.Value((byte*)&bits, 0));
        }
    }

    [Fact]
    public void FiniteConversionMatchesHalfCastForEveryFinitePatternAndTheScanFindsTheOthers()
    {
        ushort[] finite = AllPatterns.Where(b => (b & 0x7C00) != 0x7C00).ToArray();
        Array.Resize(ref finite, finite.Length / 16 * 16);
        fixed (ushort* p = finite)
        {
            Assert.True(HalfConversion.AllFinite(p, finite.Length));
            for (int i = 0; i < finite.Length; i += 16)
            {
                var v128 = FiniteF16Format.Load<Vector128<float>>((byte*)(p + i), 0);
                var v256 = FiniteF16Format.Load<Vector256<float>>((byte*)(p + i), 0);
                var v512 = FiniteF16Format.Load<Vector512<float>>((byte*)(p + i), 0);
                for (int k = 0; k < 16; k++)
                {
                    if (k < 4)
                    {
                        AssertHalfExact(p[i + k], v128.GetElement(k));
                    }

                    if (k < 8)
                    {
                        AssertHalfExact(p[i + k], v256.GetElement(k));
                    }

                    AssertHalfExact(p[i + k], v512.GetElement(k));
                }
            }
        }

        foreach (ushort special in new ushort[] { 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFFFF })
        {
            foreach (int at in new[] { 0, 5, 16, 33 })
            {
                var values = new ushort[34];
                values[at] = special;
                fixed (ushort* p = values)
                {
                    Assert.False(HalfConversion.AllFinite(p, values.Length), $"0x{special:X4} at {at}");
                }
            }
        }
    }

    [Fact]
    public void VectorsMatchHalfCastForEveryPattern()
    {
        fixed (ushort* p = AllPatterns)
        {
            for (int i = 0; i < 65536; i += 16)
            {
                var v128 = Simd.LoadHalves<Vector128<float>>(p + i);
                var v256 = Simd.LoadHalves<Vector256<float>>(p + i);
                var v512 = Simd.LoadHalves<Vector512<float>>(p + i);
                for (int k = 0; k < 16; k++)
                {
                    ushort bits = p[i + k];
                    if (k < 4)
                    {
                        AssertHalfExact(bits, v128.GetElement(k));
                    }

                    if (k < 8)
                    {
                        AssertHalfExact(bits, v256.GetElement(k));
                    }

                    AssertHalfExact(bits, v512.GetElement(k));
                }
            }
        }
    }

    [Fact]
    public void PortableVectorBodiesMatchForEveryPattern()
    {
        // The bodies on sign-extended lanes, independent of which x86 widening instructions exist.
        for (int i = 0; i < 65536; i += 16)
        {
            var lanes = Vector512.Create((int)(short)i) + Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            var v512 = HalfConversion.ToSingle(lanes);
            var v256 = HalfConversion.ToSingle(lanes.GetLower());
            var v128 = HalfConversion.ToSingle(lanes.GetLower().GetLower());
            for (int k = 0; k < 16; k++)
            {
                AssertHalfExact((ushort)(i + k), v512.GetElement(k));
                if (k < 8)
                {
                    AssertHalfExact((ushort)(i + k), v256.GetElement(k));
                }

                if (k < 4)
                {
                    AssertHalfExact((ushort)(i + k), v128.GetElement(k));
                }
            }
        }
    }

    [Fact]
    public void BFloat16VectorsMatchScalarForEveryPattern()
    {
        fixed (ushort* p = AllPatterns)
        {
            for (int i = 0; i < 65536; i += 16)
            {
                var v128 = Simd.LoadBFloat16<Vector128<float>>(p + i);
                var v256 = Simd.LoadBFloat16<Vector256<float>>(p + i);
                var v512 = Simd.LoadBFloat16<Vector512<float>>(p + i);
                for (int k = 0; k < 16; k++)
                {
                    int expected = BitConverter.SingleToInt32Bits(BFloat16.ToSingle(p[i + k]));
                    Assert.Equal(expected, BitConverter.SingleToInt32Bits(v512.GetElement(k)));
                    if (k < 8)
                    {
                        Assert.Equal(expected, BitConverter.SingleToInt32Bits(v256.GetElement(k)));
                    }

                    if (k < 4)
                    {
                        Assert.Equal(expected, BitConverter.SingleToInt32Bits(v128.GetElement(k)));
                    }
                }
            }
        }
    }

    [Fact]
    public void QuantizedLoadersMatchTheirDefinitions()
    {
        byte[] bytes = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        fixed (byte* p = bytes)
        {
            for (int offset = 0; offset + 16 <= 256; offset += 16)
            {
                var s512 = Simd.LoadSBytes<Vector512<float>>((sbyte*)p + offset);
                var s256 = Simd.LoadSBytes<Vector256<float>>((sbyte*)p + offset);
                var s128 = Simd.LoadSBytes<Vector128<float>>((sbyte*)p + offset);
                for (int k = 0; k < 16; k++)
                {
                    float expected = (sbyte)bytes[offset + k];
                    Assert.Equal(expected, s512.GetElement(k));
                    Assert.Equal(expected, k < 8 ? s256.GetElement(k) : expected);
                    Assert.Equal(expected, k < 4 ? s128.GetElement(k) : expected);
                }

                for (int j = 0; j < 32; j += 4)
                {
                    byte* at = p + offset + (j & 15);
                    var n512 = j % 16 == 0 ? Simd.LoadNibbles<Vector512<float>>(at, j >= 16) : default;
                    var n256 = j % 8 == 0 ? Simd.LoadNibbles<Vector256<float>>(at, j >= 16) : default;
                    var n128 = Simd.LoadNibbles<Vector128<float>>(at, j >= 16);
                    for (int k = 0; k < 16; k++)
                    {
                        int value = j + k;
                        if (value >= 32)
                        {
                            break;
                        }

                        float expected = value < 16 ? bytes[offset + value] & 15 : bytes[offset + value - 16] >> 4;
                        if (j % 16 == 0)
                        {
                            Assert.Equal(expected, n512.GetElement(k));
                        }

                        if (j % 8 == 0 && k < 8)
                        {
                            Assert.Equal(expected, n256.GetElement(k));
                        }

                        if (k < 4)
                        {
                            Assert.Equal(expected, n128.GetElement(k));
                        }
                    }
                }
            }
        }
    }
}
