using System.Text.Json;
using Minnow.Benchmarking;
using Minnow.Loading;
using Minnow.Tests.Cli;
using CliRunner = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Benchmarking;

/// <summary>
/// <c>minnow bench</c> end to end (each engine runs in a child process of the CLI) and the pieces it is made of.
/// Kept tiny: golden checkpoints, a few tokens, one run.
/// </summary>
public sealed class BenchCommandTests
{
    private static void AssertSpeed(JsonElement e)
    {
        foreach (string key in new[] { "prefill_tok_s", "decode_tok_s", "ttft_ms", "peak_rss_mb", "decode_weight_gb_s" })
        {
            Assert.True(e.GetProperty(key).GetDouble() > 0, $"{key} = {e.GetProperty(key)}");
        }
    }

    [Fact]
    public void BenchVsLlamaCppOnTheSameExportedGguf()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("stories260k-hf");
        var result = CliRunner.Run("bench", model, "--vs", "llama.cpp", "--runs", "1", "--prompt", "16", "--gen", "8", "--agreement-tokens", "64",
            "--threads", "1", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        AssertSpeed(json);
        AssertSpeed(json.GetProperty("llama_cpp"));
        Assert.Equal(1, json.GetProperty("minnow_runs").GetArrayLength());
        Assert.Equal("F32", json.GetProperty("dtype").GetString());
        Assert.EndsWith(".gguf", json.GetProperty("file").GetString());
        Assert.False(File.Exists(json.GetProperty("file").GetString()), "the temporary GGUF is deleted");
        Assert.True(json.GetProperty("ratio_decode").GetDouble() > 0);
        Assert.True(json.GetProperty("ratio_prefill").GetDouble() > 0);
        Assert.InRange(json.GetProperty("argmax_agreement").GetDouble(), 0.95, 1.0);
        double pplMinnow = json.GetProperty("ppl_minnow").GetDouble(), pplLlama = json.GetProperty("ppl_llama_cpp").GetDouble();
        Assert.True(Math.Abs(pplMinnow - pplLlama) <= 0.01 * pplLlama, $"perplexity {pplMinnow} vs {pplLlama}");
        Assert.Equal(64, json.GetProperty("agreement_tokens").GetInt32());
        Assert.True(json.GetProperty("agreement_ok").ValueKind is JsonValueKind.True or JsonValueKind.False);
        Assert.InRange(json.GetProperty("argmax_agreement_clear").GetDouble(), 0.95, 1.0);
        Assert.True(json.GetProperty("clear_positions").GetInt32() > 0);
    }

    /// <summary>With a tokenizer, agreement is checked on a real text (WikiText-2), tokenized with the model's tokenizer.</summary>
    [Fact]
    public void BenchChecksAgreementOnATextWithTheModelsTokenizer()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string folder = temp.File("tiny");
        var shape = ModelShapes.SmolLM2_135M with { Name = "tiny", HiddenSize = 64, IntermediateSize = 128, Layers = 1, Heads = 4, KvHeads = 2, MaxPositions = 256 };
        SyntheticCheckpoint.Write(shape, folder, seed: 4);
        File.Copy(SharedData.Path("tokenizers", "smollm2-135m", "tokenizer.json"), Path.Combine(folder, "tokenizer.json"));
        string text = SharedData.Path("corpora", "wikitext-2-raw", "wiki.test.raw");
        var result = CliRunner.Run("bench", folder, "--vs", "llama.cpp", "--type", "f16", "--runs", "1", "--prompt", "8", "--gen", "2", "--threads", "1",
            "--agreement-text", text, "--agreement-tokens", "48", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Contains("wiki.test.raw", json.GetProperty("agreement_source").GetString());
        Assert.Equal(48, json.GetProperty("agreement_tokens").GetInt32());
        Assert.Equal("mixed: F16 + F32", json.GetProperty("dtype").GetString());
        double pplMinnow = json.GetProperty("ppl_minnow").GetDouble(), pplLlama = json.GetProperty("ppl_llama_cpp").GetDouble();
        Assert.True(Math.Abs(pplMinnow - pplLlama) <= 0.01 * pplLlama, $"perplexity {pplMinnow} vs {pplLlama}");

        // Without a tokenizer, a text cannot be used.
        CliRunner.AssertFails(["bench", temp.CopyGolden("llama"), "--vs", "llama.cpp", "--runs", "1", "--prompt", "4", "--gen", "1", "--agreement-text", text],
            "no tokenizer");
    }

