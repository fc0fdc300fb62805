using Minnow.Export;
using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tests.Cli;
using Minnow.Tokenizers;
using Xunit.Abstractions;
using static Minnow.Tests.Quantization.QuantizationTestSupport;

namespace Minnow.Tests.Quantization;

/// <summary>
/// Mixed precision on the project's default model: the sensitivity scan, the size budget, and a model closer to
/// F32 than all-Q4_0 at a size within the budget; quantized files that round-trip bit for bit; and quantization
/// of a structurally pruned model (layers of different widths).
/// </summary>
public class MixedPrecisionTests(ITestOutputHelper output)
{
    private static string DefaultModel => Path.Combine(SharedData.RepositoryRoot, "models", "default");

    private static int[] HeldOutTokens(int count)
    {
        var tokenizer = TokenizerLoader.Load(DefaultModel);
        var tokens = tokenizer.Encode(File.ReadAllText(Path.Combine(DefaultModel, "held-out.txt")), addSpecial: false);
        return tokens.Take(count).ToArray();
    }

    [Theory]
    [InlineData("90MB", 90_000_000L)]
    [InlineData("1.5GiB", 1_610_612_736L)]
    [InlineData("2500000", 2_500_000L)]
    [InlineData(" 512 KiB", 524_288L)]
    public void SizesParse(string text, long bytes) => Assert.Equal(bytes, MixedPrecision.ParseSize(text));

    [Theory]
    [InlineData("")]
    [InlineData("MB")]
    [InlineData("12 parsecs")]
    [InlineData("-5MB")]
    public void BadSizesAreRefused(string text) => Assert.Throws<MinnowException>(() => MixedPrecision.ParseSize(text));

    [Fact]
    public void WithinTheBudgetMixedIsCloserToF32ThanAllQ4()
    {
        using var pool = new WorkerPool(2);
        using var original = ModelLoader.LoadModel(DefaultModel, pool);
        var tokens = HeldOutTokens(12_288);
        var scan = tokens[..4096];
        var heldOut = tokens[4096..];
        const int Ctx = 128;

        var sensitivities = MixedPrecision.Scan(original, scan, Ctx, 8, null);
        // 4 blocks × q, k, v, o, gate, up, down, and the token embedding (tied to the output head in this model).
        Assert.Equal(29, sensitivities.Count);
        Assert.Contains(sensitivities, s => s.Name == "model.embed_tokens.weight");
        Assert.All(sensitivities, s => Assert.True(s.KlDivergence > 0, s.Name));
        Assert.All(sensitivities, s => Assert.True(s.HighBytes > s.LowBytes, s.Name));

        var q4Options = new QuantizationOptions { Scheme = DType.Q4_0 };
        long q4Bytes = MixedPrecision.EstimateBytes(original, q4Options);
        long budget = q4Bytes + 200_000;
        var plan = MixedPrecision.Choose(original, sensitivities, budget);
        Assert.NotEmpty(plan.Promoted);
        Assert.Contains(plan.Overrides.Values, t => t == DType.Q4_0);
        Assert.True(plan.Bytes <= budget);

        // The most sensitive layer per extra byte is among those kept at 8 bits.
        var top = sensitivities.MaxBy(s => s.KlDivergence / (s.HighBytes - s.LowBytes))!;
        Assert.Equal(DType.Q8_0, plan.Overrides[top.Name]);

        using var all4 = ModelQuantizer.Quantize(original, q4Options, pool: pool);
        using var mixed = ModelQuantizer.Quantize(original, q4Options with { TypeOverrides = plan.Overrides }, pool: pool);
        Assert.Equal(q4Bytes, all4.Bytes);
        Assert.Equal(plan.Bytes, mixed.Bytes);
        foreach (var (name, type) in plan.Overrides)
        {
            Assert.Equal(type, mixed.Model.Weights.Get(name).Type);
        }

        var a = ModelComparison.Compare(original, all4.Model, heldOut, Ctx);
        var m = ModelComparison.Compare(original, mixed.Model, heldOut, Ctx);
        output.WriteLine($"all q4_0 {all4.Bytes} B: KL {a.MeanKl:0.000000}, ppl {a.Perplexity:0.000}; mixed {mixed.Bytes} B ({plan.Promoted.Count()} tensors q8_0): " +
            $"KL {m.MeanKl:0.000000}, ppl {m.Perplexity:0.000} (F32 {a.ReferencePerplexity:0.000})");
        Assert.True(m.MeanKl < a.MeanKl, $"mixed KL {m.MeanKl} vs all-q4_0 {a.MeanKl}");

        // The smallest the plan can make: everything scanned at Q4_0, the embedding included.
        var allFour = sensitivities.ToDictionary(x => x.Name, _ => DType.Q4_0);
        long smallest = MixedPrecision.EstimateBytes(original, q4Options with { TypeOverrides = allFour });
        Assert.True(smallest < q4Bytes);
        Assert.Equal(smallest, MixedPrecision.Choose(original, sensitivities, smallest).Bytes);
        Assert.Throws<MinnowException>(() => MixedPrecision.Choose(original, sensitivities, smallest - 1));
    }

