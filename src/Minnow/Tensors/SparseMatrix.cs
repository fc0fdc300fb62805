using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace Minnow.Tensors;

/// <summary>
/// The layout of Minnow's sparse matrices (<see cref="DType.SparseF16"/>, <see cref="DType.SparseQ8"/>), which
/// store only the weights a pruner kept, in any pattern (unstructured, 2:4, 4:8). A matrix [rows, cols] is one
/// blob:
/// <list type="bullet">
/// <item>rows + 1 little-endian uint64 offsets from the blob's start: row r is bytes offset[r] .. offset[r + 1];</item>
/// <item>each row: a bitmap of ⌈cols / 8⌉ bytes (bit c % 8 of byte c / 8 set when column c is kept; bits past the
/// last column clear); for SparseQ8 an fp16 scale per 64 columns (⌈cols / 64⌉ of them, the last group possibly
/// shorter); then the kept values in column order, packed: fp16 (SparseF16) or int8 q with value = q · scale of
/// the column's group (SparseQ8). A row may keep any number of values in any group;</item>
/// <item><see cref="Padding"/> zero bytes, so a kernel may read a vector's worth of values past a row's end.</item>
/// </list>
/// At 50% sparsity that is 1 + 8 = 9 bits per weight for SparseF16 (dense F16: 16) and 1 + 4 + 0.25 = 5.25 bits
/// for SparseQ8 (dense Q8_0: 8.5), plus 64 bits per row for the offsets.
/// </summary>
public static unsafe class SparseMatrix
{
    /// <summary>Zero bytes after the last row.</summary>
    public const int Padding = 32;

    /// <summary>Columns sharing one fp16 scale in <see cref="DType.SparseQ8"/>.</summary>
    public const int ScaleGroup = 64;

    /// <summary>The fraction of zeros from which a matrix is worth storing sparse (below it the bitmap costs more than it saves).</summary>
    public const double MinimumSparsity = 0.3;

    public static int MaskBytes(int cols) => (cols + 7) / 8;

    public static int ScaleBytes(DType type, int cols) => type == DType.SparseQ8 ? 2 * ((cols + ScaleGroup - 1) / ScaleGroup) : 0;

    public static int ValueBytes(DType type) => type switch
    {
        DType.SparseF16 => 2,
        DType.SparseQ8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Not a sparse type."),
    };

    /// <summary>The dense type a sparse matrix's values compare with: F16 for SparseF16, Q8_0 for SparseQ8.</summary>
    public static DType DenseCounterpart(DType type) => type == DType.SparseQ8 ? DType.Q8_0 : DType.F16;

    /// <summary>The blob's size, from its offset table (the blob must be one <see cref="Measure"/> accepted or <see cref="Encode"/> wrote).</summary>
    public static long ByteSize(byte* data, int rows) => checked((long)Unsafe.ReadUnaligned<ulong>(data + (8L * rows)) + Padding);

    /// <summary>Where row <paramref name="row"/> starts (its bitmap).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* Row(byte* data, int row) => data + Unsafe.ReadUnaligned<ulong>(data + (8L * row));

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
        long header = 8L * (rows + 1);
        if (available < header)
        {
            error = $"its {rows + 1} row offsets run past the end of the file";
            return -1;
        }

        int maskBytes = MaskBytes(cols), scaleBytes = ScaleBytes(type, cols), valueBytes = ValueBytes(type);
        int tailBits = cols % 8;
        ulong previous = (ulong)header;
        if (Unsafe.ReadUnaligned<ulong>(data) != previous)
        {
            error = $"its first row starts at byte {Unsafe.ReadUnaligned<ulong>(data)}, not {header} (after the offsets)";
            return -1;
        }

        for (int r = 0; r < rows; r++)
        {
            ulong next = Unsafe.ReadUnaligned<ulong>(data + (8L * (r + 1)));
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

    /// <summary>
    /// Encodes a row-major float matrix: zeros are dropped, the rest stored as fp16 (SparseF16) or int8 with an fp16
    /// scale per 64 columns, amax / 127 of the group's kept values, rounded as GGUF's Q8_0 (SparseQ8).
    /// </summary>
    public static byte[] Encode(DType type, ReadOnlySpan<float> values, int rows, int cols)
    {
        if ((long)rows * cols != values.Length)
        {
            throw new ArgumentException($"{values.Length} values are not a [{rows}, {cols}] matrix.", nameof(values));
        }

        int maskBytes = MaskBytes(cols), scaleBytes = ScaleBytes(type, cols), valueBytes = ValueBytes(type);
        long header = 8L * (rows + 1);
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
            BinaryPrimitives.WriteUInt64LittleEndian(span[(8 * r)..], (ulong)offset);
            var row = values.Slice(r * cols, cols);
            var mask = span.Slice((int)offset, maskBytes);
            var scales = span.Slice((int)offset + maskBytes, scaleBytes);
            int v = (int)offset + maskBytes + scaleBytes;
            for (int g = 0; g < cols; g += ScaleGroup)
            {
                var group = row.Slice(g, Math.Min(ScaleGroup, cols - g));
                float id = 0;
                if (type == DType.SparseQ8)
                {
                    float amax = 0;
                    foreach (float x in group)
                    {
                        amax = MathF.Max(amax, MathF.Abs(x));
                    }

                    float d = amax / 127f;
                    id = d != 0 ? 1f / d : 0f;
                    BinaryPrimitives.WriteUInt16LittleEndian(scales[(2 * (g / ScaleGroup))..], BitConverter.HalfToUInt16Bits((Half)d));
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

        BinaryPrimitives.WriteUInt64LittleEndian(span[(8 * rows)..], (ulong)offset);
        return bytes;
    }

    /// <summary>Converts one row to float32 (zeros where the bitmap has no value): the scalar reference.</summary>
    public static void ReadRow(DType type, byte* data, int row, Span<float> destination)
    {
        int cols = destination.Length;
        byte* mask = Row(data, row);
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
                : ((sbyte*)values)[k] * (float)BitConverter.UInt16BitsToHalf(Unsafe.ReadUnaligned<ushort>(scales + (2 * (c / ScaleGroup))));
            k++;
        }
    }
}
