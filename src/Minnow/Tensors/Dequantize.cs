using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Minnow.Tensors;

/// <summary>Scalar conversion of any storage type to float32 (the reference the fast kernels are checked against).</summary>
public static unsafe class Dequantize
{
    public static void Row(DType type, byte* source, Span<float> destination)
    {
        int n = destination.Length;
        switch (type)
        {
            case DType.F32:
                new ReadOnlySpan<float>(source, n).CopyTo(destination);
                break;
            case DType.F16:
                {
                    var halves = new ReadOnlySpan<Half>(source, n);
                    for (int i = 0; i < n; i++)
                    {
                        destination[i] = (float)halves[i];
                    }

                    break;
                }

            case DType.BF16:
                {
                    var bits = new ReadOnlySpan<ushort>(source, n);
                    for (int i = 0; i < n; i++)
                    {
                        destination[i] = BFloat16.ToSingle(bits[i]);
                    }

                    break;
                }

            case DType.Q8_0:
                for (int b = 0; b < n / 32; b++)
                {
                    byte* block = source + (b * 34);
                    float d = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(new ReadOnlySpan<byte>(block, 2)));
                    var qs = new ReadOnlySpan<sbyte>(block + 2, 32);
                    for (int j = 0; j < 32; j++)
                    {
                        destination[(b * 32) + j] = qs[j] * d;
                    }
                }

                break;
            case DType.Q4_0:
                for (int b = 0; b < n / 32; b++)
                {
                    byte* block = source + (b * 18);
                    float d = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(new ReadOnlySpan<byte>(block, 2)));
                    var qs = new ReadOnlySpan<byte>(block + 2, 16);
                    for (int j = 0; j < 16; j++)
                    {
                        destination[(b * 32) + j] = ((qs[j] & 0x0F) - 8) * d;
                        destination[(b * 32) + j + 16] = ((qs[j] >> 4) - 8) * d;
                    }
                }

