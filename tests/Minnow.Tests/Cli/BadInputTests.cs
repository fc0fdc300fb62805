using System.Buffers.Binary;
using System.Text.Json.Nodes;

namespace Minnow.Tests.Cli;

/// <summary>
/// Bad input gives one clear line on stderr naming the file and the problem, exit code 1 and no stack trace.
/// The broken checkpoints are copies of ../shared/reference/golden/llama, corrupted in a temporary folder.
/// </summary>
public class BadInputTests
{
    private const string Tensor = "model.layers.1.mlp.down_proj.weight";

    [Fact]
    public void MissingModelFile()
    {
        using var temp = new TempFolder();
        string path = temp.File("no-such-model.gguf");
        Cli.AssertFails(["info", path], path, "no such file");
        Cli.AssertFails(["generate", path, "--prompt-ids", "1,2"], path, "no such file");
        Cli.AssertFails(["perplexity", path, "--ids", path], path, "not found");
    }

    [Fact]
    public void MissingConfigJson()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        File.Delete(Path.Combine(model, "config.json"));
        Cli.AssertFails(["info", Path.Combine(model, "model.safetensors")], "config.json", "not found");
    }

    [Fact]
    public void TruncatedSafetensors()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        string weights = Path.Combine(model, "model.safetensors");
        byte[] bytes = File.ReadAllBytes(weights);
        File.WriteAllBytes(weights, bytes[..(bytes.Length / 2)]);
        Cli.AssertFails(["info", model], weights, "truncated");

        File.WriteAllBytes(weights, bytes[..5]);
        Cli.AssertFails(["generate", model, "--prompt-ids", "1"], weights, "truncated");
    }

    [Fact]
    public void OversizedSafetensorsHeaderLength()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        string weights = Path.Combine(model, "model.safetensors");
        byte[] bytes = File.ReadAllBytes(weights);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 1UL << 40);
        File.WriteAllBytes(weights, bytes);
        Cli.AssertFails(["info", model], weights, "header length", "1099511627776");
    }

    [Fact]
    public void TensorOffsetsOutsideTheFile()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        string weights = Path.Combine(model, "model.safetensors");
        SafetensorsEditor.EditHeader(weights, header =>
        {
            var offsets = header[Tensor]!["data_offsets"]!.AsArray();
            long size = offsets[1]!.GetValue<long>() - offsets[0]!.GetValue<long>();
            header[Tensor]!["data_offsets"] = new JsonArray(10_000_000L, 10_000_000L + size);
        });
        Cli.AssertFails(["info", model], weights, Tensor, "data ends at byte", "truncated or corrupt");
    }

    [Theory]
    [InlineData("I64")]
    [InlineData("F64")]
    [InlineData("Q9_9")]
    public void UnknownDtype(string dtype)
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        string weights = Path.Combine(model, "model.safetensors");
        SafetensorsEditor.EditHeader(weights, header => header[Tensor]!["dtype"] = dtype);
        Cli.AssertFails(["info", model], weights, Tensor, dtype, "F32, F16, BF16");
    }

    [Fact]
    public void MissingTensor()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        string weights = Path.Combine(model, "model.safetensors");
        SafetensorsEditor.EditHeader(weights, header => header.Remove(Tensor));
        Cli.AssertFails(["generate", model, "--prompt-ids", "1,2,3"], model, "missing tensor", Tensor);
    }

    [Fact]
    public void ShapeThatDisagreesWithConfig()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        string config = Path.Combine(model, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(config))!;
        json["intermediate_size"] = 128;
        File.WriteAllText(config, json.ToJsonString());
        Cli.AssertFails(["perplexity", model, "--ids", config], model, "[176, 64]", "[128, 64]", "config.json");
    }

    [Fact]
    public void UnknownModelTypeListsTheSupportedOnes()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        string config = Path.Combine(model, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(config))!;
        json["model_type"] = "mamba";
        File.WriteAllText(config, json.ToJsonString());
        Cli.AssertFails(["info", model], config, "'mamba'", "llama", "qwen2", "gpt_neox", "gpt2");
    }

    [Fact]
    public void ConfigThatIsNotJson()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        string config = Path.Combine(model, "config.json");
        File.WriteAllText(config, "{ \"model_type\": ");
        Cli.AssertFails(["info", model], config, "not valid JSON");
    }

    [Fact]
    public void PromptLongerThanTheContext()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        string model = SharedData.Path("reference", "golden", "llama");
        string ids600 = string.Join(",", Enumerable.Range(0, 600).Select(i => i % 256));
        Cli.AssertFails(["generate", model, "--prompt-ids", ids600], "600 tokens", "context of 512");

        string ids20 = string.Join(",", Enumerable.Range(0, 20));
        Cli.AssertFails(["generate", model, "--prompt-ids", ids20, "--ctx", "16"], "20 tokens", "context of 16", "--ctx");
        Cli.AssertFails(["generate", model, "--prompt-ids", ids20, "--ctx", "4096"], "--ctx 4096", "512");
    }

    [Fact]
    public void TextPromptWithoutATokenizer()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        string model = SharedData.Path("reference", "golden", "llama");
        Cli.AssertFails(["generate", model, "-p", "Once upon a time"], model, "no tokenizer", "--prompt-ids");

        string bin = SharedData.Path("models", "stories260K", "stories260K.bin");
        Cli.AssertFails(["generate", bin, "-p", "Once upon a time"], bin, "tokenizer.bin");

        using var temp = new TempFolder();
        string text = temp.File("text.txt");
        File.WriteAllText(text, "Some text to score.");
        Cli.AssertFails(["perplexity", model, "--text", text], model, "no tokenizer", "--ids");
    }

    [Fact]
    public void TokenIdsOutsideTheVocabulary()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        string model = SharedData.Path("reference", "golden", "llama");
        Cli.AssertFails(["generate", model, "--prompt-ids", "1,999"], "999", "vocabulary of 256");
        Cli.AssertFails(["generate", model, "--prompt-ids", "1,x"], "--prompt-ids", "'x'");

        using var temp = new TempFolder();
        string ids = temp.File("ids.txt");
        File.WriteAllText(ids, "1 2 3");
        Cli.AssertFails(["perplexity", model, "--ids", ids, "--ctx", "16"], "3 tokens", "--ctx 16");
    }

    [Fact]
    public void MissingTextFile()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        string model = SharedData.Path("reference", "golden", "llama");
        using var temp = new TempFolder();
        string missing = temp.File("held-out.txt");
        Cli.AssertFails(["perplexity", model, "--text", missing], missing, "not found");
    }

    [Fact]
    public void ParseErrorsExitNonZeroWithOneLine()
    {
        Cli.AssertFails(["generate", "--max-tokens", "abc"], "abc", "--max-tokens", "--help");
        Cli.AssertFails(["no-such-command"], "no-such-command");
        Cli.AssertFails(["perplexity", "--ctx"], "--ctx");
    }

    [Fact]
    public void MissingPromptOrText()
    {
        Cli.AssertFails(["generate", "/does/not/matter"], "-p TEXT");
        Cli.AssertFails(["perplexity", "/does/not/matter"], "--text FILE");
    }

    [Fact]
    public void MissingDefaultModelIsExplained()
    {
        if (Cli.DefaultModelExists)
        {
            return;
        }

        Cli.AssertFails(["info"], "no MODEL given", "models/default", "pass a model path");
    }

    [Fact]
    public void CancellationExitsWith130AndNoStackTrace()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        string model = SharedData.Path("reference", "golden", "llama");
        var result = Cli.Run(["generate", model, "--prompt-ids", "1,2,3", "-n", "8"], cancelled.Token);
        Assert.True(result.ExitCode == 130, result.ToString());
        Assert.Contains("cancelled", result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
    }
}
