using Minnow.Formats;
using Minnow.Formats.Gguf;
using Minnow.Formats.Llama2c;
using Minnow.Formats.Safetensors;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Loading;

/// <summary>The kind of file a model came from.</summary>
public enum ModelFormat
{
    HuggingFace,
    Gguf,
    Llama2c,
}

/// <summary>
/// Opens a model from a Hugging Face folder (config.json + safetensors, sharded or not), a .gguf file, or a
/// llama2.c .bin checkpoint. Weights stay memory-mapped.
/// </summary>
public static class ModelLoader
{
    public static ModelFormat DetectFormat(string path)
    {
        if (Directory.Exists(path))
        {
            return ModelFormat.HuggingFace;
        }

        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: no such file or folder.");
        }

        string ext = Path.GetExtension(path).ToLowerInvariant();
        if (ext == ".gguf")
        {
            return ModelFormat.Gguf;
        }

        if (ext == ".safetensors")
        {
            return ModelFormat.HuggingFace;
        }

        Span<byte> magic = stackalloc byte[4];
        using (var f = File.OpenRead(path))
        {
            if (f.Read(magic) == 4 && magic.SequenceEqual("GGUF"u8))
            {
                return ModelFormat.Gguf;
            }
        }

        return ModelFormat.Llama2c;
    }

    /// <summary>Loads the weights and config of a model (no tokenizer).</summary>
    public static TransformerModel LoadModel(string path, WorkerPool? pool = null) => LoadModel(path, pool, notes: null);

    /// <summary>
    /// Loads the weights and config of a model (no tokenizer), adding to <paramref name="notes"/> one line for
    /// anything done at load that the user should know of (GGUF tensors converted to F32, for instance).
    /// </summary>
    public static TransformerModel LoadModel(string path, WorkerPool? pool, ICollection<string>? notes)
    {
        switch (DetectFormat(path))
        {
            case ModelFormat.HuggingFace:
                {
                    string folder = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path))!;
                    var config = ModelConfig.FromHuggingFace(Path.Combine(folder, "config.json"));
                    var checkpoint = SafetensorsCheckpoint.Open(path);
                    var weights = new WeightSet(checkpoint.Tensors, path, checkpoint);
                    try
                    {
                        return ModelFactory.Create(config, weights, pool);
                    }
                    catch
                    {
                        weights.Dispose();
                        throw;
                    }
                }

            case ModelFormat.Gguf:
                {
                    return FromGguf(GgufFile.Open(path), pool, notes);
                }

            case ModelFormat.Llama2c:
                {
                    var (config, weights) = Llama2cCheckpoint.Open(path);
                    try
                    {
                        return ModelFactory.Create(config, weights, pool);
                    }
                    catch
                    {
                        weights.Dispose();
                        throw;
                    }
                }

            default:
                throw new MinnowException($"{path}: this format is not supported yet.");
        }
    }

    /// <summary>A model over an opened GGUF file; the file (or the weights that took it over) is disposed on failure.</summary>
    private static TransformerModel FromGguf(GgufFile file, WorkerPool? pool, ICollection<string>? notes)
    {
        WeightSet? weights = null;
        try
        {
            (var config, weights) = GgufModelReader.Read(file, notes);
            return ModelFactory.Create(config, weights, pool);
        }
        catch
        {
            if (weights != null)
            {
                weights.Dispose();
            }
            else
            {
                file.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// Which model a set of files holds, and its weights file: config.json makes a Hugging Face model (weights
    /// found by <see cref="SafetensorsCheckpoint"/>); otherwise exactly one .gguf, or one llama2.c .bin besides
    /// tokenizer.bin — the same rules as <see cref="LoadedModel.ResolveModelPath"/> for a folder.
    /// </summary>
    public static (ModelFormat Format, string? WeightsFile) DetectFormat(IModelFiles files)
    {
        if (files.Contains("config.json"))
        {
            return (ModelFormat.HuggingFace, null);
        }

        var ggufs = files.Names.Where(n => n.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)).ToList();
        if (ggufs.Count == 1)
        {
            return (ModelFormat.Gguf, ggufs[0]);
        }

        var bins = files.Names.Where(n => n.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) && !n.Equals("tokenizer.bin", StringComparison.OrdinalIgnoreCase)).ToList();
        if (ggufs.Count == 0 && bins.Count == 1)
        {
            return (ModelFormat.Llama2c, bins[0]);
        }

        throw new MinnowException($"{files.Location}: holds no model (no config.json, and no single .gguf or llama2.c .bin file).");
    }

    /// <summary>
    /// Loads the weights and config of the model among <paramref name="files"/> (a folder, or a decrypted sealed
    /// package), as <see cref="LoadModel(string, WorkerPool?, ICollection{string}?)"/> does for a path.
    /// </summary>
    public static TransformerModel LoadModel(IModelFiles files, WorkerPool? pool, ICollection<string>? notes)
    {
        var (format, weightsFile) = DetectFormat(files);
        switch (format)
        {
            case ModelFormat.HuggingFace:
                {
                    // The same checks as a config.json read from a folder (JsonInput): damage is one clear error.
                    string configName = files.DisplayName("config.json");
                    using var doc = Minnow.Formats.JsonInput.Parse(files.ReadAllBytes("config.json"), configName);
                    var config = ModelConfig.FromHuggingFace(doc.RootElement, configName);

                    var checkpoint = SafetensorsCheckpoint.Open(files);
                    var weights = new WeightSet(checkpoint.Tensors, files.Location, checkpoint);
                    try
                    {
                        return ModelFactory.Create(config, weights, pool);
                    }
                    catch
                    {
                        weights.Dispose();
                        throw;
                    }
                }

            case ModelFormat.Gguf:
                {
                    return FromGguf(GgufFile.Open(files.Open(weightsFile!)), pool, notes);
                }

            default:
                {
                    var (config, weights) = Llama2cCheckpoint.Open(files.Open(weightsFile!));
                    try
                    {
                        return ModelFactory.Create(config, weights, pool);
                    }
                    catch
                    {
                        weights.Dispose();
                        throw;
                    }
                }
        }
    }
}
