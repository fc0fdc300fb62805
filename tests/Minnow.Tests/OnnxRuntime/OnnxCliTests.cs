using System.Text.Json;
using Minnow.Tests.Cli;
using CliRunner = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.OnnxRuntime;

/// <summary>
/// <c>minnow export --format onnx</c>, then <c>minnow perplexity</c> and <c>minnow generate</c> on the exported folder
/// (ONNX Runtime) against the same commands on the model itself; and clear errors for bad options.
/// </summary>
public class OnnxCliTests
{
    private static readonly string DefaultFolder = Path.Combine(SharedData.RepositoryRoot, "models", "default");

    [Fact]
    public void ExportOnnx_ThenPerplexityAndGreedyGenerate_MatchMinnowOnTheDefaultModel()
    {
        using var folder = new TempFolder();
        string onnx = folder.File("default-onnx");
        var export = CliRunner.Run("export", DefaultFolder, "--format", "onnx", "-o", onnx, "--type", "f32", "--json");
        Assert.True(export.ExitCode == 0, export.Stderr);
        using (var doc = JsonDocument.Parse(export.Stdout))
        {
            Assert.Equal("onnx", doc.RootElement.GetProperty("format").GetString());
            Assert.Equal("tokenizer.json", doc.RootElement.GetProperty("tokenizer").GetString());
        }

        foreach (var file in new[] { "model.onnx", "genai_config.json", "tokenizer.json" })
        {
            Assert.True(File.Exists(Path.Combine(onnx, file)), file);
        }

        string text = Path.Combine(DefaultFolder, "held-out.txt");
        double Ppl(string model)
        {
            var r = CliRunner.Run("perplexity", model, "-f", text, "-c", "128", "--chunks", "4", "--json");
            Assert.True(r.ExitCode == 0, r.Stderr);
            using var doc = JsonDocument.Parse(r.Stdout);
            return doc.RootElement.GetProperty("ppl").GetDouble();
        }

        double minnow = Ppl(DefaultFolder), ort = Ppl(onnx);
        Assert.True(Math.Abs(ort - minnow) <= 1e-4 * minnow, $"perplexity ONNX Runtime {ort} vs Minnow {minnow}");

        int[] Ids(string model)
        {
            var r = CliRunner.Run("generate", model, "-p", "Once upon a time", "-n", "16", "--temp", "0", "--json");
            Assert.True(r.ExitCode == 0, r.Stderr);
            using var doc = JsonDocument.Parse(r.Stdout);
            return doc.RootElement.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        }

        var expected = Ids(DefaultFolder);
        Assert.NotEmpty(expected);
        Assert.Equal(expected, Ids(onnx));
    }

    [Fact]
    public void ExportOnnx_BadOptions_FailWithOneClearLine()
    {
        using var folder = new TempFolder();
        CliRunner.AssertFails(["export", DefaultFolder, "--format", "onnx", "-o", folder.File("x"), "--type", "int5"], "--type for ONNX must be");
        CliRunner.AssertFails(["export", DefaultFolder, "--format", "onnx", "-o", folder.File("x"), "--type", "int4", "--group", "48"], "--group must be 32, 64 or 128");
        CliRunner.AssertFails(["export", DefaultFolder, "--format", "onnx", "-o", folder.File("x"), "--accuracy-level", "7"], "--accuracy-level must be");
        File.WriteAllText(folder.File("file"), "x");
        CliRunner.AssertFails(["export", DefaultFolder, "--format", "onnx", "-o", folder.File("file")], "is a file");
        CliRunner.AssertFails(["export", DefaultFolder, "--format", "tflite", "-o", folder.File("x")], "--format must be gguf or onnx");
    }
}
