using System.Globalization;
using System.Text.Json;
using Minnow.Export;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;
using Minnow.Tests.Models;

namespace Minnow.Tests.Cli;

/// <summary>
/// <c>minnow info</c>, <c>generate</c> and <c>perplexity</c> on every golden checkpoint (they have no tokenizer, so
/// prompts and texts are token ids): greedy generation reproduces the reference continuation, perplexity equals
/// exp(mean NLL) computed here independently over the same windows, and every --json output parses.
/// </summary>
public unsafe class GoldenCliTests
{
    [Theory]
    [MemberData(nameof(GoldenReference.Names), MemberType = typeof(GoldenReference))]
    public void Info_ReportsTheCheckpoint(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        var result = Cli.Run("info", golden.Folder, "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        string weights = golden.WeightsFile("f32");
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(golden.Folder, "config.json")));
        Assert.Equal(SafetensorsEditor.ParameterCount(weights), json.GetProperty("parameters").GetInt64());
        Assert.Equal(new FileInfo(weights).Length, json.GetProperty("size_bytes").GetInt64());
        Assert.Equal("F32", json.GetProperty("dtype").GetString());
        Assert.Equal(config.RootElement.GetProperty("model_type").GetString(), json.GetProperty("model_type").GetString());
        Assert.Equal(config.RootElement.GetProperty("vocab_size").GetInt32(), json.GetProperty("vocab_size").GetInt32());
        int context = config.RootElement.TryGetProperty("max_position_embeddings", out var m) ? m.GetInt32() : config.RootElement.GetProperty("n_positions").GetInt32();
        Assert.Equal(context, json.GetProperty("context_length").GetInt32());
        Assert.Equal(JsonValueKind.Null, json.GetProperty("tokenizer").ValueKind);

        var bf16 = Cli.Run("info", golden.WeightsFile("bf16"), "--json");
        Assert.Equal("BF16", bf16.Json().GetProperty("dtype").GetString());

