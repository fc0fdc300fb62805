using System.Buffers.Binary;

namespace Minnow.Tensors;

/// <summary>
/// Scalar conversion to float32 of the llama.cpp block types Minnow reads but has no kernels for: Q4_1, Q5_0, Q5_1,
/// Q8_1 (blocks of 32 values) and the K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (super-blocks of QK_K = 256 values).
/// Each method follows ggml's <c>dequantize_row_*</c> (ggml/src/ggml-quants.c; structs in ggml-common.h) operation
/// for operation, in float32 and in the same order, so the values are the ones llama.cpp's own dequantizer gives.
/// All scales ("d", "dmin", "m") are IEEE fp16, little-endian. Used once per tensor at load time: no SIMD.
/// </summary>
public static unsafe class DequantizeKQuants
{
    public const int QK_K = 256;

    /// <summary>Converts <paramref name="destination"/>.Length values stored at <paramref name="source"/> (any type).</summary>
    public static void Row(DType type, byte* source, Span<float> destination)
    {
        if (!type.IsLoadOnly())
        {
            Dequantize.Row(type, source, destination);
            return;
        }

        Row(type, new ReadOnlySpan<byte>(source, checked((int)type.ByteCount(destination.Length))), destination);
    }

    /// <summary>
    /// Converts whole blocks: <paramref name="destination"/>.Length must be a multiple of the block size and
    /// <paramref name="source"/> must hold exactly the bytes of that many values.
    /// </summary>
    public static void Row(DType type, ReadOnlySpan<byte> source, Span<float> destination)
    {
        int n = destination.Length;
        if (n % type.BlockSize() != 0 || source.Length != type.ByteCount(n))
        {
            throw new ArgumentException($"{n} {type.Name()} values need {type.ByteCount(n)} bytes in whole blocks of {type.BlockSize()}; {source.Length} given.");
        }

        int blocks = n / type.BlockSize(), size = type.BlockBytes();
        for (int b = 0; b < blocks; b++)
        {
            var block = source.Slice(b * size, size);
            var y = destination.Slice(b * type.BlockSize(), type.BlockSize());
            switch (type)
            {
                case DType.Q4_1: Q4_1(block, y); break;
                case DType.Q5_0: Q5_0(block, y); break;
                case DType.Q5_1: Q5_1(block, y); break;
                case DType.Q8_1: Q8_1(block, y); break;
                case DType.Q2_K: Q2_K(block, y); break;
                case DType.Q3_K: Q3_K(block, y); break;
                case DType.Q4_K: Q4_K(block, y); break;
                case DType.Q5_K: Q5_K(block, y); break;
                case DType.Q6_K: Q6_K(block, y); break;
                default:
                    fixed (byte* p = source)
                    {
                        Dequantize.Row(type, p, destination);
                    }

                    return;
            }
        }
    }

    /// <summary>Converts a whole tensor (any type) to a new float32 array.</summary>
    public static float[] ToFloats(Tensor tensor)
    {
        var result = new float[tensor.ElementCount];
        int cols = tensor.Columns;
        for (int r = 0; r < tensor.Rows; r++)
        {
            Row(tensor.Type, tensor.RowPointer(r), result.AsSpan(r * cols, cols));
        }

        return result;
    }

    private static float Half(ReadOnlySpan<byte> block, int offset) =>
        (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(block[offset..]));

    // ---- blocks of 32 ----------------------------------------------------------------------------------------