                break;
            case DType.Q4_1:
            case DType.Q4_1_G64:
            case DType.Q4_1_G128:
            case DType.Q3_1_G32:
            case DType.Q3_1_G64:
            case DType.Q3_1_G128:
                {
                    // d, m, then the group's codes 32 values at a time (GroupCodes); value = q · d + m (as ggml's
                    // dequantize_row_q4_1 for the INT4 types).
                    int group = type.BlockSize(), size = type.BlockBytes(), codeBytes = GroupCodes.BytesPerBlock(type);
                    Span<byte> codes = stackalloc byte[32];
                    for (int g = 0; g < n / group; g++)
                    {
                        byte* block = source + ((long)g * size);
                        float d = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(new ReadOnlySpan<byte>(block, 2)));
                        float m = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(new ReadOnlySpan<byte>(block + 2, 2)));
                        for (int s = 0; s < group / 32; s++)
                        {
                            GroupCodes.Unpack(type, new ReadOnlySpan<byte>(block + 4 + (codeBytes * s), codeBytes), codes);
                            int first = (g * group) + (32 * s);
                            for (int j = 0; j < 32; j++)
                            {
                                destination[first + j] = (codes[j] * d) + m;
                            }
                        }
                    }

                    break;
                }

            default:
                throw new NotSupportedException($"Cannot convert {type} to float.");
        }
    }

    /// <summary>Converts a whole float32 array into another storage type (used by tests and exporters).</summary>
    public static byte[] FromFloats(DType type, ReadOnlySpan<float> values)
    {
        var bytes = new byte[type.ByteCount(values.Length)];
        FromFloats(type, values, bytes);
        return bytes;
    }

    /// <summary>As <see cref="FromFloats(DType, ReadOnlySpan{float})"/>, into <paramref name="bytes"/> (<see cref="DTypeInfo.ByteCount"/> bytes).</summary>
    public static void FromFloats(DType type, ReadOnlySpan<float> values, Span<byte> bytes)
    {
        bytes = bytes[..checked((int)type.ByteCount(values.Length))];
        switch (type)
        {
            case DType.F32:
                MemoryMarshal.AsBytes(values).CopyTo(bytes);
                break;
            case DType.F16:
                {
                    var halves = MemoryMarshal.Cast<byte, Half>(bytes);
                    for (int i = 0; i < values.Length; i++)
                    {
                        halves[i] = (Half)values[i];
                    }

                    break;
                }

            case DType.BF16:
                {
                    var bits = MemoryMarshal.Cast<byte, ushort>(bytes);
                    for (int i = 0; i < values.Length; i++)
                    {
                        bits[i] = BFloat16.FromSingle(values[i]);
                    }

                    break;
                }

            case DType.Q8_0:
                for (int b = 0; b < values.Length / 32; b++)
                {
                    var block = values.Slice(b * 32, 32);
                    float amax = 0;
                    foreach (float v in block)
                    {
                        amax = MathF.Max(amax, MathF.Abs(v));
                    }

                    float d = amax / 127f;
                    float id = d != 0 ? 1f / d : 0f;
                    var outBlock = bytes.Slice(b * 34, 34);
                    BinaryPrimitives.WriteUInt16LittleEndian(outBlock, BitConverter.HalfToUInt16Bits((Half)d));
                    for (int j = 0; j < 32; j++)
                    {
                        outBlock[2 + j] = (byte)(sbyte)MathF.Round(block[j] * id, MidpointRounding.AwayFromZero);
                    }
                }

                break;
            case DType.Q4_0:
                for (int b = 0; b < values.Length / 32; b++)
                {
                    var block = values.Slice(b * 32, 32);
                    float amax = 0, max = 0;
                    foreach (float v in block)
                    {
                        if (MathF.Abs(v) > amax)
                        {
                            amax = MathF.Abs(v);
                            max = v;
                        }
                    }

                    float d = max / -8f;
                    float id = d != 0 ? 1f / d : 0f;
                    var outBlock = bytes.Slice(b * 18, 18);
                    BinaryPrimitives.WriteUInt16LittleEndian(outBlock, BitConverter.HalfToUInt16Bits((Half)d));
                    for (int j = 0; j < 16; j++)
                    {
                        int q0 = Math.Min(15, (int)((block[j] * id) + 8.5f));
                        int q1 = Math.Min(15, (int)((block[j + 16] * id) + 8.5f));
                        outBlock[2 + j] = (byte)(q0 | (q1 << 4));
                    }
                }

                break;
            case DType.Q4_1:
            case DType.Q4_1_G64:
            case DType.Q4_1_G128:
            case DType.Q3_1_G32:
            case DType.Q3_1_G64:
            case DType.Q3_1_G128:
                {
                    // Round to nearest between the group's minimum and maximum, as ggml's quantize_row_q4_1_ref (with
                    // 7 steps instead of 15 for INT3).
                    int group = type.BlockSize(), size = type.BlockBytes(), codeBytes = GroupCodes.BytesPerBlock(type), top = type.MaxGroupCode();
                    Span<byte> codes = stackalloc byte[32];
                    for (int g = 0; g < values.Length / group; g++)
                    {
                        var block = values.Slice(g * group, group);
                        float min = float.MaxValue, max = float.MinValue;
                        foreach (float v in block)
                        {
                            min = MathF.Min(min, v);
                            max = MathF.Max(max, v);
                        }

                        float d = (max - min) / top;
                        float id = d != 0 ? 1f / d : 0f;
                        var outBlock = bytes.Slice(g * size, size);
                        BinaryPrimitives.WriteUInt16LittleEndian(outBlock, BitConverter.HalfToUInt16Bits((Half)d));
                        BinaryPrimitives.WriteUInt16LittleEndian(outBlock[2..], BitConverter.HalfToUInt16Bits((Half)min));
                        for (int s = 0; s < group / 32; s++)
                        {
                            for (int j = 0; j < 32; j++)
                            {
                                codes[j] = (byte)Math.Min(top, (int)(((block[(32 * s) + j] - min) * id) + 0.5f));
                            }

                            GroupCodes.Pack(type, codes, outBlock.Slice(4 + (codeBytes * s), codeBytes));
                        }
                    }

                    break;
                }

            default:
                throw new NotSupportedException($"Cannot convert float to {type}.");
        }
    }
}
