using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Minnow.Tensors;

namespace Minnow.Export.Onnx;

/// <summary>
/// One linear layer as the exporter sees it: some rows of a stored weight matrix ([out, in], or Hugging Face's
/// Conv1D [in, out]), with an optional bias. Rows are picked so fused projections (GPT-NeoX's query_key_value,
/// GPT-2's c_attn) export as separate q, k and v layers, and q/k rows stored in RoPE's interleaved order come out in
/// rotate-half order.
/// </summary>
internal sealed unsafe class OnnxLinear
{
    public required string Name { get; init; }

    public required Tensor Weight { get; init; }

    /// <summary>Physical row (Conv1D: column) of each output feature; null for all rows in order.</summary>
    public int[]? Rows { get; init; }

    /// <summary>The weight is stored [in, out] (GPT-2's Conv1D).</summary>
    public bool Conv1D { get; init; }

    public float[]? Bias { get; init; }

    public int OutFeatures => Rows?.Length ?? (Conv1D ? Weight.Columns : Weight.Rows);

    public int InFeatures => Conv1D ? Weight.Rows : Weight.Columns;

    /// <summary>Whether the stored type is one MatMulNBits carries exactly (its codes, scales and minimums as they are).</summary>
    public bool IsBlockQuantized => !Conv1D && (Weight.Type is DType.Q8_0 or DType.Q4_0 || Weight.Type.IsIntGroup());

    private int Physical(int row) => Rows?[row] ?? row;

    /// <summary>The weights dequantized, [out, in] row-major.</summary>
    public float[] ToFloats()
    {
        int n = OutFeatures, k = InFeatures;
        var result = new float[(long)n * k];
        if (Conv1D)
        {
            var all = Weight.ToFloatArray();
            for (int r = 0; r < n; r++)
            {
                int col = Physical(r), width = Weight.Columns;
                for (int c = 0; c < k; c++)
                {
                    result[((long)r * k) + c] = all[((long)c * width) + col];
                }
            }

            return result;
        }

        for (int r = 0; r < n; r++)
        {
            Weight.ReadRow(Physical(r), result.AsSpan((int)((long)r * k), k));
        }

        return result;
    }

    /// <summary>The stored bytes of one output row (block-quantized types only).</summary>
    public ReadOnlySpan<byte> RawRow(int row) => new(Weight.RowPointer(Physical(row)), checked((int)Weight.RowBytes));
}

/// <summary>
/// <c>com.microsoft.MatMulNBits</c> inputs for one linear layer: B [N, k_blocks, block_size·bits/8] with codes packed
/// low bits first along K, scales [N·k_blocks] float32, and zero points (uint8, packed as B, or absent for the default
/// 2^(bits−1)). The dequantized weight (q − zero_point) · scale equals Minnow's value for every weight.
/// </summary>
internal sealed class MatMulNBitsWeights
{
    public required int Bits { get; init; }

    public required int BlockSize { get; init; }

    public required int N { get; init; }

    public required int K { get; init; }

    public required byte[] B { get; init; }

    public required float[] Scales { get; init; }

    /// <summary>Packed uint8 zero points, or null for the default.</summary>
    public byte[]? ZeroPoints { get; init; }

    /// <summary>
    /// Groups' minimums m [N, k_blocks] when some minimum is not an integer multiple of its scale: then the zero points
    /// are 0 and the graph adds m times each group's sum of inputs, so the weight is q·d + m exactly as Minnow's.
    /// </summary>
    public float[]? Minimums { get; init; }

    public int KBlocks => K / BlockSize;

    /// <summary>
    /// MatMulNBits' dequantized weight [N, K], as the operator specifies ((q − zero_point) · scale in float32). Tests
    /// compare it with Minnow's own dequantization.
    /// </summary>
    public float[] Dequantize()
    {
        var w = new float[(long)N * K];
        int blob = BlockSize * Bits / 8, zpRowBytes = ((KBlocks * Bits) + 7) / 8;
        for (int n = 0; n < N; n++)
        {
            for (int b = 0; b < KBlocks; b++)
            {
                float scale = Scales[(n * KBlocks) + b];
                float zp = ZeroPoints is null ? 1 << (Bits - 1) : Code(ZeroPoints.AsSpan(n * zpRowBytes, zpRowBytes), b, Bits);
                float minimum = Minimums?[(n * KBlocks) + b] ?? 0;
                var codes = B.AsSpan(((n * KBlocks) + b) * blob, blob);
                for (int j = 0; j < BlockSize; j++)
                {
                    float value = (Code(codes, j, Bits) - zp) * scale;
                    w[((long)n * K) + (b * BlockSize) + j] = Minimums is null ? value : value + minimum;
                }
            }
        }

        return w;
    }

