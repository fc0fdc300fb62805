using System.Text.Json;
using System.Text.Json.Nodes;
using Minnow.Formats.Safetensors;
using Minnow.Models;

namespace Minnow.Pruning;

/// <summary>
/// Saves edited weights as a Hugging Face model folder: the source's config.json (with per-layer shapes added
/// when layers differ: <c>minnow_layer_heads</c>, <c>minnow_layer_kv_heads</c>, <c>minnow_layer_intermediate</c>),
/// one model.safetensors in each tensor's original storage type, and the tokenizer files copied over.
/// </summary>
public static class PrunedModelWriter
{
    /// <summary>Files beside a model that belong to its tokenizer or generation settings (copied as they are).</summary>
    public static readonly IReadOnlyList<string> CopiedFiles =
    [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
        "vocab.json", "merges.txt", "generation_config.json", "chat_template.json", "chat_template.jinja", "held-out.txt",
    ];

    public static void Save(EditableWeights weights, string sourceFolder, string outFolder, Action<JsonObject>? annotate = null)
    {
        string source = Path.GetFullPath(sourceFolder), target = Path.GetFullPath(outFolder);
        if (string.Equals(source.TrimEnd(Path.DirectorySeparatorChar), target.TrimEnd(Path.DirectorySeparatorChar), StringComparison.Ordinal))
        {
            throw new MinnowException($"{outFolder}: --out must not be the model's own folder.");
        }

        if (File.Exists(target))
        {
            throw new MinnowException($"{outFolder}: --out is a file; give a folder.");
        }

        if (File.Exists(Path.Combine(target, "model.safetensors.index.json")))
        {
            throw new MinnowException($"{outFolder}: holds a sharded checkpoint (model.safetensors.index.json); choose an empty folder.");
        }

        Directory.CreateDirectory(target);
        var config = ReadConfig(Path.Combine(source, "config.json"));
        WriteShapes(config, weights.Config);
        annotate?.Invoke(config);

        var writer = new SafetensorsWriter();
        foreach (var (name, t) in weights.All.OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            writer.AddWithoutCopy(name, t.Shape, t.Values, t.StoreAs);
        }

        writer.AddMetadata("format", "pt");
        writer.Save(Path.Combine(target, "model.safetensors"));
        AtomicFile.WriteAllText(Path.Combine(target, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        foreach (string file in CopiedFiles)
        {
            string from = Path.Combine(source, file);
            if (File.Exists(from))
            {
                AtomicFile.Copy(from, Path.Combine(target, file));
            }
        }
    }

    private static JsonObject ReadConfig(string path)
    {
        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: file not found (pruning writes a Hugging Face folder and starts from one).");
        }

        return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new MinnowException($"{path}: not a JSON object.");
    }

    /// <summary>Records per-layer head counts and MLP widths (removing stale ones when the model is uniform).</summary>
    public static void WriteShapes(JsonObject config, ModelConfig c)
    {
        Set(config, "minnow_layer_heads", c.LayerHeads);
        Set(config, "minnow_layer_kv_heads", c.Architecture == Architecture.Llama ? c.LayerKvHeads : null);
        Set(config, "minnow_layer_intermediate", c.LayerIntermediate);
        if (c.HasPerLayerShapes && c.Architecture == Architecture.Llama && !config.ContainsKey("head_dim"))
        {
            config["head_dim"] = c.HeadDim;
        }
    }

    private static void Set(JsonObject config, string key, int[]? values)
    {
        if (values is null)
        {
            config.Remove(key);
        }
        else
        {
            config[key] = new JsonArray(values.Select(v => (JsonNode)v).ToArray());
        }
    }
}
