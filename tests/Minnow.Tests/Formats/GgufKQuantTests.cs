using System.Buffers.Binary;
using System.Text;
using Minnow.Formats.Gguf;
using Minnow.Tensors;

namespace Minnow.Tests.Formats;

/// <summary>
/// The block types Minnow converts at load (Q4_1, Q5_0, Q5_1, Q8_1, Q2_K..Q6_K), on blocks built by hand: each test
/// packs known quants and scales as ggml's quantizer lays them out and checks every value against the type's formula
/// written per element. (The check against llama.cpp's own dequantizer is in Loading/LlamaCppQuantizedGgufTests.)
/// </summary>
public sealed class GgufKQuantTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("minnow-kquant-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static void WriteHalf(Span<byte> block, int offset, float value) =>
        BinaryPrimitives.WriteUInt16LittleEndian(block[offset..], BitConverter.HalfToUInt16Bits((Half)value));

    private static float AsHalf(float value) => (float)(Half)value;

    private static int[] RandomQuants(int n, int max, int seed)
    {
        var random = new Random(seed);
        var q = new int[n];
        for (int i = 0; i < n; i++)
        {
            q[i] = random.Next(max + 1);
        }

        // Make sure the extremes occur.
        q[0] = 0;
        q[n - 1] = max;
        return q;
    }

    private static float[] Convert(DType type, byte[] block)
    {
        var values = new float[type.BlockSize() * (block.Length / type.BlockBytes())];
        DequantizeKQuants.Row(type, block, values);
        return values;
    }

    [Fact]
    public void BlockSizesAreGgmls()
    {
        Assert.Equal([20, 22, 24, 36, 84, 110, 144, 176, 210],
            new[] { DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_1, DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K }.Select(t => t.BlockBytes()));
        Assert.Equal(256, DType.Q4_K.BlockSize());
        Assert.Equal(32, DType.Q5_0.BlockSize());
        Assert.Equal([3u, 6u, 7u, 9u, 10u, 11u, 12u, 13u, 14u],
            new[] { DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_1, DType.Q2_K, DType.Q3_K, DType.Q4_K, DType.Q5_K, DType.Q6_K }.Select(GgmlType.FromDType));
        Assert.Equal(DType.Q6_K, GgmlType.ToDType(14));
        Assert.Null(GgmlType.ToDType(GgmlType.IQ2_XXS));
    }

    [Fact]
    public void Q4_1IsScaleTimesNibblePlusMinimum()
    {
        var block = new byte[20];
        float d = 0.0371f, m = -0.52f;
        WriteHalf(block, 0, d);
        WriteHalf(block, 2, m);
        int[] q = RandomQuants(32, 15, 1);
        for (int j = 0; j < 16; j++)
        {
            block[4 + j] = (byte)(q[j] | (q[j + 16] << 4));
        }

        float[] y = Convert(DType.Q4_1, block);
        for (int i = 0; i < 32; i++)
        {
            Assert.Equal((q[i] * AsHalf(d)) + AsHalf(m), y[i]);
        }
    }

    [Fact]
    public void Q5_0TakesTheFifthBitFromQh()
    {
        var block = new byte[22];
        float d = -0.0123f;
        WriteHalf(block, 0, d);
        int[] q = RandomQuants(32, 31, 2);
        uint qh = 0;
        for (int j = 0; j < 16; j++)
        {
            block[6 + j] = (byte)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
            qh |= (uint)(q[j] >> 4) << j;
            qh |= (uint)(q[j + 16] >> 4) << (j + 16);
        }

        BinaryPrimitives.WriteUInt32LittleEndian(block.AsSpan(2), qh);
        float[] y = Convert(DType.Q5_0, block);
        for (int i = 0; i < 32; i++)
        {
            Assert.Equal((q[i] - 16) * AsHalf(d), y[i]);
        }

        // The fifth bits matter: with qh cleared, every value with q >= 16 changes.
        BinaryPrimitives.WriteUInt32LittleEndian(block.AsSpan(2), 0);
        float[] cleared = Convert(DType.Q5_0, block);
        Assert.Equal(q.Count(v => v >= 16), Enumerable.Range(0, 32).Count(i => cleared[i] != y[i]));
    }

    [Fact]
    public void Q5_1AndQ8_1()
    {
        var block = new byte[24];
        float d = 0.25f, m = 1.5f;
        WriteHalf(block, 0, d);
        WriteHalf(block, 2, m);
        int[] q = RandomQuants(32, 31, 3);
        uint qh = 0;
        for (int j = 0; j < 16; j++)
        {
            block[8 + j] = (byte)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
            qh |= (uint)(q[j] >> 4) << j;
            qh |= (uint)(q[j + 16] >> 4) << (j + 16);
        }

        BinaryPrimitives.WriteUInt32LittleEndian(block.AsSpan(4), qh);
        Assert.Equal(q.Select(v => (v * d) + m), Convert(DType.Q5_1, block));

        var q8 = new byte[36];
        WriteHalf(q8, 0, 0.5f);
        WriteHalf(q8, 2, 123f); // the sum: not used by dequantization
        for (int j = 0; j < 32; j++)
        {
            q8[4 + j] = (byte)(sbyte)((j * 8) - 127);
        }

        Assert.Equal(Enumerable.Range(0, 32).Select(j => ((j * 8) - 127) * 0.5f), Convert(DType.Q8_1, q8));
    }

    /// <summary>Packs 8 six-bit scales and minimums into 12 bytes as ggml's quantize_row_q4_K does.</summary>
    private static void PackScaleMinK4(Span<byte> packed, int[] scales, int[] mins)
    {
        packed.Clear();
        for (int j = 0; j < 8; j++)
        {
            if (j < 4)
            {
                packed[j] = (byte)scales[j];
                packed[j + 4] = (byte)mins[j];
            }
            else
            {
                packed[j + 4] = (byte)((scales[j] & 0xF) | ((mins[j] & 0xF) << 4));
                packed[j - 4] |= (byte)((scales[j] >> 4) << 6);
                packed[j] |= (byte)((mins[j] >> 4) << 6);
            }
        }
    }

    [Fact]
    public void Q4_KUsesSixBitScalesAndMinimumsPerSubBlockOf32()
    {
        var block = new byte[144];
        float d = 0.0213f, dmin = 0.0087f;
        WriteHalf(block, 0, d);
        WriteHalf(block, 2, dmin);
        // All 6 bits used, so the packed high bits of sub-blocks 4..7 are exercised.
        int[] scales = [1, 63, 17, 32, 48, 5, 60, 33];
        int[] mins = [62, 0, 31, 16, 47, 63, 2, 40];
        PackScaleMinK4(block.AsSpan(4, 12), scales, mins);
        int[] q = RandomQuants(256, 15, 4);
        for (int i = 0; i < 256; i++)
        {
            // 64 values per 32 bytes: the first 32 in the low nibbles, the next 32 in the high nibbles.
            block[16 + (32 * (i / 64)) + (i % 32)] |= (byte)(q[i] << (4 * ((i % 64) / 32)));
        }

        float[] y = Convert(DType.Q4_K, block);
        for (int i = 0; i < 256; i++)
        {
            int s = i / 32;
            Assert.Equal((AsHalf(d) * scales[s] * q[i]) - (AsHalf(dmin) * mins[s]), y[i]);
        }

        for (int j = 0; j < 8; j++)
        {
            Assert.Equal((scales[j], mins[j]), DequantizeKQuants.ScaleMinK4(j, block.AsSpan(4, 12)));
        }
    }

    [Fact]
    public void Q5_KAddsTheFifthBitFromQh()
    {
        var block = new byte[176];
        float d = 0.011f, dmin = 0.02f;
        WriteHalf(block, 0, d);
        WriteHalf(block, 2, dmin);
        int[] scales = [63, 1, 2, 3, 40, 50, 60, 17];
        int[] mins = [0, 63, 12, 13, 14, 33, 34, 35];
        PackScaleMinK4(block.AsSpan(4, 12), scales, mins);
        int[] q = RandomQuants(256, 31, 5);
        for (int i = 0; i < 256; i++)
        {
            block[48 + (32 * (i / 64)) + (i % 32)] |= (byte)((q[i] & 0xF) << (4 * ((i % 64) / 32)));
            block[16 + (i % 32)] |= (byte)((q[i] >> 4) << (i / 32));
        }

        float[] y = Convert(DType.Q5_K, block);
        for (int i = 0; i < 256; i++)
        {
            int s = i / 32;
            Assert.Equal((AsHalf(d) * scales[s] * q[i]) - (AsHalf(dmin) * mins[s]), y[i]);
        }
    }

    [Fact]
    public void Q6_KUsesSignedScalesPerSubBlockOf16()
    {
        var block = new byte[210];
        float d = 0.0042f;
        WriteHalf(block, 208, d);
        sbyte[] scales = [127, -128, 1, -1, 64, -64, 33, -7, 100, 0, 5, -90, 12, 77, -33, 8];
        for (int j = 0; j < 16; j++)
        {
            block[192 + j] = (byte)scales[j];
        }

        int[] q = RandomQuants(256, 63, 6);
        for (int i = 0; i < 256; i++)
        {
            // Each 128 values: 64 bytes of low nibbles (values l and l + 64 share ql[l], l + 32 and l + 96 share
            // ql[l + 32]) and 32 bytes of top bits (qh[l] holds those of l, l + 32, l + 64, l + 96).
            int half = i / 128, v = i % 128, l = v % 32, which = v / 32;
            int qlIndex = (64 * half) + l + (which is 1 or 3 ? 32 : 0);
            block[qlIndex] |= (byte)((q[i] & 0xF) << (which >= 2 ? 4 : 0));
            block[128 + (32 * half) + l] |= (byte)((q[i] >> 4) << (2 * which));
        }

        float[] y = Convert(DType.Q6_K, block);
        for (int i = 0; i < 256; i++)
        {
            Assert.Equal(AsHalf(d) * scales[i / 16] * (q[i] - 32), y[i]);
        }
    }

    [Fact]
    public void Q3_KUsesSignedSixBitScalesAndAHighBitMask()
    {
        var block = new byte[110];
        float d = 0.031f;
        WriteHalf(block, 108, d);
        int[] scales = [0, 63, 32, 31, 1, 62, 17, 45, 8, 50, 33, 30, 2, 61, 16, 47]; // stored; the scale is this - 32
        for (int j = 0; j < 16; j++)
        {
            // As quantize_row_q3_K packs them: low nibbles in bytes 0..7, top 2 bits in bytes 8..11.
            if (j < 8)
            {
                block[96 + j] = (byte)(scales[j] & 0xF);
            }
            else
            {
                block[96 + j - 8] |= (byte)((scales[j] & 0xF) << 4);
            }

            block[96 + 8 + (j % 4)] |= (byte)((scales[j] >> 4) << (2 * (j / 4)));
        }

        int[] q = RandomQuants(256, 7, 7); // stored 0..7; the value is q - 4
        for (int i = 0; i < 256; i++)
        {
            if (q[i] > 3)
            {
                block[i % 32] |= (byte)(1 << (i / 32));
            }

            block[32 + (32 * (i / 128)) + (i % 32)] |= (byte)((q[i] & 3) << (2 * ((i % 128) / 32)));
        }

        float[] y = Convert(DType.Q3_K, block);
        for (int i = 0; i < 256; i++)
        {
            Assert.Equal(AsHalf(d) * (scales[i / 16] - 32) * (q[i] - 4), y[i]);
        }
    }

    [Fact]
    public void Q2_KUsesFourBitScalesAndMinimumsPerSubBlockOf16()
    {
        var block = new byte[84];
        float d = 0.05f, dmin = 0.012f;
        WriteHalf(block, 80, d);
        WriteHalf(block, 82, dmin);
        int[] scales = [15, 0, 1, 7, 8, 14, 3, 12, 5, 9, 10, 2, 11, 4, 13, 6];
        int[] mins = [0, 15, 14, 1, 2, 3, 13, 12, 4, 5, 11, 10, 6, 7, 9, 8];
        for (int j = 0; j < 16; j++)
        {
            block[j] = (byte)(scales[j] | (mins[j] << 4));
        }

        int[] q = RandomQuants(256, 3, 8);
        for (int i = 0; i < 256; i++)
        {
            block[16 + (32 * (i / 128)) + (i % 32)] |= (byte)(q[i] << (2 * ((i % 128) / 32)));
        }

        float[] y = Convert(DType.Q2_K, block);
        for (int i = 0; i < 256; i++)
        {
            int s = i / 16;
            Assert.Equal((AsHalf(d) * scales[s] * q[i]) - (AsHalf(dmin) * mins[s]), y[i]);
        }
    }

    [Fact]
    public void KQuantTensorsLoadFromGgufInTheirStoredType()
    {
        // Two rows of two Q6_K blocks each, every block different.
        var data = new byte[4 * 210];
        var random = new Random(9);
        random.NextBytes(data);
        for (int b = 0; b < 4; b++)
        {
            WriteHalf(data, (b * 210) + 208, 0.001f * (b + 1));
        }

        string path = Path.Combine(_dir, "q6k.gguf");
        new GgufWriter().Set("general.architecture", "llama").AddTensor("w", DType.Q6_K, [2, 512], data).Write(path);
        using var file = GgufFile.Open(path);
        var t = file.GetTensor("w");
        Assert.Equal(DType.Q6_K, t.Type);
        Assert.Equal(data.Length, t.ByteSize);
        float[] all = DequantizeKQuants.ToFloats(t);
        for (int b = 0; b < 4; b++)
        {
            var expected = new float[256];
            DequantizeKQuants.Q6_K(data.AsSpan(b * 210, 210), expected);
            Assert.Equal(expected, all.AsSpan(b * 256, 256).ToArray());
        }
    }

    // ---- what cannot be loaded -------------------------------------------------------------------------------

    /// <summary>A GGUF file with one 2-D tensor of the given ggml type and <paramref name="dataBytes"/> bytes of data.</summary>
    private string RawFile(string name, uint type, ulong cols, ulong rows, int dataBytes)
    {
        using var stream = new MemoryStream();
        var w = new BinaryWriter(stream);
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write(1UL);
        w.Write(0UL);
        byte[] tensorName = Encoding.UTF8.GetBytes("blk.0.ffn_up.weight");
        w.Write((ulong)tensorName.Length);
        w.Write(tensorName);
        w.Write(2u);
        w.Write(cols);
        w.Write(rows);
        w.Write(type);
        w.Write(0UL);
        while (stream.Length % 32 != 0)
        {
            w.Write((byte)0);
        }

        w.Write(new byte[dataBytes]);
        w.Flush();
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, stream.ToArray());
        return path;
    }

    [Fact]
    public void UnsupportedTypesNameTheTensorAndTypeAndSuggestRequantizing()
    {
        string path = RawFile("iq2.gguf", GgmlType.IQ2_XXS, 256, 2, 4096);
        var e = Assert.Throws<MinnowException>(() => GgufFile.Open(path).Dispose());
        Assert.StartsWith("iq2.gguf: tensor 'blk.0.ffn_up.weight' has type IQ2_XXS, which Minnow does not support", e.Message);
        Assert.Contains("Q4_K", e.Message);
        Assert.Contains("re-quantize", e.Message);
        Assert.DoesNotContain('\n', e.Message);

        // The model loader reports the same.
        e = Assert.Throws<MinnowException>(() => Minnow.Loading.ModelLoader.LoadModel(path).Dispose());
        Assert.Contains("has type IQ2_XXS, which Minnow does not support", e.Message);
    }

    [Fact]
    public void TruncatedKQuantDataIsReported()
    {
        // Two rows of 256 Q4_K values need 2 * 144 bytes.
        string path = RawFile("cut.gguf", GgmlType.Q4_K, 256, 2, 200);
        var e = Assert.Throws<MinnowException>(() => GgufFile.Open(path).Dispose());
        Assert.Contains("truncated tensor data (tensor 'blk.0.ffn_up.weight' ends at byte", e.Message);

        path = RawFile("partial.gguf", GgmlType.Q6_K, 384, 1, 1024);
        e = Assert.Throws<MinnowException>(() => GgufFile.Open(path).Dispose());
        Assert.Contains("rows of 384 values, not a multiple of the Q6_K block size 256", e.Message);
    }
}
