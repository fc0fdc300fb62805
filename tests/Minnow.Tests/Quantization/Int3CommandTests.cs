using Minnow.Formats.Gguf;
using Minnow.Loading;
using Minnow.Tensors;
using Minnow.Tests.Cli;

namespace Minnow.Tests.Quantization;

/// <summary><c>minnow quantize --scheme int3</c> end to end on the default model: the report, the file, and bad --group.</summary>
public class Int3CommandTests
{
    private static string DefaultModelFolder => Path.Combine(SharedData.RepositoryRoot, "models", "default");

    [Fact]
    public void QuantizesToInt3GroupsReportsAndWritesAFileEveryCommandLoads()
    {
        using var folder = new TempFolder();
        string output = folder.File("default-int3-g64.gguf");
        var result = Minnow.Tests.Cli.Cli.Run("quantize", DefaultModelFolder, "--out", output, "--scheme", "int3", "--group", "64", "--method", "gptq",
            "--calib-tokens", "2048", "--ctx", "128", "--chunks", "4");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("GGUF q3_1_g64 (gptq)", result.Stdout);
        Assert.Contains("model.layers.0.mlp.up_proj.weight", result.Stdout);

        using (var file = GgufFile.Open(output))
        {
            Assert.Equal(DType.Q3_1_G64, file.Tensors.Single(t => t.Name == "blk.0.ffn_up.weight").Type);
            Assert.Equal(DType.Q8_0, file.Tensors.Single(t => t.Name == "token_embd.weight").Type);
        }

        using (var loaded = ModelLoader.LoadModel(output))
        {
            Assert.Equal(DType.Q3_1_G64, loaded.Weights.Get("model.layers.0.mlp.gate_proj.weight").Type);
        }

        var info = Minnow.Tests.Cli.Cli.Run("info", output, "--json");
        Assert.True(info.ExitCode == 0, info.ToString());
        Assert.Contains("Q3_1_G64", info.Json().GetProperty("dtype").GetString());

        // --json, round to nearest, groups of 32: INT3 plus the fp16 scale and minimum is 4 bits per linear weight.
        string rtn = folder.File("default-int3-g32.gguf");
        var json = Minnow.Tests.Cli.Cli.Run("quantize", DefaultModelFolder, "--out", rtn, "--scheme", "int3", "--method", "rtn",
            "--calib-tokens", "2048", "--ctx", "128", "--chunks", "4", "--json");
        Assert.True(json.ExitCode == 0, json.ToString());
        var report = json.Json();
        Assert.Equal("q3_1_g32", report.GetProperty("scheme").GetString());
        Assert.Equal("rtn", report.GetProperty("method").GetString());
        Assert.InRange(report.GetProperty("bits_per_weight").GetDouble(), 4.0, 5.5);
        Assert.True(report.GetProperty("kl_divergence").GetDouble() > 0);
    }

    [Fact]
    public void BadGroupFailsWithOneLine()
    {
        using var folder = new TempFolder();
        string output = folder.File("x.gguf");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", DefaultModelFolder, "--out", output, "--scheme", "int3", "--group", "48"], "--group must be 32, 64 or 128", "48");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", DefaultModelFolder, "--out", output, "--scheme", "int2"], "--scheme", "int2", "int3");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", DefaultModelFolder, "--out", output, "--scheme", "int3", "--method", "llamacpp"], "int3");
        Assert.False(File.Exists(output));
    }
}