        var text = Cli.Run("info", golden.Folder);
        Assert.True(text.ExitCode == 0, text.ToString());
        Assert.Contains("parameters", text.Stdout);
        Assert.Contains("tokenizer     none", text.Stdout);
    }

    [Theory]
    [MemberData(nameof(GoldenReference.NamesAndDtypes), MemberType = typeof(GoldenReference))]
    public void Generate_GreedyReproducesTheReferenceContinuation(string name, string dtype)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        var reference = golden.For(dtype);
        var prompt = GoldenReference.Ints(reference.GetProperty("greedy_prompt"));
        var expected = GoldenReference.Ints(reference.GetProperty("greedy_16"));
        var result = Cli.Run("generate", golden.WeightsFile(dtype), "--prompt-ids", string.Join(",", prompt), "-n", "16",
            "--temperature", "0", "--ignore-eos", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(expected, json.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(prompt.Length, json.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(16, json.GetProperty("generated_tokens").GetInt32());
        Assert.Equal(JsonValueKind.Null, json.GetProperty("text").ValueKind);
        Assert.Equal("length", json.GetProperty("stop_reason").GetString());
        Assert.True(json.GetProperty("tokens_per_second").GetDouble() > 0);
        Assert.True(json.GetProperty("prefill_tokens_per_second").GetDouble() > 0);
        Assert.True(json.GetProperty("ttft_ms").GetDouble() >= 0);
    }

    [Theory]
    [MemberData(nameof(GoldenReference.Names), MemberType = typeof(GoldenReference))]
    public void Generate_StreamsIdsWithoutJson(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        var reference = golden.For("f32");
        var prompt = GoldenReference.Ints(reference.GetProperty("greedy_prompt"));
        var expected = GoldenReference.Ints(reference.GetProperty("greedy_16"));
        var result = Cli.Run("generate", golden.Folder, "--prompt-ids", string.Join(",", prompt), "-n", "16", "--temperature", "0", "--ignore-eos");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(string.Join(" ", expected) + Environment.NewLine, result.Stdout);
        Assert.Contains("tok/s", result.Stderr);
    }

    [Fact]
    public void Generate_SampledWithASeedIsReproducible()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        string[] args = ["generate", golden.Folder, "--prompt-ids", "1", "-n", "40", "--temperature", "1", "--top-k", "20", "--top-p", "0.9",
            "--min-p", "0.01", "--repeat-penalty", "1.1", "--seed", "42", "--json"];
        var a = Cli.Run(args).Json().GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var b = Cli.Run(args).Json().GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(a, b);
        Assert.NotEmpty(a);
    }

    [Fact]
    public void Generate_Llama2cCheckpointFromBos()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        var expected = GoldenReference.Ints(golden.Root.GetProperty("greedy_from_bos_64"));
        string bin = SharedData.Path("models", "stories260K", "stories260K.bin");
        var result = Cli.Run("generate", bin, "--prompt-ids", "1", "-n", "64", "--temperature", "0", "--ignore-eos", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(expected, result.Json().GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()));

        var info = Cli.Run("info", bin, "--json").Json();
        Assert.Equal("llama2c", info.GetProperty("format").GetString());
        Assert.Equal(new FileInfo(bin).Length, info.GetProperty("size_bytes").GetInt64());
    }

    [Fact]
    public void Gguf_InfoGenerateAndPerplexity()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string gguf = temp.File("llama-q8_0.gguf");
        using (var original = ModelLoader.LoadModel(golden.Folder))
        {
            GgufExporter.Export(original, gguf, DType.Q8_0);
        }

        var info = Cli.Run("info", gguf, "--json");
        Assert.True(info.ExitCode == 0, info.ToString());
        var json = info.Json();
        Assert.Equal("gguf", json.GetProperty("format").GetString());
        // Matrices in Q8_0; rows of 176 (not a multiple of 32) fall back to F16; vectors stay F32.
        Assert.Equal("mixed: Q8_0 + F16 + F32", json.GetProperty("dtype").GetString());
        Assert.Equal(new FileInfo(gguf).Length, json.GetProperty("size_bytes").GetInt64());
        Assert.Equal(SafetensorsEditor.ParameterCount(golden.WeightsFile("f32")), json.GetProperty("parameters").GetInt64());

        // A folder holding one .gguf stands for it.
        Assert.Equal(gguf, Cli.Run("info", temp.Path, "--json").Json().GetProperty("path").GetString());

        var generated = Cli.Run("generate", gguf, "--prompt-ids", "1,2,3", "-n", "5", "--temperature", "0", "--ignore-eos", "--json");
        Assert.True(generated.ExitCode == 0, generated.ToString());
        Assert.Equal(5, generated.Json().GetProperty("token_ids").GetArrayLength());

        string ids = temp.File("ids.txt");
        File.WriteAllText(ids, string.Join(" ", golden.InputIds));
        var ppl = Cli.Run("perplexity", gguf, "--ids", ids, "--ctx", "16", "--json");
        Assert.True(ppl.ExitCode == 0, ppl.ToString());
        Assert.True(ppl.Json().GetProperty("ppl").GetDouble() > 1);
    }

    [Fact]
    public void Generate_StopsAtTheEosTokenUnlessIgnored()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        // Find what greedy decoding produces first, then declare that the EOS id in a copied config.
        var first = Cli.Run("generate", golden.Folder, "--prompt-ids", "5,6,7", "-n", "1", "--temperature", "0", "--ignore-eos", "--json");
        int id = first.Json().GetProperty("token_ids")[0].GetInt32();
        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        string configPath = Path.Combine(model, "config.json");
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(configPath))!;
        config["eos_token_id"] = id;
        File.WriteAllText(configPath, config.ToJsonString());

        var stopped = Cli.Run("generate", model, "--prompt-ids", "5,6,7", "-n", "8", "--temperature", "0", "--json").Json();
        Assert.Equal("stop_token", stopped.GetProperty("stop_reason").GetString());
        Assert.Equal(0, stopped.GetProperty("token_ids").GetArrayLength());
    }

    [Theory]
    [MemberData(nameof(GoldenReference.Names), MemberType = typeof(GoldenReference))]
    public void Perplexity_EqualsExpOfMeanNllOverTheSameWindows(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        const int ctx = 16;
        using var temp = new TempFolder();
        string idsFile = temp.File("ids.txt");
        File.WriteAllText(idsFile, string.Join(" ", golden.InputIds));
        var result = Cli.Run("perplexity", golden.Folder, "--ids", idsFile, "--ctx", ctx.ToString(CultureInfo.InvariantCulture), "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();

        // Independently: non-overlapping windows of ctx tokens, each from an empty cache, scoring the
        // predictions of positions ctx/2 .. ctx-2 (of tokens ctx/2+1 .. ctx-1), no BOS substitution.
        using var model = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        int vocab = model.Config.VocabSize;
        int windows = golden.InputIds.Length / ctx;
        double total = 0;
        int scored = 0;
        var logits = new float[ctx * vocab];
        for (int w = 0; w < windows; w++)
        {
            var window = golden.InputIds.AsSpan(w * ctx, ctx).ToArray();
            using var cache = new KvCache(model.Config, ctx);
            fixed (float* p = logits)
            {
                model.Forward(window, cache, p, allLogits: true);
            }

            for (int j = ctx / 2; j < ctx - 1; j++)
            {
                var row = logits.AsSpan(j * vocab, vocab);
                double max = double.NegativeInfinity;
                foreach (float v in row)
                {
                    max = Math.Max(max, v);
                }

                double sum = 0;
                foreach (float v in row)
                {
                    sum += Math.Exp(v - max);
                }

                total += max + Math.Log(sum) - row[window[j + 1]];
                scored++;
            }
        }

        double expected = Math.Exp(total / scored);
        double ppl = json.GetProperty("ppl").GetDouble();
        Assert.True(Math.Abs(ppl - expected) <= 1e-6 * expected, $"ppl {ppl} vs {expected}");
        Assert.Equal(total / scored, json.GetProperty("mean_nll").GetDouble(), 1e-6);
        Assert.Equal(scored, json.GetProperty("tokens_scored").GetInt32());
        Assert.Equal(windows, json.GetProperty("chunks").GetInt32());
        Assert.Equal(ctx, json.GetProperty("ctx").GetInt32());
        Assert.True(json.GetProperty("stderr").GetDouble() > 0);
        Assert.True(json.GetProperty("tokens_per_second").GetDouble() > 0);

        var text = Cli.Run("perplexity", golden.Folder, "--ids", idsFile, "--ctx", "16", "--chunks", "2");
        Assert.True(text.ExitCode == 0, text.ToString());
        Assert.StartsWith("perplexity ", text.Stdout);
        Assert.Contains(" ± ", text.Stdout);
        Assert.Contains("tok/s", text.Stdout);
    }

    [Fact]
    public void Perplexity_CapsTheContextToTheModels()
    {
        var golden = GoldenReference.Load("gpt2");
        if (golden is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string idsFile = temp.File("ids.txt");
        File.WriteAllText(idsFile, string.Join(",", Enumerable.Range(0, 300).Select(i => (i * 7) % 256)));
        var result = Cli.Run("perplexity", golden.Folder, "--ids", idsFile, "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(128, json.GetProperty("ctx").GetInt32());
        Assert.Equal(2, json.GetProperty("chunks").GetInt32());
        Assert.Contains("capped", result.Stderr);
    }
}