    [Fact]
    public void QuantizedFilesRoundTripBitForBit()
    {
        using var pool = new WorkerPool(2);
        using var original = ModelLoader.LoadModel(DefaultModel, pool);
        var tokens = HeldOutTokens(2048);
        using var statistics = Calibration.Collect(original, Calibration.FromTokens(tokens, 128, 2048, null));
        using var quantized = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = DType.Q4_0, Method = QuantizationMethod.Gptq }, statistics, pool: pool);
        using var folder = new TempFolder();
        string first = folder.File("first.gguf"), second = folder.File("second.gguf");
        GgufExporter.Export(quantized.Model, first, DType.Q4_0);
        using var reloaded = ModelLoader.LoadModel(first, pool);
        GgufExporter.Export(reloaded, second, DType.Q4_0);
        using var again = ModelLoader.LoadModel(second, pool);

        var ids = tokens[..96];
        var expected = Logits(reloaded, ids);
        var actual = Logits(again, ids);
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]), $"logit {i}: {actual[i]} vs {expected[i]}");
        }

        // And the file holds exactly the quantized blocks made in memory (Q and K rows reordered for llama.cpp's RoPE).
        AssertSameBlocks(quantized.Model, reloaded);
    }

    [Fact]
    public void StructurallyPrunedModelsQuantizeAndMixedStaysWithinItsBudget()
    {
        using var folder = new TempFolder();
        string pruned = folder.File("pruned");
        var prune = Cli.Cli.Run("prune", DefaultModel, "--out", pruned, "--method", "heads", "--keep-heads", "0.75", "--keep-ffn", "0.6",
            "--allocation", "global", "--calib", Path.Combine(DefaultModel, "held-out.txt"), "--calib-samples", "16", "--chunks", "4", "--no-speed", "--json");
        Assert.True(prune.ExitCode == 0, prune.ToString());

        string output = folder.File("pruned-mixed.gguf");
        var result = Cli.Cli.Run("quantize", pruned, "--out", output, "--scheme", "mixed", "--max-size", "1.8MB", "--method", "gptq",
            "--eval", Path.Combine(DefaultModel, "held-out.txt"), "--calib-tokens", "4096", "--chunks", "8", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal("mixed", json.GetProperty("scheme").GetString());
        Assert.True(json.GetProperty("tensor_bytes").GetInt64() <= 1_800_000, result.Stdout);
        Assert.True(json.GetProperty("mixed").GetProperty("weight_bytes").GetInt64() == json.GetProperty("tensor_bytes").GetInt64(), result.Stdout);
        Assert.InRange(json.GetProperty("kl_divergence").GetDouble(), 1e-7, 0.05);

        var perplexity = Cli.Cli.Run("perplexity", output, "--text", Path.Combine(DefaultModel, "held-out.txt"), "--chunks", "4", "--json");
        Assert.True(perplexity.ExitCode == 0, perplexity.ToString());
    }
}
