using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace Minnow.Tensors;

/// <summary>
/// The layout of Minnow's sparse matrices (<see cref="DType.SparseF16"/>, <see cref="DType.SparseQ8"/>,
/// <see cref="DType.SparseI8"/>), which store only the weights a pruner kept, in any pattern (unstructured, 2:4,
/// 4:8). A matrix [rows, cols] is one blob:
/// <list type="bullet">
/// <item>rows + 1 little-endian offsets from the blob's start, uint64 (SparseF16, SparseQ8) or uint32 (SparseI8):
/// row r is bytes offset[r] .. offset[r + 1];</item>
/// <item>each row: a bitmap of ⌈cols / 8⌉ bytes (bit c % 8 of byte c / 8 set when column c is kept; bits past the
/// last column clear); for SparseQ8 an fp16 scale per 64 columns (⌈cols / 64⌉ of them, the last group possibly
/// shorter), for SparseI8 one fp16 scale for the whole row; then the kept values in column order, packed: fp16
/// (SparseF16) or int8 q with value = q · scale of the column's group (SparseQ8) or of the row (SparseI8). A row
/// may keep any number of values in any group;</item>
/// <item><see cref="Padding"/> zero bytes, so a kernel may read a vector's worth of values past a row's end.</item>
/// </list>
/// At 50% sparsity that is 1 + 8 = 9 bits per weight for SparseF16 (dense F16: 16), 1 + 4 + 0.25 = 5.25 bits for
/// SparseQ8 (dense Q8_0: 8.5), plus 64 bits per row for the offsets, and 1 + 4 = 5 bits for SparseI8 plus 48 bits
/// per row (its scale and offset; 5.08 bits per weight for rows of 576).
/// </summary>
public static unsafe class SparseMatrix
{
    /// <summary>Zero bytes after the last row.</summary>
    public const int Padding = 32;

    /// <summary>Columns sharing one fp16 scale in <see cref="DType.SparseQ8"/>.</summary>
    public const int ScaleGroup = 64;

    /// <summary>The scale group of <see cref="DType.SparseI8"/>: longer than any row, so the whole row shares one scale.</summary>
    public const int RowScaleGroup = 1 << 30;

    /// <summary>The fraction of zeros from which a matrix is worth storing sparse (below it the bitmap costs more than it saves).</summary>
    public const double MinimumSparsity = 0.3;

    public static int MaskBytes(int cols) => (cols + 7) / 8;

    /// <summary>Columns sharing one fp16 scale: 64 (SparseQ8), the whole row (SparseI8); 0 for SparseF16, which has no scales.</summary>
    public static int ScaleColumns(DType type) => type switch
    {
        DType.SparseQ8 => ScaleGroup,
        DType.SparseI8 => RowScaleGroup,
        _ => 0,
    };

    public static int ScaleBytes(DType type, int cols) => type switch
    {
        DType.SparseQ8 => 2 * ((cols + ScaleGroup - 1) / ScaleGroup),
        DType.SparseI8 => cols > 0 ? 2 : 0,
        _ => 0,
    };

    public static int ValueBytes(DType type) => type switch
    {
        DType.SparseF16 => 2,
        DType.SparseQ8 or DType.SparseI8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Not a sparse type."),
    };

    /// <summary>Bytes per row offset: 4 for SparseI8 (a blob is under 2 GiB: it is written from one array), 8 for the older types.</summary>
    public static int OffsetBytes(DType type) => type == DType.SparseI8 ? 4 : 8;

    /// <summary>The dense type a sparse matrix's values compare with: F16 for SparseF16, Q8_0 for the 8-bit types.</summary>
    public static DType DenseCounterpart(DType type) => type is DType.SparseQ8 or DType.SparseI8 ? DType.Q8_0 : DType.F16;

    /// <summary>The blob's size, from its offset table (the blob must be one <see cref="Measure"/> accepted or <see cref="Encode"/> wrote).</summary>
    public static long ByteSize(DType type, byte* data, int rows) => checked(Offset(type, data, rows) + Padding);