    [Fact]
    public void BenchMinnowAloneOnAGguf()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string gguf = temp.File("llama.gguf");
        var export = CliRunner.Run("export", temp.CopyGolden("llama"), "--out", gguf, "--type", "q8_0");
        Assert.True(export.ExitCode == 0, export.ToString());
        var result = CliRunner.Run("bench", gguf, "--runs", "2", "--prompt", "8", "--gen", "4", "--threads", "1", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        AssertSpeed(json);
        Assert.Equal(2, json.GetProperty("minnow_runs").GetArrayLength());
        Assert.False(json.TryGetProperty("llama_cpp", out _));
        Assert.Contains("Q8_0", json.GetProperty("dtype").GetString());

        var text = CliRunner.Run("bench", gguf, "--runs", "1", "--prompt", "4", "--gen", "2", "--threads", "1");
        Assert.True(text.ExitCode == 0, text.ToString());
        Assert.Contains("decode tok/s", text.Stdout);
        Assert.Contains("minnow", text.Stdout);
    }

    /// <summary><c>bench --batch 1,2 --profile</c>: a scaling figure per count and where each decode step's time went.</summary>
    [Fact]
    public void BenchBatchProfileReportsEveryPart()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        var result = CliRunner.Run("bench", model, "--batch", "1,2", "--profile", "--runs", "1", "--prompt", "8", "--gen", "6", "--threads", "1", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var batches = result.Json().GetProperty("batches").EnumerateArray().ToList();
        Assert.Equal([1, 2], batches.Select(b => b.GetProperty("sequences").GetInt32()));
        foreach (var b in batches)
        {
            Assert.True(b.GetProperty("aggregate_decode_tok_s").GetDouble() > 0);
            var parts = b.GetProperty("profile_ms_per_step").EnumerateObject().ToList();
            Assert.Equal(["linear layers", "attention", "rope", "output head", "norms, residuals, activations", "engine: batching, sampling"], parts.Select(p => p.Name));
            Assert.True(parts.Take(4).All(p => p.Value.GetDouble() > 0), b.ToString());
        }

        var text = CliRunner.Run("bench", model, "--batch", "2", "--profile", "--runs", "1", "--prompt", "8", "--gen", "4", "--threads", "1");
        Assert.True(text.ExitCode == 0, text.ToString());
        Assert.Contains("decode step profile", text.Stdout);
        Assert.Contains("attention", text.Stdout);
    }

