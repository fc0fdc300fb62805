using System.Buffers.Binary;
using Minnow.Tensors;

namespace Minnow.Quantization;

/// <summary>
/// The GGUF block formats as quantizers see them: a matrix of integer codes with one fp16 scale per block of 32
/// values along a row. Q8_0: d + 32 int8 codes in [-128, 127]; Q4_0: d + 32 codes in [-8, 7] stored as
/// (q + 8) nibbles, value j in the low nibble of byte j and value j+16 in its high nibble.
/// </summary>
public sealed class BlockCodec
{
    public const int BlockSize = 32;

    private readonly sbyte[] _codes;
    private readonly Half[] _scales;

    public BlockCodec(DType type, int rows, int columns)
    {
        if (type is not (DType.Q8_0 or DType.Q4_0))
        {
            throw new ArgumentOutOfRangeException(nameof(type), $"{type} is not a block format.");
        }

        if (columns % BlockSize != 0)
        {
            throw new ArgumentException($"{columns} columns are not a multiple of {BlockSize}.", nameof(columns));
        }

        Type = type;
        Rows = rows;
        Columns = columns;
        _codes = new sbyte[(long)rows * columns];
        _scales = new Half[(long)rows * columns / BlockSize];
    }

    public DType Type { get; }

    public int Rows { get; }

    public int Columns { get; }

    public int MinCode => Type == DType.Q4_0 ? -8 : -128;

    public int MaxCode => Type == DType.Q4_0 ? 7 : 127;

    public Span<sbyte> CodeRow(int row) => _codes.AsSpan(row * Columns, Columns);

    public Span<Half> ScaleRow(int row) => _scales.AsSpan(row * (Columns / BlockSize), Columns / BlockSize);

    /// <summary>The value a code stands for: code × d.</summary>
    public float Value(int row, int column) => _codes[((long)row * Columns) + column] * (float)_scales[(((long)row * Columns) + column) / BlockSize];

    /// <summary>The dequantized matrix (float32, row-major).</summary>
    public float[] ToFloats()
    {
        var values = new float[_codes.Length];
        for (long i = 0; i < values.Length; i++)
        {
            values[i] = _codes[i] * (float)_scales[i / BlockSize];
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

    /// <summary>Round to nearest for a whole [rows, columns] matrix (rows spread over the cores).</summary>
    public static BlockCodec RoundToNearest(DType type, float[] values, int rows, int columns)
    {
        var codec = new BlockCodec(type, rows, columns);
        Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
            r => codec.SetRowRoundToNearest(r, values.AsSpan(r * columns, columns)));
        return codec;
    }
}
