using Minnow.Export;
using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tokenizers;
using Xunit.Abstractions;
using static Minnow.Tests.Quantization.QuantizationTestSupport;

namespace Minnow.Tests.Quantization;

/// <summary>GPTQ and AWQ writing INT4 with a scale and zero point per group (Q4_1, Q4_1_G64, Q4_1_G128), and INT3 groups the same way.</summary>
public class Int4GptqTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(DType.Q4_1)]
    [InlineData(DType.Q4_1_G64)]
    [InlineData(DType.Q4_1_G128)]
    [InlineData(DType.Q3_1_G32)]
    [InlineData(DType.Q3_1_G64)]
    [InlineData(DType.Q3_1_G128)]
    public void CodecRoundToNearestWritesTheSameBytesAsTheReferenceQuantizer(DType type)
    {
        var random = new Random(7);
        int rows = 6, columns = 256;
        var w = Gaussian(random, rows * columns, 0.05f);
        w.AsSpan(0, type.BlockSize()).Fill(-0.125f); // a constant group: d = 0
        var codec = BlockCodec.RoundToNearest(type, w, rows, columns);
        Assert.Equal(type.MaxGroupCode(), codec.MaxCode);
        Assert.Equal(Dequantize.FromFloats(type, w), codec.ToBytes());
        Assert.Equal(Dequantized(type, codec.ToBytes(), w.Length), codec.ToFloats());
    }

    [Theory]
    [InlineData(DType.Q4_1, true)]
    [InlineData(DType.Q4_1_G64, false)]
    [InlineData(DType.Q4_1_G128, true)]
    [InlineData(DType.Q3_1_G32, true)]
    [InlineData(DType.Q3_1_G64, false)]
    [InlineData(DType.Q3_1_G128, true)]
    public void CorrelatedInputsGptqBeatsRoundToNearest(DType type, bool scaleSearch)
    {
        var random = new Random(3);
        int rows = 24, n = 256, tokens = 512;
        var w = Gaussian(random, rows * n, 0.02f);
        for (int i = 0; i < w.Length; i++)
        {
            w[i] += 0.01f; // not centred: the zero point matters
        }

        // Correlated channels (AR(1), ρ = 0.85) of uneven magnitude.
        var z = Gaussian(random, tokens * n);
        var channel = Enumerable.Range(0, n).Select(_ => random.NextDouble() < 0.05 ? 8f : (float)(0.5 + random.NextDouble())).ToArray();
        var x = new float[tokens * n];
        for (int t = 0; t < tokens; t++)
        {
            double previous = z[t * n];
            for (int i = 0; i < n; i++)
            {
                previous = i == 0 ? previous : (0.85 * previous) + (Math.Sqrt(1 - (0.85 * 0.85)) * z[(t * n) + i]);
                x[(t * n) + i] = (float)previous * channel[i];
            }
        }

        var h = new double[n * n];
        for (int t = 0; t < tokens; t++)
        {
            for (int i = 0; i < n; i++)
            {
                double xi = 2.0 * x[(t * n) + i] / tokens;
                for (int j = 0; j < n; j++)
                {
                    h[(i * n) + j] += xi * x[(t * n) + j];
                }
            }
        }

        var codec = Gptq.Quantize(w, rows, Gptq.Prepare(h, n, 0.01, actOrder: true), type, lazyBatch: 64, scaleSearch: scaleSearch);
        Assert.Equal(type, codec.Type);
        for (int r = 0; r < rows; r++)
        {
            Assert.All(codec.CodeRow(r).ToArray(), q => Assert.InRange(q, 0, type.MaxGroupCode()));
        }

        Assert.Equal(codec.ToFloats(), Dequantized(type, codec.ToBytes(), w.Length));
        var gptq = codec.ToFloats();
        var rtn = Dequantized(type, Dequantize.FromFloats(type, w), w.Length);
        double Relative(float[] q) => Math.Sqrt(OutputNorm(w.Zip(q, (a, b) => a - b).ToArray(), rows, x, tokens, n) / OutputNorm(w, rows, x, tokens, n));
        double ofGptq = Relative(gptq), ofRtn = Relative(rtn);
        output.WriteLine($"{type.Name()} search {scaleSearch}: GPTQ {ofGptq:0.00000} RTN {ofRtn:0.00000}");
        Assert.True(ofGptq < 0.8 * ofRtn, $"GPTQ {ofGptq} vs RTN {ofRtn}");
    }

    [Fact]
    public void DefaultModelGptqBeatsRoundToNearestAtEveryGroupSizeAndReloadsBitIdentically()
    {
        string folder = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        using var pool = new WorkerPool(2);
        using var original = ModelLoader.LoadModel(folder, pool);
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"));
        int[] tokens = tokenizer.Encode(File.ReadAllText(Path.Combine(folder, "held-out.txt")), addSpecial: false).ToArray();

        // Fixed calibration: the first 16 windows of 128 of the held-out text; evaluation on a later, disjoint part.
        var calibration = Calibration.FromTokens(tokens, 128, 16 * 128, bos: null);
        int[] evaluation = tokens[(tokens.Length / 2)..];
        using var statistics = Calibration.Collect(original, calibration);
        foreach (var type in new[] { DType.Q4_1, DType.Q4_1_G128, DType.Q3_1_G32, DType.Q3_1_G128 })
        {
            using var rtn = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = type, Method = QuantizationMethod.Rtn }, pool: pool);
            using var gptq = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = type, Method = QuantizationMethod.Gptq }, statistics, pool: pool);
            var up = gptq.Tensors.Single(t => t.Name == "model.layers.0.mlp.up_proj.weight");
            Assert.Equal(type, up.Type);
            Assert.Equal("gptq", up.Method);
            Assert.True(up.RelativeOutputError < up.RoundToNearestError, $"{type} up_proj: GPTQ {up.RelativeOutputError} vs RTN {up.RoundToNearestError}");
            Assert.Equal(rtn.Bytes, gptq.Bytes);

            var ofRtn = ModelComparison.Compare(original, rtn.Model, evaluation, ctx: 128, maxChunks: 12);
            var ofGptq = ModelComparison.Compare(original, gptq.Model, evaluation, ctx: 128, maxChunks: 12);
            output.WriteLine($"{type.Name()}: F32 ppl {ofRtn.ReferencePerplexity:0.000}; RTN ppl {ofRtn.Perplexity:0.000} KL {ofRtn.MeanKl:0.000000}; " +
                $"GPTQ ppl {ofGptq.Perplexity:0.000} KL {ofGptq.MeanKl:0.000000}; {gptq.BitsPerWeight:0.00} bpw");
            Assert.True(ofGptq.Perplexity < ofRtn.Perplexity, $"{type}: perplexity GPTQ {ofGptq.Perplexity} vs RTN {ofRtn.Perplexity}");
            Assert.True(ofGptq.MeanKl < ofRtn.MeanKl, $"{type}: KL GPTQ {ofGptq.MeanKl} vs RTN {ofRtn.MeanKl}");

            string path = Path.Combine(Path.GetTempPath(), $"minnow-int4-gptq-{Guid.NewGuid():N}.gguf");
            try
            {
                GgufExporter.Export(gptq.Model, path, type);
                using var reloaded = ModelLoader.LoadModel(path, pool);
                Assert.Equal(type, reloaded.Weights.Get("model.layers.0.mlp.up_proj.weight").Type);
                var sample = evaluation.Take(64).ToArray();
                Assert.Equal(Logits(gptq.Model, sample), Logits(reloaded, sample));
            }
            finally
            {
                File.Delete(path);
            }
        }
    }

    /// <summary>AWQ writes ordinary groups of the scheme; INT3 loses more, hence its wider perplexity bound.</summary>
    [Theory]
    [InlineData(DType.Q4_1_G64, 1.02)]
    [InlineData(DType.Q3_1_G64, 1.15)]
    public void DefaultModelAwqWritesIntGroups(DType type, double perplexityBound)
    {
        string folder = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        using var pool = new WorkerPool(2);
        using var original = ModelLoader.LoadModel(folder, pool);
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"));
        int[] tokens = tokenizer.Encode(File.ReadAllText(Path.Combine(folder, "held-out.txt")), addSpecial: false).ToArray();
        using var statistics = Calibration.Collect(original, Calibration.FromTokens(tokens, 128, 8 * 128, bos: null));
        using var awq = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = type, Method = QuantizationMethod.Awq, AwqGridSteps = 5 },
            statistics, pool: pool);
        var awqLayers = awq.Tensors.Where(t => t.Method == "awq" && t.RelativeOutputError is not null).ToList();
        Assert.NotEmpty(awqLayers);
        Assert.All(awqLayers, t => Assert.Equal(type, t.Type));

        // The α search includes α = 0 (plain round to nearest): on calibration data AWQ never does worse in total.
        Assert.All(awq.AwqScales, s => Assert.True(s.Error <= s.RoundToNearestError, $"{s.Group}: {s.Error} vs {s.RoundToNearestError}"));
        var result = ModelComparison.Compare(original, awq.Model, tokens[(tokens.Length / 2)..], ctx: 128, maxChunks: 4);
        output.WriteLine($"AWQ {type.Name()}: ppl {result.Perplexity:0.000} (F32 {result.ReferencePerplexity:0.000}), KL {result.MeanKl:0.000000}");
        Assert.True(result.Perplexity < result.ReferencePerplexity * perplexityBound, $"perplexity {result.Perplexity} vs {result.ReferencePerplexity}");
    }

    private static unsafe float[] Dequantized(DType type, byte[] bytes, int count)
    {
        var values = new float[count];
        fixed (byte* p = bytes)
        {
            Dequantize.Row(type, p, values);
        }

        return values;
    }
}
