using System.Buffers.Binary;

namespace Minnow.Tensors;

/// <summary>
/// How the group-wise integer types (<see cref="DTypeInfo.IsIntGroup"/>) store the codes of each 32 values of a
/// group. INT4 (Q4_1 family): 16 bytes, value j in the low nibble of byte j and value j + 16 in its high nibble.
/// INT3 (Q3_1 family): 12 bytes, a 2-bit plane then a 1-bit plane: byte j of the first 8 holds bits 0-1 of values
/// j, j + 8, j + 16, j + 24 at bit positions 0, 2, 4, 6; bit j of the little-endian 32-bit word in bytes 8..11 is
/// bit 2 of value j. So the 2-bit plane masked with 0x33 is Q4_1's nibble bytes 0..7 (values 0..7 and 16..23),
/// shifted right by 2 and masked, bytes 8..15 (<see cref="Int3ToNibbles"/>).
/// </summary>
public static class GroupCodes
{
    public const int BlockSize = 32;

    /// <summary>Bytes of INT3 codes per 32 values.</summary>
    public const int Int3Bytes = 12;

    /// <summary>Bytes of INT4 codes per 32 values.</summary>
    public const int Int4Bytes = 16;

    /// <summary>Bytes of codes per 32 values of a group-wise integer type.</summary>
    public static int BytesPerBlock(DType type) => type.IsInt3Group() ? Int3Bytes : Int4Bytes;

    /// <summary>Writes 32 codes (each in [0, <see cref="DTypeInfo.MaxGroupCode"/>]) in <paramref name="type"/>'s packing.</summary>
    public static void Pack(DType type, ReadOnlySpan<byte> codes, Span<byte> destination)
    {
        if (type.IsInt3Group())
        {
            uint high = 0;
            for (int j = 0; j < 8; j++)
            {
                destination[j] = (byte)((codes[j] & 3) | ((codes[j + 8] & 3) << 2) | ((codes[j + 16] & 3) << 4) | ((codes[j + 24] & 3) << 6));
            }

            for (int j = 0; j < BlockSize; j++)
            {
                high |= (uint)((codes[j] >> 2) & 1) << j;
            }

            BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], high);
            return;
        }

        for (int j = 0; j < 16; j++)
        {
            destination[j] = (byte)((codes[j] & 15) | ((codes[j + 16] & 15) << 4));
        }
    }

    /// <summary>Reads 32 codes from <paramref name="type"/>'s packing (the inverse of <see cref="Pack"/>).</summary>
    public static void Unpack(DType type, ReadOnlySpan<byte> packed, Span<byte> codes)
    {
        if (type.IsInt3Group())
        {
            uint high = BinaryPrimitives.ReadUInt32LittleEndian(packed[8..]);
            for (int j = 0; j < BlockSize; j++)
            {
                codes[j] = (byte)(((packed[j % 8] >> (2 * (j / 8))) & 3) | (int)(((high >> j) & 1) << 2));
            }

            return;
        }

        for (int j = 0; j < 16; j++)
        {
            codes[j] = (byte)(packed[j] & 15);
            codes[j + 16] = (byte)(packed[j] >> 4);
        }
    }

    /// <summary>
    /// 32 INT3 codes rewritten as one Q4_1 nibble block (16 bytes, value j in the low nibble of byte j, value j + 16 in
    /// its high nibble): what the INT4 kernels read. The codes are unchanged (0..7 fit in a nibble).
    /// </summary>
    public static void Int3ToNibbles(ReadOnlySpan<byte> packed, Span<byte> nibbles)
    {
        ulong low = BinaryPrimitives.ReadUInt64LittleEndian(packed);
        uint high = BinaryPrimitives.ReadUInt32LittleEndian(packed[8..]);

        // Byte j (j < 8) of the plane holds values j, j + 8, j + 16, j + 24 in bit pairs 0, 1, 2, 3: pairs 0 and 2
        // are nibble byte j's two nibbles (values j and j + 16), pairs 1 and 3 nibble byte j + 8's.
        BinaryPrimitives.WriteUInt64LittleEndian(nibbles, low & 0x3333333333333333UL);
        BinaryPrimitives.WriteUInt64LittleEndian(nibbles[8..], (low >> 2) & 0x3333333333333333UL);
        for (int j = 0; j < 16; j++)
        {
            nibbles[j] |= (byte)((((high >> j) & 1) << 2) | (((high >> (j + 16)) & 1) << 6));
        }
    }
}
