using System.Text.Json;

namespace Minnow.Tests.Models;

/// <summary>One golden checkpoint's reference.json (see ../shared/README.md).</summary>
public sealed class GoldenReference
{
    public required string Folder { get; init; }

    public required int[] InputIds { get; init; }

    public required JsonElement Root { get; init; }

    public static IEnumerable<object[]> Names() =>
        new[] { "llama", "llama3-rope-scaling", "qwen2", "gpt_neox", "gpt2", "stories260k-hf" }.Select(n => new object[] { n });

    public static IEnumerable<object[]> NamesAndDtypes() =>
        Names().SelectMany(n => new[] { "f32", "bf16", "f16" }.Select(d => new object[] { n[0], d }));

    public static GoldenReference? Load(string name)
    {
        if (SharedData.Root is null)
        {
            return null;
        }

        string folder = SharedData.Path("reference", "golden", name);
        var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "reference.json")));
        return new GoldenReference
        {
            Folder = folder,
            Root = doc.RootElement,
            InputIds = doc.RootElement.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
        };
    }

    public string WeightsFile(string dtype) => Path.Combine(Folder, dtype == "f32" ? "model.safetensors" : $"model.{dtype}.safetensors");

    public JsonElement For(string dtype) => Root.GetProperty(dtype);

    public static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();

    public static float[] Floats(JsonElement e) => e.EnumerateArray().Select(x => x.GetSingle()).ToArray();
}
