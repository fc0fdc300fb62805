using Minnow.Formats.Gguf;
using Minnow.LlamaCpp;
using Minnow.Loading;
using Minnow.Tensors;
using Minnow.Tests.Cli;
using CliRunner = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.LlamaCpp;

/// <summary><c>minnow export MODEL --format gguf --out FILE --type T</c>: a file both Minnow and llama.cpp load.</summary>
public sealed class ExportCommandTests
{
    [Theory]
    [InlineData("qwen2", "q8_0", DType.Q8_0)]
    [InlineData("gpt_neox", "f16", DType.F16)]
    [InlineData("llama", "q4_0", DType.Q4_0)]
    public void ExportsAGgufBothEnginesLoad(string name, string type, DType expected)
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string output = temp.File("out.gguf");
        var result = CliRunner.Run("export", temp.CopyGolden(name), "--format", "gguf", "--out", output, "--type", type, "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(output, json.GetProperty("path").GetString());
        Assert.Equal(expected.Name(), json.GetProperty("type").GetString());
        Assert.Equal("none", json.GetProperty("tokenizer").GetString());
        Assert.Equal(new FileInfo(output).Length, json.GetProperty("size_bytes").GetInt64());
        Assert.Empty(Directory.GetFiles(temp.Path, ".*.tmp"));

        using var model = ModelLoader.LoadModel(output);
        Assert.Contains(model.Weights.All.Values, t => t.Type == expected);
        Assert.Equal("none", GgufFile.ReadMetadata(output).GetString("tokenizer.ggml.model"));
        using var llama = LlamaCppModel.Load(output, threads: 1, contextSize: 16);
        Assert.Equal(model.Config.VocabSize, llama.VocabSize);

        var text = CliRunner.Run("export", temp.CopyGolden(name, "again"), "--out", temp.File("again.gguf"));
        Assert.True(text.ExitCode == 0, text.ToString());
        Assert.StartsWith("wrote ", text.Stdout);
        Assert.Contains("F16", text.Stdout);
    }

    [Fact]
    public void BadInputIsOneClearLine()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        CliRunner.AssertFails(["export", model, "--out", temp.File("x.gguf"), "--type", "q5_k"], "--type must be f32, f16, q8_0, q4_0, sparse-f16, sparse-i8 or sparse-q8", "q5_k");
        CliRunner.AssertFails(["export", model, "--out", temp.File("x.gguf"), "--format", "tflite"], "--format must be gguf");
        CliRunner.AssertFails(["export", model, "--out", temp.Path], "is a folder");
        CliRunner.AssertFails(["export", temp.File("missing"), "--out", temp.File("x.gguf")], "missing");
        Assert.False(File.Exists(temp.File("x.gguf")));
    }
}
