using System.Text;
using System.Text.Json;
using Minnow.Formats.Safetensors;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;
using Minnow.Tests.Models;

namespace Minnow.Tests.Formats;

public sealed unsafe class SafetensorsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("minnow-st-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Writes a safetensors file by hand: 8-byte header length, JSON header, data.</summary>
    private static void Write(string path, IEnumerable<(string Name, Tensor Tensor)> tensors)
    {
        var header = new Dictionary<string, object>();
        long offset = 0;
        var list = tensors.ToList();
        foreach (var (name, t) in list)
        {
            header[name] = new { dtype = t.Type.Name(), shape = t.Shape, data_offsets = new[] { offset, offset + t.ByteSize } };
            offset += t.ByteSize;
        }

        byte[] json = JsonSerializer.SerializeToUtf8Bytes(header);
        using var f = File.Create(path);
        f.Write(BitConverter.GetBytes((ulong)json.Length));
        f.Write(json);
        foreach (var (_, t) in list)
        {
            f.Write(new ReadOnlySpan<byte>(t.Data, checked((int)t.ByteSize)));
        }
    }

    private static byte[] RawFile(string headerJson, int dataBytes)
    {
        byte[] json = Encoding.UTF8.GetBytes(headerJson);
        return [.. BitConverter.GetBytes((ulong)json.Length), .. json, .. new byte[dataBytes]];
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void AddWithoutCopyWritesTheSameBytesAsAdd(DType type)
    {
        // Larger than the writer's 65,536-value chunk and not a multiple of it, beside a small tensor.
        var random = new Random(11);
        float[] big = Enumerable.Range(0, (3 * 65536) + 123).Select(_ => (float)((random.NextDouble() * 200) - 100)).ToArray();
        float[] small = [1.5f, -2.25f, 3e-5f];
        var copied = new SafetensorsWriter();
        copied.Add("a.weight", [3, big.Length / 3], big, type);
        copied.Add("b.bias", [3], small, type);
        var referenced = new SafetensorsWriter();
        referenced.AddWithoutCopy("a.weight", [3, big.Length / 3], big, type);
        referenced.AddWithoutCopy("b.bias", [3], small, type);

        string one = Path.Combine(_dir, "copied.safetensors"), two = Path.Combine(_dir, "referenced.safetensors");
        copied.Save(one);
        referenced.Save(two);
        Assert.Equal(File.ReadAllBytes(one), File.ReadAllBytes(two));
        Assert.Throws<ArgumentException>(() => referenced.AddWithoutCopy("c", [2, 2], small, type));
    }

    [Fact]
    public void ShardedCheckpointLoadsLikeTheSingleFile()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        using (var single = SafetensorsFile.Open(golden.WeightsFile("f32")))
        {
            var names = single.Tensors.Keys.Order(StringComparer.Ordinal).ToList();
            var first = names.Take(names.Count / 2).ToList();
            var second = names.Skip(names.Count / 2).ToList();
            Write(Path.Combine(_dir, "model-00001-of-00002.safetensors"), first.Select(n => (n, single.Tensors[n])));
            Write(Path.Combine(_dir, "model-00002-of-00002.safetensors"), second.Select(n => (n, single.Tensors[n])));
            var map = first.ToDictionary(n => n, _ => "model-00001-of-00002.safetensors");
            foreach (var n in second)
            {
                map[n] = "model-00002-of-00002.safetensors";
            }

            File.WriteAllText(Path.Combine(_dir, "model.safetensors.index.json"), JsonSerializer.Serialize(new { metadata = new { }, weight_map = map }));
        }

        File.Copy(Path.Combine(golden.Folder, "config.json"), Path.Combine(_dir, "config.json"));
        using var sharded = ModelLoader.LoadModel(_dir);
        using var original = ModelLoader.LoadModel(golden.Folder);
        Assert.Equal(original.Weights.ParameterCount, sharded.Weights.ParameterCount);
        using var c1 = new KvCache(original.Config, 8);
        using var c2 = new KvCache(sharded.Config, 8);
        var a = new float[original.Config.VocabSize];
        var b = new float[original.Config.VocabSize];
        fixed (float* pa = a, pb = b)
        {
            original.Forward(golden.InputIds.AsSpan(0, 8), c1, pa, false);
            sharded.Forward(golden.InputIds.AsSpan(0, 8), c2, pb, false);
        }

        Assert.Equal(a, b);
    }

    [Fact]
    public void TensorsAreViewsOfTheMappedFileNotCopies()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        using var file = SafetensorsFile.Open(golden.WeightsFile("f32"));
        var t = file.Tensors["model.embed_tokens.weight"];
        Assert.IsType<MappedFile>(t.Owner);
        var mapped = (MappedFile)t.Owner!;
        Assert.True(t.Data >= mapped.Pointer && t.Data + t.ByteSize <= mapped.Pointer + mapped.Length);
    }

    [Theory]
    [InlineData("truncated-length", "truncated")]
    [InlineData("huge-header", "larger than the limit")]
    [InlineData("header-past-end", "truncated")]
    [InlineData("offsets-outside", "truncated or corrupt")]
    [InlineData("unknown-dtype", "dtype I64")]
    [InlineData("size-mismatch", "needs")]
    [InlineData("not-json", "not valid JSON")]
    public void BadFilesAreRefusedWithOneClearLine(string kind, string expected)
    {
        string path = Path.Combine(_dir, kind + ".safetensors");
        byte[] bytes = kind switch
        {
            "truncated-length" => [1, 2, 3],
            "huge-header" => [.. BitConverter.GetBytes(1UL << 40), .. new byte[16]],
            "header-past-end" => [.. BitConverter.GetBytes(1000UL), .. "{}"u8.ToArray()],
            "offsets-outside" => RawFile("""{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8),
            "unknown-dtype" => RawFile("""{"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}""", 16),
            "size-mismatch" => RawFile("""{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}""", 16),
            "not-json" => RawFile("""{"w": oops""", 16),
            _ => throw new ArgumentException(kind),
        };
        File.WriteAllBytes(path, bytes);
        var error = Assert.Throws<MinnowException>(() => SafetensorsFile.Open(path));
        Assert.Contains(expected, error.Message);
        Assert.Contains(path, error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public void MissingTensorAndWrongShapeAreNamed()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        using (var single = SafetensorsFile.Open(golden.WeightsFile("f32")))
        {
            Write(Path.Combine(_dir, "model.safetensors"), single.Tensors.Where(kv => kv.Key != "model.norm.weight").Select(kv => (kv.Key, kv.Value)));
        }

        File.Copy(Path.Combine(golden.Folder, "config.json"), Path.Combine(_dir, "config.json"));
        var missing = Assert.Throws<MinnowException>(() => ModelLoader.LoadModel(_dir));
        Assert.Contains("missing tensor 'model.norm.weight'", missing.Message);

        var config = File.ReadAllText(Path.Combine(_dir, "config.json")).Replace("\"intermediate_size\": 176", "\"intermediate_size\": 200");
        File.WriteAllText(Path.Combine(_dir, "config.json"), config);
        using (var single = SafetensorsFile.Open(golden.WeightsFile("f32")))
        {
            Write(Path.Combine(_dir, "model.safetensors"), single.Tensors.Select(kv => (kv.Key, kv.Value)));
        }

        var shape = Assert.Throws<MinnowException>(() => ModelLoader.LoadModel(_dir));
        Assert.Contains("config.json implies", shape.Message);
    }

    [Fact]
    public void UnknownModelTypeIsRefusedByNameWithTheSupportedList()
    {
        File.WriteAllText(Path.Combine(_dir, "config.json"), """{"model_type": "mamba", "hidden_size": 8}""");
        var error = Assert.Throws<MinnowException>(() => ModelConfig.FromHuggingFace(Path.Combine(_dir, "config.json")));
        Assert.Contains("'mamba'", error.Message);
        Assert.Contains("llama, mistral, qwen2, gpt_neox, gpt2", error.Message);
    }
}
