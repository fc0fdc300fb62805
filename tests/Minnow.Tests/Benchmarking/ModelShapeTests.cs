using System.Buffers.Binary;
using Minnow.Benchmarking;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;
using Minnow.Tests.Cli;

namespace Minnow.Tests.Benchmarking;

/// <summary><c>minnow synth</c>: the built-in shapes are the real models' shapes, and the checkpoints it writes load.</summary>
public sealed class ModelShapeTests
{
    /// <summary>The published parameter counts (a tied head counted once; Pythia's untied embed_out counted).</summary>
    [Theory]
    [InlineData("smollm2-135m", 134_515_008L)]
    [InlineData("pythia-160m", 162_322_944L)]
    [InlineData("qwen2.5-0.5b", 494_032_768L)]
    [InlineData("tinyllama-1.1b", 1_100_048_384L)]
    public void ParameterCountsAreTheRealModels(string name, long expected)
    {
        Assert.Equal(expected, ModelShapes.Get(name).ParameterCount);
    }

    /// <summary>The shapes built into the code say what the real config.json files in ../shared/configs say.</summary>
    [Theory]
    [InlineData("smollm2-135m")]
    [InlineData("pythia-160m")]
    [InlineData("qwen2.5-0.5b")]
    [InlineData("tinyllama-1.1b")]
    public void ShapesMatchTheRealConfigs(string name)
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var shape = ModelShapes.Get(name);
        var real = ModelConfig.FromHuggingFace(SharedData.Path("configs", name + ".json"));
        using var doc = System.Text.Json.JsonDocument.Parse(shape.ToConfigJson());
        var ours = ModelConfig.FromHuggingFace(doc.RootElement, "synth");
        Assert.Equal(real, ours);
    }

    [Fact]
    public void UnknownShapeIsAClearError()
    {
        var e = Assert.Throws<MinnowException>(() => ModelShapes.Get("llama-70b"));
        Assert.Contains("smollm2-135m", e.Message);
    }

    private static readonly ModelShape Tiny = ModelShapes.Qwen25_05B with
    {
        Name = "tiny-qwen2",
        HiddenSize = 64,
        IntermediateSize = 96,
        Layers = 2,
        Heads = 4,
        KvHeads = 2,
        VocabSize = 1000,
        MaxPositions = 128,
    };

    [Fact]
    public void WrittenCheckpointLoadsWithTheShapesParameters()
    {
        using var temp = new TempFolder();
        string folder = temp.File("tiny");
        long size = SyntheticCheckpoint.Write(Tiny, folder, seed: 5, DType.BF16);
        Assert.Equal(new FileInfo(Path.Combine(folder, "model.safetensors")).Length, size);
        using var model = ModelLoader.LoadModel(folder);
        Assert.Equal(Tiny.ParameterCount, model.Weights.ParameterCount);
        Assert.Equal("qwen2", model.Config.ModelType);
        Assert.True(model.Config.QkvBias);
        Assert.True(model.Weights.All.Values.All(t => t.Type == DType.BF16));

        // Weights N(0, 0.02), norms 1, biases 0.
        float[] q = model.Weights.Get("model.layers.1.self_attn.q_proj.weight").ToFloatArray();
        double mean = q.Average(), std = Math.Sqrt(q.Average(v => (v - mean) * (v - mean)));
        Assert.InRange(mean, -0.002, 0.002);
        Assert.InRange(std, 0.019, 0.021);
        Assert.All(model.Weights.Get("model.norm.weight").ToFloatArray(), v => Assert.Equal(1f, v));
        Assert.All(model.Weights.Get("model.layers.0.self_attn.k_proj.bias").ToFloatArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void TheSameSeedWritesTheSameWeights()
    {
        using var temp = new TempFolder();
        SyntheticCheckpoint.Write(Tiny, temp.File("a"), seed: 9, DType.F16);
        SyntheticCheckpoint.Write(Tiny, temp.File("b"), seed: 9, DType.F16);
        SyntheticCheckpoint.Write(Tiny, temp.File("c"), seed: 10, DType.F16);
        byte[] a = File.ReadAllBytes(Path.Combine(temp.File("a"), "model.safetensors"));
        Assert.Equal(a, File.ReadAllBytes(Path.Combine(temp.File("b"), "model.safetensors")));
        Assert.NotEqual(a, File.ReadAllBytes(Path.Combine(temp.File("c"), "model.safetensors")));
        Assert.Equal(0, BinaryPrimitives.ReadInt64LittleEndian(a) % 8);
    }

    [Fact]
    public void SynthCommandWritesSmolLM2Shape()
    {
        using var temp = new TempFolder();
        string folder = temp.File("smollm2");
        var result = Minnow.Tests.Cli.Cli.Run("synth", "--like", "smollm2-135m", "--out", folder, "--dtype", "bf16", "--seed", "3", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(134_515_008L, json.GetProperty("parameters").GetInt64());
        Assert.Equal("BF16", json.GetProperty("dtype").GetString());
        Assert.InRange(json.GetProperty("size_bytes").GetInt64(), 134_515_008L * 2, (134_515_008L * 2) + (1 << 20));

        var info = Minnow.Tests.Cli.Cli.Run("info", folder, "--json");
        Assert.True(info.ExitCode == 0, info.ToString());
        var facts = info.Json();
        Assert.Equal(134_515_008L, facts.GetProperty("parameters").GetInt64());
        Assert.Equal(30, facts.GetProperty("layers").GetInt32());
        Assert.Equal(49152, facts.GetProperty("vocab_size").GetInt32());
        Assert.Equal(JsonValueKindNull, facts.GetProperty("tokenizer").ValueKind);
    }

    private const System.Text.Json.JsonValueKind JsonValueKindNull = System.Text.Json.JsonValueKind.Null;

    [Fact]
    public void SynthBadInputIsOneClearLine()
    {
        using var temp = new TempFolder();
        Minnow.Tests.Cli.Cli.AssertFails(["synth", "--like", "gpt-5", "--out", temp.File("x")], "unknown model shape", "smollm2-135m");
        Minnow.Tests.Cli.Cli.AssertFails(["synth", "--like", "smollm2-135m", "--out", temp.File("x"), "--dtype", "q4_0"], "--dtype");
        File.WriteAllText(temp.File("file"), "");
        Minnow.Tests.Cli.Cli.AssertFails(["synth", "--like", "smollm2-135m", "--out", temp.File("file")], "--out must be a folder");
    }
}
