using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tests.Cli;
using Minnow.Tests.Models;

namespace Minnow.Tests.Quantization;

/// <summary>
/// <c>minnow quantize</c> end to end on stories260K (token ids sampled from its F32 self, since it has no
/// tokenizer here): the report, the file every command loads, <c>perplexity --kl-base</c> agreeing with the report,
/// bad input, and Ctrl+C leaving nothing behind.
/// </summary>
public class QuantizeCommandTests
{
    private static string? Stories => GoldenReference.Load("stories260k-hf")?.Folder;

    private static (string Calib, string Eval) WriteIds(TempFolder folder, string model)
    {
        using var pool = new WorkerPool(1);
        using var original = ModelLoader.LoadModel(model, pool);
        string calib = folder.File("calib.txt"), eval = folder.File("eval.txt");
        File.WriteAllText(calib, string.Join(' ', Calibration.Sample(original, 4, 64, 1, seed: 1).SelectMany(s => s[1..])));
        File.WriteAllText(eval, string.Join(' ', Calibration.Sample(original, 2, 128, 1, seed: 2).SelectMany(s => s)));
        return (calib, eval);
    }

    [Fact]
    public void QuantizesReportsAndWritesAFileEveryCommandLoads()
    {
        if (Stories is not string model)
        {
            return;
        }

        using var folder = new TempFolder();
        var (calib, eval) = WriteIds(folder, model);
        string output = folder.File("stories-q4.gguf");
        var result = Minnow.Tests.Cli.Cli.Run("quantize", model, "--out", output, "--method", "gptq", "--ids", "--calib", calib, "--eval", eval,
            "--bos", "1", "--ctx", "128", "--calib-seq", "64", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal("gptq", json.GetProperty("method").GetString());
        Assert.Equal("q4_0", json.GetProperty("scheme").GetString());
        Assert.Equal(new FileInfo(output).Length, json.GetProperty("size_bytes").GetInt64());
        double bpw = json.GetProperty("bits_per_weight").GetDouble();
        Assert.InRange(bpw, 4.5, 16);
        Assert.True(json.GetProperty("ppl_after").GetDouble() > 1);
        double kl = json.GetProperty("kl_divergence").GetDouble();
        Assert.True(kl > 0);
        Assert.InRange(json.GetProperty("top1_agreement").GetDouble(), 0, 1);
        Assert.True(json.GetProperty("decode_tokens_per_second").GetDouble() > 0);
        Assert.Equal(4 * 64, json.GetProperty("calibration").GetProperty("tokens").GetInt32());
        var layers = json.GetProperty("layers").EnumerateArray().ToList();
        Assert.Contains(layers, l => l.GetProperty("method").GetString() == "gptq" && l.GetProperty("relative_error").GetDouble() < l.GetProperty("rtn_relative_error").GetDouble());

        using (var loaded = ModelLoader.LoadModel(output))
        {
            Assert.Equal(DType.Q4_0, loaded.Weights.Get("model.layers.0.mlp.gate_proj.weight").Type);
        }

        var info = Minnow.Tests.Cli.Cli.Run("info", output, "--json");
        Assert.True(info.ExitCode == 0, info.ToString());

        // perplexity --kl-base measures the same thing on the same windows.
        var ppl = Minnow.Tests.Cli.Cli.Run("perplexity", output, "--ids", eval, "--bos", "1", "--ctx", "128", "--kl-base", model, "--json");
        Assert.True(ppl.ExitCode == 0, ppl.ToString());
        var p = ppl.Json();
        Assert.Equal(kl, p.GetProperty("kl_divergence").GetDouble(), 1e-9);
        Assert.Equal(json.GetProperty("ppl_after").GetDouble(), p.GetProperty("ppl").GetDouble(), 1e-6);
        Assert.Equal(json.GetProperty("ppl_before").GetDouble(), p.GetProperty("ppl_base").GetDouble(), 1e-6);
    }

    [Fact]
    public void BadInputFailsCleanly()
    {
        if (Stories is not string model)
        {
            return;
        }

        using var folder = new TempFolder();
        string output = folder.File("x.gguf");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", model, "--out", output, "--scheme", "q3_k"], "--scheme", "q3_k");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", model, "--out", output, "--method", "magic"], "--method", "magic");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", model, "--out", output, "--method", "llamacpp", "--scheme", "q9_z"], "--scheme", "q9_z", "q4_k_m");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", model, "--out", output, "--method", "llamacpp", "--scheme", "mixed"], "mixed");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", model, "--out", output, "--scheme", "q4_0", "--max-size", "1MB"], "--max-size");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", model, "--out", output, "--scheme", "mixed", "--max-size", "lots"], "--max-size", "lots");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", model, "--out", output], "--ids");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", model, "--out", output, "--ids"], "--eval");
        File.WriteAllText(folder.File("few.txt"), "1 2 3");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", model, "--out", output, "--ids", "--eval", folder.File("few.txt")], "calibration");
        File.WriteAllText(folder.File("bad.txt"), "1 2 99999");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", model, "--out", output, "--ids", "--eval", folder.File("bad.txt")], "99999");
        Assert.False(File.Exists(output));
    }

    [Fact]
    public void CancellationLeavesNothingBehind()
    {
        if (Stories is not string model)
        {
            return;
        }

        using var folder = new TempFolder();
        var (calib, eval) = WriteIds(folder, model);
        string output = folder.File("cancelled.gguf");
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        var result = Minnow.Tests.Cli.Cli.Run(["quantize", model, "--out", output, "--ids", "--calib", calib, "--eval", eval, "--bos", "1", "--ctx", "128", "--calib-seq", "64"], cts.Token);
        Assert.Equal(130, result.ExitCode);
        Assert.Equal("calib.txt eval.txt", string.Join(" ", Directory.GetFiles(folder.Path).Select(Path.GetFileName).Order()));
    }
}