    /// <summary>
    /// block_q4_1 (20 bytes): d (fp16), m (fp16), qs[16]. Value j &lt; 16 is the low nibble of qs[j], value j + 16
    /// its high nibble; y = q * d + m.
    /// </summary>
    public static void Q4_1(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0), m = Half(block, 2);
        var qs = block.Slice(4, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = ((qs[j] & 0x0F) * d) + m;
            y[j + 16] = ((qs[j] >> 4) * d) + m;
        }
    }

    /// <summary>
    /// block_q5_0 (22 bytes): d (fp16), qh[4] (a little-endian uint32: bit j is the fifth bit of value j),
    /// qs[16] (low nibbles as in Q4_1). y = (q - 16) * d.
    /// </summary>
    public static void Q5_0(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block[2..]);
        var qs = block.Slice(6, 16);
        for (int j = 0; j < 16; j++)
        {
            int high0 = (int)((qh >> j) << 4) & 0x10;
            int high1 = (int)(qh >> (j + 12)) & 0x10;
            y[j] = (((qs[j] & 0x0F) | high0) - 16) * d;
            y[j + 16] = (((qs[j] >> 4) | high1) - 16) * d;
        }
    }

    /// <summary>block_q5_1 (24 bytes): d (fp16), m (fp16), qh[4], qs[16] as in Q5_0; y = q * d + m.</summary>
    public static void Q5_1(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0), m = Half(block, 2);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block[4..]);
        var qs = block.Slice(8, 16);
        for (int j = 0; j < 16; j++)
        {
            int high0 = (int)((qh >> j) << 4) & 0x10;
            int high1 = (int)(qh >> (j + 12)) & 0x10;
            y[j] = (((qs[j] & 0x0F) | high0) * d) + m;
            y[j + 16] = (((qs[j] >> 4) | high1) * d) + m;
        }
    }

    /// <summary>block_q8_1 (36 bytes): d (fp16), s (fp16, d times the sum of the quants; not needed), qs[32] int8; y = q * d.</summary>
    public static void Q8_1(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0);
        for (int j = 0; j < 32; j++)
        {
            y[j] = (sbyte)block[4 + j] * d;
        }
    }

    // ---- super-blocks of 256 (K-quants) ----------------------------------------------------------------------

    /// <summary>
    /// block_q2_K (84 bytes): scales[16], qs[64], d (fp16), dmin (fp16). 16 sub-blocks of 16 values; scales[i] holds
    /// sub-block i's scale (low nibble, times d) and minimum (high nibble, times dmin). Each 128 values use 32 bytes
    /// of qs: value 32·s + l (s = 0..3, l = 0..31) is bits 2s..2s+1 of qs[l]. y = d·sc · q − dmin·m.
    /// </summary>
    public static void Q2_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        var scales = block[..16];
        var qs = block.Slice(16, 64);
        float d = Half(block, 80), min = Half(block, 82);
        int o = 0, i = 0;
        for (int half = 0; half < 2; half++)
        {
            var q = qs.Slice(32 * half, 32);
            for (int shift = 0; shift < 8; shift += 2)
            {
                for (int part = 0; part < 2; part++)
                {
                    byte sc = scales[i++];
                    float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                    for (int l = 0; l < 16; l++)
                    {
                        y[o++] = (dl * ((q[(16 * part) + l] >> shift) & 3)) - ml;
                    }
                }
            }
        }
    }

    /// <summary>
    /// block_q3_K (110 bytes): hmask[32], qs[64], scales[12], d (fp16). 16 sub-blocks of 16 values with signed 6-bit
    /// scales: the low 4 bits of scale j are the low nibble of scales[j] (j &lt; 8) or the high nibble of
    /// scales[j − 8], the top 2 bits are bits 2·(j / 4).. of scales[8 + j % 4]; the scale is that minus 32. The low
    /// 2 bits of each quant are packed as in Q2_K; its third bit is bit (value / 32) of hmask[value % 32], and a
    /// clear bit subtracts 4. y = d · (scale − 32) · q, q in −4..3.
    /// </summary>
    public static void Q3_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        var hmask = block[..32];
        var qs = block.Slice(32, 64);
        var packed = block.Slice(96, 12);
        float dAll = Half(block, 108);
        Span<int> scales = stackalloc int[16];
        for (int j = 0; j < 16; j++)
        {
            int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
            int high = (packed[8 + (j % 4)] >> (2 * (j / 4))) & 3;
            scales[j] = (low | (high << 4)) - 32;
        }

        int o = 0, i = 0;
        byte m = 1;
        for (int half = 0; half < 2; half++)
        {
            var q = qs.Slice(32 * half, 32);
            for (int shift = 0; shift < 8; shift += 2)
            {
                for (int part = 0; part < 2; part++)
                {
                    float dl = dAll * scales[i++];
                    for (int l = 0; l < 16; l++)
                    {
                        int k = (16 * part) + l;
                        y[o++] = dl * (((q[k] >> shift) & 3) - ((hmask[k] & m) != 0 ? 0 : 4));
                    }
                }

                m <<= 1;
            }
        }
    }

    /// <summary>
    /// The 6-bit scale and minimum of sub-block j (0..7) of a Q4_K / Q5_K block from its 12 packed bytes
    /// (ggml's get_scale_min_k4): for j &lt; 4, the low 6 bits of bytes j and j + 4; for j ≥ 4, the nibbles of byte
    /// j + 4 (scale low, minimum high) with the top 2 bits of bytes j − 4 and j as their bits 4–5.
    /// </summary>
    public static (int Scale, int Min) ScaleMinK4(int j, ReadOnlySpan<byte> q) => j < 4
        ? (q[j] & 63, q[j + 4] & 63)
        : ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4));

    /// <summary>
    /// block_q4_K (144 bytes): d (fp16), dmin (fp16), scales[12] (8 packed 6-bit scales and minimums, see
    /// <see cref="ScaleMinK4"/>), qs[128]. 8 sub-blocks of 32 values; each 64 values use 32 bytes of qs, the first
    /// 32 values their low nibbles, the next 32 their high nibbles. y = d·sc · q − dmin·m.
    /// </summary>
    public static void Q4_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0), min = Half(block, 2);
        var scales = block.Slice(4, 12);
        var qs = block.Slice(16, 128);
        for (int j = 0, o = 0; j < 4; j++)
        {
            var q = qs.Slice(32 * j, 32);
            var (sc1, m1) = ScaleMinK4(2 * j, scales);
            var (sc2, m2) = ScaleMinK4((2 * j) + 1, scales);
            float d1 = d * sc1, min1 = min * m1, d2 = d * sc2, min2 = min * m2;
            for (int l = 0; l < 32; l++)
            {
                y[o++] = (d1 * (q[l] & 0xF)) - min1;
            }

            for (int l = 0; l < 32; l++)
            {
                y[o++] = (d2 * (q[l] >> 4)) - min2;
            }
        }
    }

    /// <summary>
    /// block_q5_K (176 bytes): d (fp16), dmin (fp16), scales[12] (as Q4_K), qh[32], qs[128] (low nibbles as Q4_K).
    /// The fifth bit of value 32·s + l (s = 0..7 the sub-block) is bit s of qh[l]. y = d·sc · q − dmin·m.
    /// </summary>
    public static void Q5_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0), min = Half(block, 2);
        var scales = block.Slice(4, 12);
        var qh = block.Slice(16, 32);
        var qs = block.Slice(48, 128);
        byte u1 = 1, u2 = 2;
        for (int j = 0, o = 0; j < 4; j++)
        {
            var ql = qs.Slice(32 * j, 32);
            var (sc1, m1) = ScaleMinK4(2 * j, scales);
            var (sc2, m2) = ScaleMinK4((2 * j) + 1, scales);
            float d1 = d * sc1, min1 = min * m1, d2 = d * sc2, min2 = min * m2;
            for (int l = 0; l < 32; l++)
            {
                y[o++] = (d1 * ((ql[l] & 0xF) + ((qh[l] & u1) != 0 ? 16 : 0))) - min1;
            }

            for (int l = 0; l < 32; l++)
            {
                y[o++] = (d2 * ((ql[l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0))) - min2;
            }

            u1 <<= 2;
            u2 <<= 2;
        }
    }

    /// <summary>
    /// block_q6_K (210 bytes): ql[128], qh[64], scales[16] (int8), d (fp16). 16 sub-blocks of 16 values. Each 128
    /// values use 64 bytes of ql and 32 of qh: for l = 0..31, values l, l + 32, l + 64, l + 96 take the low nibble of
    /// ql[l], the low nibble of ql[l + 32], the high nibble of ql[l], the high nibble of ql[l + 32], and bits 0–1,
    /// 2–3, 4–5, 6–7 of qh[l] as their top 2 bits. y = d · scale · (q − 32), the scale of value v being
    /// scales[v / 16].
    /// </summary>
    public static void Q6_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 208);
        for (int half = 0; half < 2; half++)
        {
            var ql = block.Slice(64 * half, 64);
            var qh = block.Slice(128 + (32 * half), 32);
            var sc = block.Slice(192 + (8 * half), 8);
            var yy = y.Slice(128 * half, 128);
            for (int l = 0; l < 32; l++)
            {
                int s = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                yy[l] = d * (sbyte)sc[s] * q1;
                yy[l + 32] = d * (sbyte)sc[s + 2] * q2;
                yy[l + 64] = d * (sbyte)sc[s + 4] * q3;
                yy[l + 96] = d * (sbyte)sc[s + 6] * q4;
            }
        }
    }
}