    [Fact]
    public void BenchBadInputIsOneClearLine()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        CliRunner.AssertFails(["bench", model, "--vs", "vllm"], "--vs must be llama.cpp");
        CliRunner.AssertFails(["bench", model, "--prompt", "0"], "--prompt");
        CliRunner.AssertFails(["bench", model, "--runs", "0"], "--runs");
        CliRunner.AssertFails(["bench", model, "--type", "q5_k"], "--type must be f32, f16, q8_0, q4_0, sparse-f16, sparse-i8 or sparse-q8");
        CliRunner.AssertFails(["bench", model, "--vs", "llama.cpp", "--agreement-text", temp.File("missing.txt")], "missing.txt");
        CliRunner.AssertFails(["bench", model, "--prompt", "100000", "--gen", "1"], "context length");
        CliRunner.AssertFails(["bench", temp.File("nothing-here")], "nothing-here");
    }

    [Fact]
    public void PseudoRandomIdsAreDeterministicAndSkipSpecialTokens()
    {
        var excluded = new HashSet<int> { 0, 1, 2, 5 };
        int[] a = BenchmarkInputs.PseudoRandomIds(500, 10, excluded, seed: 42);
        Assert.Equal(a, BenchmarkInputs.PseudoRandomIds(500, 10, excluded, seed: 42));
        Assert.NotEqual(a, BenchmarkInputs.PseudoRandomIds(500, 10, excluded, seed: 43));
        Assert.DoesNotContain(a, excluded.Contains);
        Assert.Equal(new[] { 3, 4, 6, 7, 8, 9 }, a.Distinct().Order());
        Assert.Throws<MinnowException>(() => BenchmarkInputs.PseudoRandomIds(1, 3, new HashSet<int> { 0, 1, 2 }, 0));
    }

    [Fact]
    public void SpecialIdsComeFromTheConfigAndTheTokenizer()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var loaded = LoadedModel.Open(SharedData.Path("reference", "golden", "stories260k-hf", "model.safetensors"));
        var ids = BenchmarkInputs.SpecialIds(loaded.Config, tokenizer: null);
        Assert.Equal(new[] { 1, 2 }, ids.Order());
    }

    [Fact]
    public void MedianAndMemory()
    {
        Assert.Equal(3, Statistics.Median([5, 1, 3]));
        Assert.Equal(2.5, Statistics.Median([4, 1, 3, 2]));
        Assert.True(double.IsNaN(Statistics.Median([])));
        Assert.Equal(1234L * 1024, ProcessMemory.ParseStatusLine("VmHWM:\t    1234 kB", "VmHWM:"));
        Assert.Null(ProcessMemory.ParseStatusLine("VmRSS:\t    1234 kB", "VmHWM:"));
        long peak = ProcessMemory.PeakResidentBytes(), now = ProcessMemory.CurrentResidentBytes();
        Assert.True(now > 0 && peak >= now, $"peak {peak}, now {now}");
    }

    [Fact]
    public void DecodeReadsEveryMatrixButTheEmbeddingUnlessTied()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        // llama: untied head — the embedding table is not read whole; qwen2: tied — it is, as the head.
        using var untied = ModelLoader.LoadModel(SharedData.Path("reference", "golden", "llama", "model.safetensors"));
        long all = untied.Weights.ByteSize, embed = untied.Weights.Get("model.embed_tokens.weight").ByteSize;
        Assert.Equal(all - embed, MinnowEngine.DecodeWeightBytes(untied));
        using var tied = ModelLoader.LoadModel(SharedData.Path("reference", "golden", "qwen2", "model.safetensors"));
        Assert.Equal(tied.Weights.ByteSize, MinnowEngine.DecodeWeightBytes(tied));
    }

    [Fact]
    public void AgreementOfIdenticalLogitsIsPerfect()
    {
        float[] logits = [0, 1, 2, 3, 2, 1];
        var a = LogitAgreement.Compare(logits, logits, 3, [2, 0]);
        Assert.Equal(1.0, a.ArgmaxAgreement);
        Assert.Equal(0.0, a.MaxAbsDifference);
        Assert.Equal(a.PerplexityA, a.PerplexityB);
        Assert.Equal(Math.Exp(Minnow.Inference.PerplexityEvaluator.NegativeLogLikelihood([0f, 1f, 2f], 0)), a.PerplexityA, 9);
        Assert.Equal(2, a.ClearPositions);
        Assert.Equal(1.0, a.ClearArgmaxAgreement);

        float[] other = [0, 1, 2, 3, 2, 3.05f];
        var b = LogitAgreement.Compare(logits, other, 3, [2, 0]);
        Assert.Equal(0.5, b.ArgmaxAgreement);
        Assert.Equal(0.5, b.ClearArgmaxAgreement);
        Assert.Equal(1f, LogitAgreement.TopGap([3f, 1f, 2f]));
    }
}