    /// <summary>Where row <paramref name="row"/> starts (its bitmap).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* Row(DType type, byte* data, int row) => data + Offset(type, data, row);

    /// <summary>Where row <paramref name="row"/> of a matrix with uint64 offsets (SparseF16, SparseQ8) starts.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* Row64(byte* data, int row) => data + Unsafe.ReadUnaligned<ulong>(data + (8L * row));

    /// <summary>Where row <paramref name="row"/> of a matrix with uint32 offsets (SparseI8) starts.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* Row32(byte* data, int row) => data + Unsafe.ReadUnaligned<uint>(data + (4L * row));

    private static long Offset(DType type, byte* data, int row) => OffsetBytes(type) == 4
        ? Unsafe.ReadUnaligned<uint>(data + (4L * row))
        : checked((long)Unsafe.ReadUnaligned<ulong>(data + (8L * row)));

    /// <summary>The fraction of exact zeros in <paramref name="values"/>.</summary>
    public static double Sparsity(ReadOnlySpan<float> values) => values.Length == 0 ? 0 : 1 - ((double)NonZeros(values) / values.Length);

    private static long NonZeros(ReadOnlySpan<float> values)
    {
        long count = 0;
        foreach (float v in values)
        {
            if (v != 0)
            {
                count++;
            }
        }

        return count;
    }

    /// <summary>
    /// Checks a blob of <paramref name="available"/> bytes at <paramref name="data"/> against the layout (offsets in
    /// order, each row's length what its bitmap implies, no bits past the last column) and returns its size; a
    /// one-line description of the first fault otherwise.
    /// </summary>
    public static long Measure(DType type, byte* data, long available, int rows, int cols, out string? error)
    {
        error = null;
        int offsetBytes = OffsetBytes(type);
        long header = (long)offsetBytes * (rows + 1);
        if (available < header)
        {
            error = $"its {rows + 1} row offsets run past the end of the file";
            return -1;
        }

        int maskBytes = MaskBytes(cols), scaleBytes = ScaleBytes(type, cols), valueBytes = ValueBytes(type);
        int tailBits = cols % 8;
        ulong previous = (ulong)header;
        if (ReadOffset(data, 0, offsetBytes) != previous)
        {
            error = $"its first row starts at byte {ReadOffset(data, 0, offsetBytes)}, not {header} (after the offsets)";
            return -1;
        }

        for (int r = 0; r < rows; r++)
        {
            ulong next = ReadOffset(data, r + 1, offsetBytes);
            if (next < previous + (ulong)(maskBytes + scaleBytes) || next > (ulong)available)
            {
                error = $"row {r} has an impossible extent ({previous} .. {next} of {available} bytes)";
                return -1;
            }

            byte* mask = data + previous;
            long kept = 0;
            for (int b = 0; b < maskBytes; b++)
            {
                kept += BitOperations.PopCount(mask[b]);
            }

            if (tailBits != 0 && (mask[maskBytes - 1] >> tailBits) != 0)
            {
                error = $"row {r} marks columns past its {cols}";
                return -1;
            }

            if ((long)(next - previous) != maskBytes + scaleBytes + (kept * valueBytes))
            {
                error = $"row {r} is {next - previous} bytes but its bitmap keeps {kept} values";
                return -1;
            }

            previous = next;
        }

        long size = (long)previous + Padding;
        if (size > available)
        {
            error = $"it needs {size} bytes (with its padding) but only {available} are left in the file";
            return -1;
        }

        return size;
    }

    private static ulong ReadOffset(byte* data, int row, int offsetBytes) =>
        offsetBytes == 4 ? Unsafe.ReadUnaligned<uint>(data + (4L * row)) : Unsafe.ReadUnaligned<ulong>(data + (8L * row));

