using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Minnow.Tensors;

namespace Minnow.Quantization;

/// <summary>
/// The GGUF block formats as quantizers see them: a matrix of integer codes with one fp16 scale (and, for the
/// asymmetric INT4 types, one fp16 minimum) per group of values along a row. Q8_0: d + 32 int8 codes in
/// [-128, 127]; Q4_0: d + 32 codes in [-8, 7] stored as (q + 8) nibbles, value j in the low nibble of byte j and
/// value j+16 in its high nibble; Q4_1, Q4_1_G64, Q4_1_G128: d, m + 32, 64 or 128 codes in [0, 15] (value = q·d + m)
/// stored as Q4_1 nibble blocks of 32; Q3_1_G32, Q3_1_G64, Q3_1_G128: the same with codes in [0, 7], 12 bytes per 32
/// (<see cref="GroupCodes"/>).
/// </summary>
public sealed class BlockCodec
{
    /// <summary>The smallest group of every format (the nibble/byte block of 32).</summary>
    public const int BlockSize = 32;

    private readonly sbyte[] _codes;
    private readonly Half[] _scales;
    private readonly Half[]? _minimums;

    public BlockCodec(DType type, int rows, int columns)
    {
        if (type is not (DType.Q8_0 or DType.Q4_0) && !type.IsIntGroup())
        {
            throw new ArgumentOutOfRangeException(nameof(type), $"{type} is not a block format.");
        }

        int group = type.BlockSize();
        if (columns % group != 0)
        {
            throw new ArgumentException($"{columns} columns are not a multiple of {group}.", nameof(columns));
        }

        Type = type;
        GroupSize = group;
        Rows = rows;
        Columns = columns;
        _codes = new sbyte[(long)rows * columns];
        _scales = new Half[(long)rows * columns / group];
        _minimums = type.IsIntGroup() ? new Half[_scales.Length] : null;
    }

    /// <summary>Values sharing one scale (and minimum): 32 except for the groups of 64 and 128.</summary>
    public int GroupSize { get; }

    /// <summary>True when each group also has a minimum (value = q·d + m, codes in [0, <see cref="MaxCode"/>]).</summary>
    public bool Asymmetric => _minimums is not null;

    public DType Type { get; }

    public int Rows { get; }

    public int Columns { get; }

    public int MinCode => Type switch
    {
        DType.Q4_0 => -8,
        DType.Q8_0 => -128,
        _ => 0,
    };

    public int MaxCode => Type switch
    {
        DType.Q4_0 => 7,
        DType.Q8_0 => 127,
        _ => Type.MaxGroupCode(),
    };

    public Span<sbyte> CodeRow(int row) => _codes.AsSpan(row * Columns, Columns);

    public Span<Half> ScaleRow(int row) => _scales.AsSpan(row * (Columns / GroupSize), Columns / GroupSize);

    /// <summary>The groups' minimums m (all zero, and not stored, for the symmetric formats).</summary>
    public Span<Half> MinimumRow(int row) => _minimums is null ? Span<Half>.Empty : _minimums.AsSpan(row * (Columns / GroupSize), Columns / GroupSize);

    /// <summary>The value a code stands for: code × d (+ m for the asymmetric formats).</summary>
    public float Value(int row, int column)
    {
        long i = ((long)row * Columns) + column;
        return ValueAt(i);
    }

    private float ValueAt(long i)
    {
        long g = i / GroupSize;
        float value = _codes[i] * (float)_scales[g];
        return _minimums is null ? value : value + (float)_minimums[g];
    }

    /// <summary>The dequantized matrix (float32, row-major), as the format's dequantizer reads it.</summary>
    public float[] ToFloats()
    {
        var values = new float[_codes.Length];
        for (long i = 0; i < values.Length; i++)
        {
            values[i] = ValueAt(i);
        }

        return values;
    }

    /// <summary>The GGUF bytes of the matrix.</summary>
    public byte[] ToBytes()
    {
        int blockBytes = Type.BlockBytes();
        var bytes = new byte[Type.ByteCount(_codes.LongLength)];
        for (long b = 0; b < _scales.Length; b++)
        {
            var block = bytes.AsSpan((int)(b * blockBytes), blockBytes);
            BinaryPrimitives.WriteUInt16LittleEndian(block, BitConverter.HalfToUInt16Bits(_scales[b]));
            if (_minimums is not null)
            {
                BinaryPrimitives.WriteUInt16LittleEndian(block[2..], BitConverter.HalfToUInt16Bits(_minimums[b]));
                int codeBytes = GroupCodes.BytesPerBlock(Type);
                for (int s = 0; s < GroupSize / BlockSize; s++)
                {
                    var codes32 = MemoryMarshal.AsBytes(_codes.AsSpan((int)((b * GroupSize) + (s * BlockSize)), BlockSize));
                    GroupCodes.Pack(Type, codes32, block.Slice(4 + (codeBytes * s), codeBytes));
                }

                continue;
            }

            var codes = _codes.AsSpan((int)(b * BlockSize), BlockSize);
            if (Type == DType.Q8_0)
            {
                for (int j = 0; j < BlockSize; j++)
                {
                    block[2 + j] = (byte)codes[j];
                }
            }
            else
            {
                for (int j = 0; j < 16; j++)
                {
                    block[2 + j] = (byte)((codes[j] + 8) | ((codes[j + 16] + 8) << 4));
                }
            }
        }

        return bytes;
    }