    private static int Code(ReadOnlySpan<byte> packed, int index, int bits) =>
        bits == 8 ? packed[index] : (packed[index / 2] >> (4 * (index & 1))) & 15;

    /// <summary>
    /// Carries a block-quantized layer over as it is: Q8_0 → 8 bits (code + 128, default zero point 128); Q4_0 → 4 bits
    /// (default zero point 8); INT4/INT3 groups → 4 bits with one uint8 zero point per group, −m/d, when every m is an
    /// integer multiple of its d; otherwise zero points 0 and the minimums beside (<see cref="Minimums"/>).
    /// </summary>
    public static MatMulNBitsWeights FromBlocks(OnnxLinear linear)
    {
        var type = linear.Weight.Type;
        int n = linear.OutFeatures, k = linear.InFeatures;
        int blockSize = type.BlockSize(), bits = type == DType.Q8_0 ? 8 : 4;
        int kBlocks = k / blockSize, blob = blockSize * bits / 8, blockBytes = type.BlockBytes();
        var b = new byte[(long)n * kBlocks * blob];
        var scales = new float[n * kBlocks];
        var minimums = type.IsIntGroup() ? new float[n * kBlocks] : null;
        Span<byte> codes = stackalloc byte[32];
        for (int r = 0; r < n; r++)
        {
            var row = linear.RawRow(r);
            for (int g = 0; g < kBlocks; g++)
            {
                var block = row.Slice(g * blockBytes, blockBytes);
                int at = (r * kBlocks) + g;
                scales[at] = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(block));
                var dst = b.AsSpan(at * blob, blob);
                if (type == DType.Q8_0)
                {
                    for (int j = 0; j < 32; j++)
                    {
                        dst[j] = (byte)((sbyte)block[2 + j] + 128);
                    }

                    continue;
                }

                if (type == DType.Q4_0)
                {
                    for (int j = 0; j < 16; j++)
                    {
                        codes[j] = (byte)(block[2 + j] & 15);
                        codes[j + 16] = (byte)(block[2 + j] >> 4);
                    }

                    PackNibbles(codes, dst);
                    continue;
                }

                minimums![at] = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(block[2..]));
                int codeBytes = GroupCodes.BytesPerBlock(type);
                for (int s = 0; s < blockSize / 32; s++)
                {
                    GroupCodes.Unpack(type, block.Slice(4 + (s * codeBytes), codeBytes), codes);
                    PackNibbles(codes, dst.Slice(s * 16, 16));
                }
            }
        }

        if (minimums is null)
        {
            return new MatMulNBitsWeights { Bits = bits, BlockSize = blockSize, N = n, K = k, B = b, Scales = scales };
        }

        // value = q·d + m = (q − z)·d exactly when m = −z·d for an integer z in [0, 15].
        var zeroPoints = new byte[minimums.Length];
        bool integral = true;
        for (int i = 0; i < minimums.Length && integral; i++)
        {
            float z = scales[i] == 0 ? (minimums[i] == 0 ? 0 : float.NaN) : -minimums[i] / scales[i];
            integral = z >= 0 && z <= 15 && z == MathF.Round(z) && -(MathF.Round(z) * scales[i]) == minimums[i];
            zeroPoints[i] = integral ? (byte)z : (byte)0;
        }

        int zpRowBytes = (kBlocks + 1) / 2;
        var packed = new byte[n * zpRowBytes];
        for (int r = 0; r < n && integral; r++)
        {
            for (int g = 0; g < kBlocks; g++)
            {
                packed[(r * zpRowBytes) + (g / 2)] |= (byte)(zeroPoints[(r * kBlocks) + g] << (4 * (g & 1)));
            }
        }

        return new MatMulNBitsWeights { Bits = 4, BlockSize = blockSize, N = n, K = k, B = b, Scales = scales, ZeroPoints = packed, Minimums = integral ? null : minimums };
    }

    /// <summary>32 codes, element 2i in the low nibble of byte i and 2i + 1 in its high nibble (MatMulNBits' packing).</summary>
    private static void PackNibbles(ReadOnlySpan<byte> codes, Span<byte> destination)
    {
        for (int i = 0; i < 16; i++)
        {
            destination[i] = (byte)((codes[2 * i] & 15) | ((codes[(2 * i) + 1] & 15) << 4));
        }
    }

    public ReadOnlySpan<byte> ScaleBytes => MemoryMarshal.AsBytes(Scales.AsSpan());
}