    /// <summary>
    /// Encodes a row-major float matrix: zeros are dropped, the rest stored as fp16 (SparseF16) or int8 with an fp16
    /// scale d = amax / 127 of the kept values per 64 columns (SparseQ8) or per row (SparseI8), rounded as GGUF's Q8_0.
    /// </summary>
    public static byte[] Encode(DType type, ReadOnlySpan<float> values, int rows, int cols)
    {
        if ((long)rows * cols != values.Length)
        {
            throw new ArgumentException($"{values.Length} values are not a [{rows}, {cols}] matrix.", nameof(values));
        }

        int maskBytes = MaskBytes(cols), scaleBytes = ScaleBytes(type, cols), valueBytes = ValueBytes(type);
        int offsetBytes = OffsetBytes(type), scaleColumns = Math.Min(type == DType.SparseF16 ? ScaleGroup : ScaleColumns(type), Math.Max(cols, 1));
        long header = (long)offsetBytes * (rows + 1);
        long size = header;
        for (int r = 0; r < rows; r++)
        {
            size += maskBytes + scaleBytes + (NonZeros(values.Slice(r * cols, cols)) * valueBytes);
        }

        var bytes = new byte[checked((int)(size + Padding))];
        var span = bytes.AsSpan();
        long offset = header;
        for (int r = 0; r < rows; r++)
        {
            WriteOffset(span, r, offsetBytes, offset);
            var row = values.Slice(r * cols, cols);
            var mask = span.Slice((int)offset, maskBytes);
            var scales = span.Slice((int)offset + maskBytes, scaleBytes);
            int v = (int)offset + maskBytes + scaleBytes;
            for (int g = 0; g < cols; g += scaleColumns)
            {
                var group = row.Slice(g, Math.Min(scaleColumns, cols - g));
                float id = 0;
                if (type != DType.SparseF16)
                {
                    float amax = 0;
                    foreach (float x in group)
                    {
                        amax = MathF.Max(amax, MathF.Abs(x));
                    }

                    float d = amax / 127f;
                    id = d != 0 ? 1f / d : 0f;
                    BinaryPrimitives.WriteUInt16LittleEndian(scales[(2 * (g / scaleColumns))..], BitConverter.HalfToUInt16Bits((Half)d));
                }

                for (int j = 0; j < group.Length; j++)
                {
                    float x = group[j];
                    if (x == 0)
                    {
                        continue;
                    }

                    int c = g + j;
                    mask[c / 8] |= (byte)(1 << (c % 8));
                    if (type == DType.SparseF16)
                    {
                        BinaryPrimitives.WriteUInt16LittleEndian(span[v..], BitConverter.HalfToUInt16Bits((Half)x));
                    }
                    else
                    {
                        span[v] = (byte)(sbyte)MathF.Round(x * id, MidpointRounding.AwayFromZero);
                    }

                    v += valueBytes;
                }
            }

            offset = v;
        }

        WriteOffset(span, rows, offsetBytes, offset);
        return bytes;
    }

    private static void WriteOffset(Span<byte> span, int row, int offsetBytes, long offset)
    {
        if (offsetBytes == 4)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(span[(4 * row)..], checked((uint)offset));
        }
        else
        {
            BinaryPrimitives.WriteUInt64LittleEndian(span[(8 * row)..], (ulong)offset);
        }
    }

    /// <summary>Converts one row to float32 (zeros where the bitmap has no value): the scalar reference.</summary>
    public static void ReadRow(DType type, byte* data, int row, Span<float> destination)
    {
        int cols = destination.Length;
        int scaleColumns = ScaleColumns(type);
        byte* mask = Row(type, data, row);
        byte* scales = mask + MaskBytes(cols);
        byte* values = scales + ScaleBytes(type, cols);
        int k = 0;
        for (int c = 0; c < cols; c++)
        {
            if ((mask[c / 8] & (1 << (c % 8))) == 0)
            {
                destination[c] = 0;
                continue;
            }

            destination[c] = type == DType.SparseF16
                ? (float)BitConverter.UInt16BitsToHalf(Unsafe.ReadUnaligned<ushort>(values + (2L * k)))
                : ((sbyte*)values)[k] * (float)BitConverter.UInt16BitsToHalf(Unsafe.ReadUnaligned<ushort>(scales + (2 * (c / scaleColumns))));
            k++;
        }
    }
}