    /// <summary>The code nearest to <paramref name="value"/> on the grid of step d (1/d given), clamped to the format.</summary>
    public static int Code(DType type, float value, float inverseScale)
    {
        if (type == DType.Q4_0)
        {
            // As llama.cpp: (int)(x/d + 8.5) with the result clamped to [0, 15], then the offset removed.
            return Math.Clamp((int)MathF.Floor((value * inverseScale) + 8.5f), 0, 15) - 8;
        }

        return Math.Clamp((int)MathF.Round(value * inverseScale, MidpointRounding.AwayFromZero), -128, 127);
    }

    /// <summary>
    /// The asymmetric code of <paramref name="value"/> on the grid m + q·d (1/d given), q in [0, <paramref name="maxCode"/>]
    /// (15 for INT4, 7 for INT3): as ggml's quantize_row_q4_1_ref, (int)((x − m)/d + 0.5) clamped (values below m,
    /// which error feedback can produce, go to 0).
    /// </summary>
    public static int Code(float value, float inverseScale, float minimum, int maxCode) =>
        Math.Clamp((int)MathF.Floor(((value - minimum) * inverseScale) + 0.5f), 0, maxCode);

    /// <summary>
    /// llama.cpp's scale for a block, before fp16 rounding: Q4_0 d = (the value of largest magnitude) / -8;
    /// Q8_0 d = max|x| / 127.
    /// </summary>
    public static float ReferenceScale(DType type, ReadOnlySpan<float> block)
    {
        float amax = 0, max = 0;
        foreach (float v in block)
        {
            if (MathF.Abs(v) > amax)
            {
                amax = MathF.Abs(v);
                max = v;
            }
        }

        return type == DType.Q4_0 ? max / -8f : amax / 127f;
    }

    /// <summary>Quantizes one row by round to nearest, exactly as llama.cpp's reference quantizer (codes computed against the fp32 scale).</summary>
    public void SetRowRoundToNearest(int row, ReadOnlySpan<float> values)
    {
        var codes = CodeRow(row);
        var scales = ScaleRow(row);
        if (Asymmetric)
        {
            // As ggml's quantize_row_q4_1_ref (and Dequantize.FromFloats): the grid spans the group's minimum to maximum.
            var minimums = MinimumRow(row);
            int top = MaxCode;
            for (int g = 0; g < scales.Length; g++)
            {
                var group = values.Slice(g * GroupSize, GroupSize);
                float min = float.MaxValue, max = float.MinValue;
                foreach (float v in group)
                {
                    min = MathF.Min(min, v);
                    max = MathF.Max(max, v);
                }

                float d = (max - min) / top;
                float id = d != 0 ? 1f / d : 0f;
                scales[g] = (Half)d;
                minimums[g] = (Half)min;
                for (int j = 0; j < GroupSize; j++)
                {
                    codes[(g * GroupSize) + j] = (sbyte)Math.Min(top, (int)(((group[j] - min) * id) + 0.5f));
                }
            }

            return;
        }

        for (int b = 0; b < scales.Length; b++)
        {
            var block = values.Slice(b * BlockSize, BlockSize);
            float d = ReferenceScale(Type, block);
            float id = d != 0 ? 1f / d : 0f;
            scales[b] = (Half)d;
            for (int j = 0; j < BlockSize; j++)
            {
                codes[(b * BlockSize) + j] = (sbyte)Code(Type, block[j], id);
            }
        }
    }

    /// <summary>
    /// INT8 per output channel (Q8_0 only): one symmetric scale for the whole row, d = fp16(max|row| / 127), every
    /// block carrying it; codes round(x / d) in [-127, 127] against the fp16 scale the kernels read.
    /// </summary>
    public void SetRowPerChannel(int row, ReadOnlySpan<float> values)
    {
        if (Type != DType.Q8_0)
        {
            throw new InvalidOperationException($"per-channel INT8 is stored as Q8_0, not {Type}.");
        }

        float d = PerChannelScale(values);
        float id = d != 0 ? 1f / d : 0f;
        ScaleRow(row).Fill((Half)d);
        var codes = CodeRow(row);
        for (int j = 0; j < values.Length; j++)
        {
            codes[j] = (sbyte)Math.Clamp(Code(DType.Q8_0, values[j], id), -127, 127);
        }
    }

    /// <summary>The fp16 per-row scale of INT8 per output channel: max|row| / 127, rounded to fp16.</summary>
    public static float PerChannelScale(ReadOnlySpan<float> row)
    {
        float amax = 0;
        foreach (float v in row)
        {
            amax = MathF.Max(amax, MathF.Abs(v));
        }

        return (float)(Half)(amax / 127f);
    }

    /// <summary>INT8 per output channel by round to nearest for a whole [rows, columns] matrix.</summary>
    public static BlockCodec RoundToNearestPerChannel(float[] values, int rows, int columns)
    {
        var codec = new BlockCodec(DType.Q8_0, rows, columns);
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
            r => codec.SetRowPerChannel(r, values.AsSpan(r * columns, columns)));
        return codec;
    }

    /// <summary>Round to nearest for a whole [rows, columns] matrix (rows spread over the cores).</summary>
    public static BlockCodec RoundToNearest(DType type, float[] values, int rows, int columns)
    {
        var codec = new BlockCodec(type, rows, columns);
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
            r => codec.SetRowRoundToNearest(r, values.AsSpan(r * columns, columns)));
        return codec;
    }
}
