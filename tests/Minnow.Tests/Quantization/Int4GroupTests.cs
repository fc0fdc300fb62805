using Minnow.Export;
using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tokenizers;
using Xunit.Abstractions;
using static Minnow.Tests.Quantization.QuantizationTestSupport;

namespace Minnow.Tests.Quantization;

/// <summary>INT4 with a scale and zero point per group of 32 (llama.cpp's Q4_1), 64 and 128 (round to nearest: INT3 groups too).</summary>
public class Int4GroupTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(DType.Q4_1)]
    [InlineData(DType.Q4_1_G64)]
    [InlineData(DType.Q4_1_G128)]
    [InlineData(DType.Q3_1_G32)]
    [InlineData(DType.Q3_1_G64)]
    [InlineData(DType.Q3_1_G128)]
    public unsafe void RoundToNearestStaysWithinHalfAStepOfEveryValue(DType type)
    {
        var random = new Random(5);
        int group = type.BlockSize();
        var values = new float[group * 12];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)(random.NextDouble() * 3 - 1) * (i / group % 3 == 0 ? 0.01f : 1f);
        }

        values.AsSpan(0, group).Fill(0.25f); // a constant group: d = 0, every value is m
        byte[] bytes = Dequantize.FromFloats(type, values);
        Assert.Equal(type.ByteCount(values.Length), bytes.Length);
        var back = new float[values.Length];
        fixed (byte* p = bytes)
        {
            Dequantize.Row(type, p, back);
        }

        int top = type.MaxGroupCode();
        double worst = 0;
        for (int g = 0; g < values.Length / group; g++)
        {
            var slice = values.AsSpan(g * group, group);
            float min = slice.ToArray().Min(), max = slice.ToArray().Max();
            double step = (max - min) / top;
            for (int j = 0; j < group; j++)
            {
                int i = (g * group) + j;

                // Half a step, plus the fp16 rounding of d (top steps of it) and of m.
                double bound = (step / 2) + (top * step * 1e-3) + (Math.Abs(min) * 1e-3) + 1e-7;
                Assert.True(Math.Abs(back[i] - values[i]) <= bound, $"{type} value {i}: {back[i]} vs {values[i]} (bound {bound})");
                worst = Math.Max(worst, Math.Abs(back[i] - values[i]) / (step > 0 ? step : 1));
            }
        }

        // Not vacuous: some value is close to half a step away (uniform values fill the steps).
        Assert.True(worst > 0.4, $"{type}: worst error {worst} steps");

        if (type == DType.Q4_1)
        {
            // Q4_1 is llama.cpp's block: its own dequantizer reads the same values.
            var ggml = new float[values.Length];
            DequantizeKQuants.Row(DType.Q4_1, bytes, ggml);
            Assert.Equal(back, ggml);
        }
    }

    [Fact]
    public void DefaultModelGroupsSaveReloadBitIdenticallyAndFinerGroupsLoseLess()
    {
        string folder = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        using var pool = new WorkerPool(2);
        using var original = ModelLoader.LoadModel(folder, pool);
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"));
        int[] ids = tokenizer.Encode(File.ReadAllText(Path.Combine(folder, "held-out.txt")), addSpecial: false).Take(2048).ToArray();
        var kl = new Dictionary<DType, double>();
        foreach (var type in new[] { DType.Q4_1, DType.Q4_1_G64, DType.Q4_1_G128 })
        {
            using var quantized = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = type, Method = QuantizationMethod.Rtn }, pool: pool);
            Assert.Equal(type, quantized.Model.Weights.Get("model.layers.0.mlp.up_proj.weight").Type);
            var result = ModelComparison.Compare(original, quantized.Model, ids, ctx: 128, bosToken: null);
            output.WriteLine($"{type.Name()}: ppl {result.Perplexity:0.000} (F32 {result.ReferencePerplexity:0.000}), KL {result.MeanKl:0.00000}, top-1 {result.Top1Agreement:P2}, {quantized.BitsPerWeight:0.00} bpw");
            Assert.True(result.Perplexity < result.ReferencePerplexity * 1.02, $"{type}: perplexity {result.Perplexity} vs {result.ReferencePerplexity}");
            kl[type] = result.MeanKl;

            string path = Path.Combine(Path.GetTempPath(), $"minnow-int4-{Guid.NewGuid():N}.gguf");
            try
            {
                GgufExporter.Export(quantized.Model, path, type);
                using var reloaded = ModelLoader.LoadModel(path, pool);
                Assert.Equal(type, reloaded.Weights.Get("model.layers.0.mlp.up_proj.weight").Type);
                var sample = ids.Take(64).ToArray();
                Assert.Equal(Logits(quantized.Model, sample), Logits(reloaded, sample));
            }
            finally
            {
                File.Delete(path);
            }
        }

        Assert.True(kl[DType.Q4_1] < kl[DType.Q4_1_G128], $"KL: groups of 32 {kl[DType.Q4_1]} vs 128 {kl[DType.Q4_1_G128]}");
    }
}
