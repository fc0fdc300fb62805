using System.Text.Json.Nodes;
using Minnow.Formats.Safetensors;
using Minnow.Kernels;
using Minnow.Loading;
using Minnow.Tensors;
using Minnow.Training;

namespace Minnow.Models;

/// <summary>What <see cref="LoraMerge.Run"/> wrote.</summary>
public sealed record LoraMergeResult(string OutputFolder, int MergedLayers, long Parameters, long Bytes, bool TokenizerCopied);

/// <summary>
/// Merges a LoRA adapter into its base model: W' = W + scale·B·A for every adapted layer, every tensor converted to
/// float32, written as a Hugging Face folder (config.json, model.safetensors and, from a Hugging Face base, its
/// tokenizer files), each file atomically. A GGUF Llama base has its q/k rows put back in Hugging Face order.
/// </summary>
public static class LoraMerge
{
    private static readonly string[] TokenizerFiles =
        ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "tokenizer.model"];

    public static LoraMergeResult Run(string modelPath, string adapterFolder, string outputFolder, WorkerPool? pool = null)
    {
        using var loaded = LoadedModel.Open(modelPath, pool);
        var config = loaded.Config;
        using var adapter = LoraAdapter.Load(adapterFolder, config);
        if (config.RopeFrequencyFactors != null && config.RopeScaling is null)
        {
            throw new MinnowException($"{loaded.Path}: RoPE frequency factors from GGUF cannot be written as a Hugging Face config; merge into the Hugging Face original instead.");
        }

        if (Path.GetFullPath(outputFolder) == (Directory.Exists(loaded.Path) ? loaded.Path : Path.GetDirectoryName(loaded.Path)))
        {
            throw new MinnowException($"{outputFolder}: the output folder is the model's own folder; choose another --out.");
        }

        var writer = new SafetensorsWriter();
        writer.AddMetadata("format", "pt");
        int merged = 0;
        long parameters = 0;
        foreach (var (name, tensor) in loaded.Model.Weights.All.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            float[] values = tensor.ToFloatArray();
            parameters += values.Length;
            if (adapter.Modules.TryGetValue(name, out var module))
            {
                adapter.MergeInto(module, values, pool);
                merged++;
            }

            if (HuggingFaceRowOrder(config, name) is int[] order)
            {
                values = LoraAdapter.UnpermuteRows(values, order, tensor.Rank == 2 ? tensor.Columns : 1);
            }

            writer.Add(name, tensor.Shape, values);
        }

        Directory.CreateDirectory(outputFolder);
        string weightsPath = Path.Combine(outputFolder, "model.safetensors");
        writer.Save(weightsPath);
        bool tokenizerCopied = false;
        if (loaded.Format == ModelFormat.HuggingFace)
        {
            string folder = Directory.Exists(loaded.Path) ? loaded.Path : Path.GetDirectoryName(loaded.Path)!;
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!.AsObject();
            json["torch_dtype"] = "float32";
            AtomicFile.WriteAllText(Path.Combine(outputFolder, "config.json"), json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
            foreach (string file in TokenizerFiles)
            {
                string source = Path.Combine(folder, file);
                if (File.Exists(source))
                {
                    AtomicFile.Write(Path.Combine(outputFolder, file), s =>
                    {
                        using var input = File.OpenRead(source);
                        input.CopyTo(s);
                    });
                    tokenizerCopied |= file == "tokenizer.json";
                }
            }
        }
        else
        {
            AtomicFile.WriteAllText(Path.Combine(outputFolder, "config.json"), LlamaTrainingModel.ConfigJson(config with { RopeStyle = RopeStyle.RotateHalf }));
        }

        return new LoraMergeResult(Path.GetFullPath(outputFolder), merged, parameters, new FileInfo(weightsPath).Length, tokenizerCopied);
    }

    /// <summary>For q/k tensors of a model held in llama.cpp's interleaved-RoPE row order, that order; null otherwise.</summary>
    public static int[]? HuggingFaceRowOrder(ModelConfig c, string name)
    {
        if (!c.RopeStyle.HasInterleavedRows() || !name.StartsWith("model.layers.", StringComparison.Ordinal))
        {
            return null;
        }

        int dot = name.IndexOf('.', "model.layers.".Length);
        if (dot < 0 || !int.TryParse(name.AsSpan("model.layers.".Length, dot - "model.layers.".Length), out int layer))
        {
            return null;
        }

        return name.Contains(".self_attn.q_proj.", StringComparison.Ordinal) ? LoraAdapter.InterleavedRopeOrder(c.HeadsOf(layer), c.HeadDim, c.RotaryDim)
            : name.Contains(".self_attn.k_proj.", StringComparison.Ordinal) ? LoraAdapter.InterleavedRopeOrder(c.KvHeadsOf(layer), c.HeadDim, c.RotaryDim)
            : null;
    }
}
