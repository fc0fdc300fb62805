using Minnow.Tests.Cli;
using Minnow.Tests.Models;
using CliRunner = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Pruning;

/// <summary><c>minnow prune</c> end to end on golden checkpoints (read in place from ../shared): the output folder runs in the other commands.</summary>
public class PruneCommandTests
{
    private static string IdsFile(TempFolder folder, GoldenReference golden, int repeats)
    {
        string path = folder.File($"ids-{repeats}.txt");
        File.WriteAllText(path, string.Join(" ", Enumerable.Repeat(golden.InputIds, repeats).SelectMany(x => x)));
        return path;
    }

    [Fact]
    public void StructuredPrune_WritesAFolderThatPerplexityAndGenerateRun()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        using var folder = new TempFolder();
        string model = folder.CopyGolden("llama");
        string output = folder.File("pruned");
        string ids = IdsFile(folder, golden, 4);
        var result = CliRunner.Run("prune", model, "--out", output, "--method", "heads", "--keep-heads", "0.5", "--keep-ffn", "0.7",
            "--calib-ids", ids, "--eval-ids", ids, "--ctx", "32", "--no-speed", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal("heads", json.GetProperty("method").GetString());
        long before = json.GetProperty("before").GetProperty("parameters").GetInt64();
        long after = json.GetProperty("after").GetProperty("parameters").GetInt64();
        Assert.True(after < before, result.Stdout);
        Assert.True(json.GetProperty("after").GetProperty("file_bytes").GetInt64() < json.GetProperty("before").GetProperty("file_bytes").GetInt64());
        Assert.True(json.GetProperty("after").GetProperty("perplexity").GetDouble() > 1);
        var layers = json.GetProperty("layers").EnumerateArray().ToList();
        Assert.Equal(2, layers.Count);
        Assert.All(layers, l => Assert.Equal(2, l.GetProperty("heads").GetInt32()));
        Assert.All(layers, l => Assert.Equal(1, l.GetProperty("kv_heads").GetInt32()));

        string config = File.ReadAllText(Path.Combine(output, "config.json"));
        Assert.Contains("minnow_layer_heads", config);
        Assert.Contains("minnow_layer_intermediate", config);
        Assert.Contains("minnow_pruning", config);

        var perplexity = CliRunner.Run("perplexity", output, "--ids", ids, "--ctx", "32", "--json");
        Assert.True(perplexity.ExitCode == 0, perplexity.ToString());
        Assert.Equal(json.GetProperty("after").GetProperty("perplexity").GetDouble(), perplexity.Json().GetProperty("ppl").GetDouble(), 6);

        var generate = CliRunner.Run("generate", output, "--prompt-ids", "1,5,9", "-n", "8", "--temperature", "0", "--ignore-eos", "--json");
        Assert.True(generate.ExitCode == 0, generate.ToString());

        var info = CliRunner.Run("info", output, "--json");
        Assert.True(info.ExitCode == 0, info.ToString());
    }

    [Fact]
    public void UnstructuredPrune_ReportsTheSparsityOfEveryLayer()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        using var folder = new TempFolder();
        string model = folder.CopyGolden("llama");
        string ids = IdsFile(folder, golden, 2);
        var result = CliRunner.Run("prune", model, "--out", folder.File("wanda"), "--method", "wanda", "--sparsity", "0.5", "--calib-ids", ids, "--no-speed");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("layer 1: self_attn.q_proj 50.0%", result.Stdout);
        Assert.Contains("non-zero params", result.Stdout);
        Assert.Contains("no --eval text", result.Stderr);
        Assert.DoesNotContain("embed_tokens", result.Stdout);

        var embeddings = CliRunner.Run("prune", model, "--out", folder.File("wanda-emb"), "--method", "wanda", "--sparsity", "0.5", "--calib-ids", ids,
            "--include-embeddings", "--no-speed", "--json");
        Assert.True(embeddings.ExitCode == 0, embeddings.ToString());
        var tables = embeddings.Json().GetProperty("embeddings");
        Assert.Equal(0.5, tables.GetProperty("model.embed_tokens.weight").GetProperty("sparsity").GetDouble(), 2);
        Assert.Equal(0.5, tables.GetProperty("lm_head.weight").GetProperty("sparsity").GetDouble(), 2);
    }

    [Fact]
    public void BadInput_FailsCleanly()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        using var folder = new TempFolder();
        string model = folder.CopyGolden("llama");
        CliRunner.AssertFails(["prune", model, "--out", folder.File("x"), "--method", "wanda"], "needs calibration text");
        CliRunner.AssertFails(["prune", model, "--out", folder.File("x"), "--method", "cut"], "--method 'cut' is not supported");
        CliRunner.AssertFails(["prune", model, "--out", folder.File("x"), "--method", "magnitude", "--sparsity", "0.95"], "--sparsity must be between 0.1 and 0.9");
        CliRunner.AssertFails(["prune", model, "--out", model, "--method", "magnitude", "--no-speed"], "must not be the model's own folder");
        CliRunner.AssertFails(["prune", model, "--out", folder.File("x"), "--method", "magnitude", "--keep-heads", "0.5"], "--keep-heads");
        CliRunner.AssertFails(["prune", model, "--out", folder.File("x"), "--method", "heads", "--keep-heads", "0.5", "--include-embeddings"], "--include-embeddings");
    }
}
