using Minnow.Export;
using Minnow.Formats.Gguf;
using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tokenizers;
using Xunit.Abstractions;
using static Minnow.Tests.Quantization.QuantizationTestSupport;

namespace Minnow.Tests.Quantization;

/// <summary>INT3 with a scale and zero point per group of 32, 64 and 128 (Minnow's Q3_1_G32, Q3_1_G64, Q3_1_G128).</summary>
public class Int3GroupTests(ITestOutputHelper output)
{
    private static readonly DType[] Types = [DType.Q3_1_G32, DType.Q3_1_G64, DType.Q3_1_G128];

    [Fact]
    public void CodesPackAndUnpackExactlyAndBecomeTheSameInt4Nibbles()
    {
        var random = new Random(11);
        var codes = new byte[32];
        var packed = new byte[12];
        var back = new byte[32];
        var nibbles = new byte[16];
        var int4 = new byte[16];
        for (int trial = 0; trial < 500; trial++)
        {
            for (int j = 0; j < 32; j++)
            {
                codes[j] = trial switch
                {
                    0 => 0,
                    1 => 7,
                    2 => (byte)(j % 8),
                    _ => (byte)random.Next(8),
                };
            }

            GroupCodes.Pack(DType.Q3_1_G32, codes, packed);
            GroupCodes.Unpack(DType.Q3_1_G32, packed, back);
            Assert.Equal(codes, back);

            // The documented layout: bits 0-1 of value j in byte j % 8 at 2·(j / 8); bit 2 in bit j of bytes 8..11.
            uint high = BitConverter.ToUInt32(packed, 8);
            for (int j = 0; j < 32; j++)
            {
                Assert.Equal(codes[j] & 3, (packed[j % 8] >> (2 * (j / 8))) & 3);
                Assert.Equal((codes[j] >> 2) & 1, (int)((high >> j) & 1));
            }

            GroupCodes.Int3ToNibbles(packed, nibbles);
            GroupCodes.Pack(DType.Q4_1, codes, int4);
            Assert.Equal(int4, nibbles);
        }
    }

    [Theory]
    [InlineData(DType.Q3_1_G32, 16)]
    [InlineData(DType.Q3_1_G64, 28)]
    [InlineData(DType.Q3_1_G128, 52)]
    public void SizesAndGgufIdsAreMinnowsOwn(DType type, int bytes)
    {
        Assert.Equal(bytes, type.BlockBytes());
        Assert.Equal(type.BlockSize() * 3 / 8 + 4, type.BlockBytes());
        Assert.Equal(7, type.MaxGroupCode());
        uint id = GgmlType.FromDType(type);
        Assert.True(id >= 1000, $"{type}: {id}");
        Assert.Equal(type, GgmlType.ToDType(id));
        Assert.Equal($"{type.Name()} (Minnow)", GgmlType.Name(id));
        Assert.Equal(type, QuantizationOptions.ParseScheme("int3", type.BlockSize()));
    }

    [Fact]
    public void DefaultModelGroupsSaveReloadBitIdenticallyAndFinerGroupsLoseLess()
    {
        string folder = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        using var pool = new WorkerPool(2);
        using var original = ModelLoader.LoadModel(folder, pool);
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"));
        int[] ids = tokenizer.Encode(File.ReadAllText(Path.Combine(folder, "held-out.txt")), addSpecial: false).Take(2048).ToArray();
        using var int4 = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = DType.Q4_1_G128, Method = QuantizationMethod.Rtn }, pool: pool);
        double int4Kl = ModelComparison.Compare(original, int4.Model, ids, ctx: 128, bosToken: null).MeanKl;
        var kl = new Dictionary<DType, double>();
        foreach (var type in Types)
        {
            using var quantized = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = type, Method = QuantizationMethod.Rtn }, pool: pool);
            Assert.Equal(type, quantized.Model.Weights.Get("model.layers.0.mlp.up_proj.weight").Type);
            Assert.Equal(DType.Q8_0, quantized.Tensors.Single(t => t.Name == "model.embed_tokens.weight").Type);
            var result = ModelComparison.Compare(original, quantized.Model, ids, ctx: 128, bosToken: null);
            output.WriteLine($"{type.Name()}: ppl {result.Perplexity:0.000} (F32 {result.ReferencePerplexity:0.000}), KL {result.MeanKl:0.00000}, top-1 {result.Top1Agreement:P2}, {quantized.BitsPerWeight:0.00} bpw");
            Assert.True(result.Perplexity < result.ReferencePerplexity * 1.15, $"{type}: perplexity {result.Perplexity} vs {result.ReferencePerplexity}");
            kl[type] = result.MeanKl;

            SavesAndReloadsExactly(quantized.Model, type, ids.Take(64).ToArray(), pool);
        }

        Assert.True(kl[DType.Q3_1_G32] < kl[DType.Q3_1_G128], $"KL: groups of 32 {kl[DType.Q3_1_G32]} vs 128 {kl[DType.Q3_1_G128]}");

        // Three bits lose more than four at the same group size.
        Assert.True(int4Kl < kl[DType.Q3_1_G128], $"KL: INT4 groups of 128 {int4Kl} vs INT3 {kl[DType.Q3_1_G128]}");
    }

    /// <summary>
    /// Export → reload holds the same blocks (Q and K rows reordered for llama.cpp's RoPE) in the INT3 type and gives
    /// bit-identical logits, and so does a reloaded file saved and reloaded again.
    /// </summary>
    private static void SavesAndReloadsExactly(Minnow.Models.TransformerModel quantized, DType type, int[] sample, WorkerPool pool)
    {
        string path = Path.Combine(Path.GetTempPath(), $"minnow-int3-{Guid.NewGuid():N}.gguf");
        string again = Path.Combine(Path.GetTempPath(), $"minnow-int3-{Guid.NewGuid():N}.gguf");
        try
        {
            GgufExporter.Export(quantized, path, type);
            using (var file = GgufFile.Open(path))
            {
                Assert.Contains(file.Tensors, t => t.Type == type);
            }

            using var reloaded = ModelLoader.LoadModel(path, pool);
            Assert.Equal(type, reloaded.Weights.Get("model.layers.0.mlp.up_proj.weight").Type);
            AssertSameBlocks(quantized, reloaded);
            var logits = Logits(reloaded, sample);
            Assert.Equal(Logits(quantized, sample), logits);

            GgufExporter.Export(reloaded, again, type);
            using var twice = ModelLoader.LoadModel(again, pool);
            AssertSameBlocks(reloaded, twice);
            Assert.Equal(logits, Logits(twice, sample));
        }
        finally
        {
            File.Delete(path);
            File.Delete(again);
        }
    }
}
