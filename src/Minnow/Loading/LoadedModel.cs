using Minnow.Formats;
using Minnow.Formats.Gguf;
using Minnow.Formats.Llama2c;
using Minnow.Models;
using Minnow.Tensors;
using Minnow.Tokenizers;

namespace Minnow.Loading;

/// <summary>How to open a sealed package: the key, and what the package must satisfy.</summary>
public sealed record PackageAccess(Sealing.IPackageKeyProvider? Key, Sealing.PackagePolicy Policy);

/// <summary>Facts about a loaded model, as <c>minnow info</c> shows them.</summary>
public sealed record ModelFacts
{
    /// <summary>The full path of the model file or folder.</summary>
    public required string Path { get; init; }

    public required ModelFormat Format { get; init; }

    public required Architecture Architecture { get; init; }

    /// <summary>The Hugging Face model_type (or its equivalent for GGUF / llama2.c).</summary>
    public required string ModelType { get; init; }

    public required long Parameters { get; init; }

    /// <summary>The storage type of the weights: "F32", "BF16", or "mixed: Q8_0 + F32" (largest share first).</summary>
    public required string DType { get; init; }

    /// <summary>Total size of the weight files on disk, in bytes.</summary>
    public required long WeightFileBytes { get; init; }

    /// <summary>The weight files (one, or the shards).</summary>
    public required IReadOnlyList<string> WeightFiles { get; init; }

    /// <summary>The longest sequence the model was trained for (max_position_embeddings).</summary>
    public required int ContextLength { get; init; }

    public required int Layers { get; init; }

    public required int HiddenSize { get; init; }

    public required int Heads { get; init; }

    public required int KvHeads { get; init; }

    public required int VocabSize { get; init; }

    /// <summary>What the tokenizer is ("byte-level BPE (tokenizer.json)", ...), or null when there is none.</summary>
    public string? TokenizerKind { get; init; }

    public int? TokenizerVocabSize { get; init; }

    /// <summary>
    /// One line for each thing done at load the user should know of, e.g. that GGUF tensors in a type Minnow has
    /// no kernels for (Q4_K, Q6_K, ...) were converted to F32 — <see cref="DType"/> then describes the weights in
    /// memory, not in the file. Empty when there is nothing to say.
    /// </summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>"kind, vocab N" or "none".</summary>
    public string TokenizerDescription => TokenizerKind is null ? "none" : $"{TokenizerKind}, vocab {TokenizerVocabSize}";

    public static string FormatName(ModelFormat format) => format switch
    {
        ModelFormat.HuggingFace => "safetensors (Hugging Face layout)",
        ModelFormat.Gguf => "GGUF",
        ModelFormat.Llama2c => "llama2.c checkpoint",
        _ => format.ToString(),
    };
}

/// <summary>
/// A model opened for use: its weights (memory-mapped), its tokenizer when one is found beside it, and the facts
/// <c>minnow info</c> reports. MODEL is a Hugging Face folder (config.json + safetensors, with tokenizer.json),
/// one .safetensors file inside such a folder, a .gguf file (tokenizer from its metadata), a llama2.c .bin
/// (tokenizer.bin beside it), or a folder holding exactly one .gguf or .bin model. Dispose releases everything.
/// </summary>
public sealed class LoadedModel : IDisposable
{
    private IModelFiles? _ownedFiles;

    private LoadedModel(string path, ModelFormat format, TransformerModel model, ITextTokenizer? tokenizer, ModelFacts facts)
    {
        Path = path;
        Format = format;
        Model = model;
        Tokenizer = tokenizer;
        Facts = facts;
    }

    /// <summary>The model file or folder actually opened (a folder holding one .gguf resolves to that file).</summary>
    public string Path { get; }

    public ModelFormat Format { get; }

    public TransformerModel Model { get; }

    public ModelConfig Config => Model.Config;

    /// <summary>The model's tokenizer, or null when none was found beside it.</summary>
    public ITextTokenizer? Tokenizer { get; }

    public ModelFacts Facts { get; }

    /// <summary>What was done at load that the user should know of (see <see cref="ModelFacts.Notes"/>); print each line.</summary>
    public IReadOnlyList<string> Notes => Facts.Notes;

    /// <summary>
    /// The files the model was opened from when it came from a set of files (a decrypted sealed package, see
    /// <see cref="Open(IModelFiles, WorkerPool?)"/>); null for a path.
    /// </summary>
    public IModelFiles? Files => _ownedFiles;

    /// <summary>
    /// Opens the model among <paramref name="files"/> (a folder, or a sealed package decrypted into memory) and
    /// takes ownership of them: disposing the model disposes the files. On failure the files are disposed too.
    /// </summary>
    public static LoadedModel Open(IModelFiles files, WorkerPool? pool = null)
    {
        ArgumentNullException.ThrowIfNull(files);
        TransformerModel? model = null;
        try
        {
            var (format, weightsFile) = ModelLoader.DetectFormat(files);
            var notes = new List<string>();
            model = ModelLoader.LoadModel(files, pool, notes);
            ITextTokenizer? tokenizer;
            string dtype = DescribeDTypes(model.Weights);
            List<string> weightFiles;
            switch (format)
            {
                case ModelFormat.Gguf:
                    using (var gguf = GgufFile.Open(files.Open(weightsFile!)))
                    {
                        tokenizer = TokenizerLoader.TryFromGguf(gguf);
                        dtype = gguf.Tensors.Any(t => t.Type.IsLoadOnly())
                            ? $"{dtype} (stored as {DescribeDTypes(gguf.Tensors)}, converted to F32 at load)"
                            : dtype;
                    }

                    weightFiles = [weightsFile!];
                    break;
                case ModelFormat.Llama2c:
                    tokenizer = files.Contains("tokenizer.bin")
                        ? Llama2cTokenizerFile.Parse(files.ReadAllBytes("tokenizer.bin"), files.DisplayName("tokenizer.bin"), model.Config.VocabSize)
                        : null;
                    weightFiles = [weightsFile!];
                    break;
                default:
                    tokenizer = TokenizerLoader.TryLoadFrom(files);
                    weightFiles = files.Names.Where(n => n.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)).ToList();
                    break;
            }

            var facts = new ModelFacts
            {
                Path = files.Location,
                Format = format,
                Architecture = model.Config.Architecture,
                ModelType = model.Config.ModelType,
                Parameters = model.Weights.ParameterCount,
                DType = dtype,
                WeightFiles = weightFiles.ConvertAll(files.DisplayName),
                WeightFileBytes = weightFiles.Sum(files.SizeOf),
                ContextLength = model.Config.MaxPositions,
                Layers = model.Config.Layers,
                HiddenSize = model.Config.HiddenSize,
                Heads = model.Config.Heads,
                KvHeads = model.Config.KvHeads,
                VocabSize = model.Config.VocabSize,
                TokenizerKind = tokenizer is null ? null : (tokenizer as TextTokenizer)?.Description ?? tokenizer.GetType().Name,
                TokenizerVocabSize = tokenizer?.VocabSize,
                Notes = notes,
            };
            return new LoadedModel(files.Location, format, model, tokenizer, facts) { _ownedFiles = files };
        }
        catch
        {
            model?.Dispose();
            files.Dispose();
            throw;
        }
    }

    public static LoadedModel Open(string path, WorkerPool? pool = null) => Open(path, pool, access: null);

    /// <summary>
    /// Opens a model path, which may be a sealed package: then <paramref name="access"/> must hold its key, and the
    /// package is verified (signature, manifest, key, expiry, version) before it is decrypted into memory.
    /// </summary>
    public static LoadedModel Open(string path, WorkerPool? pool, PackageAccess? access)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            throw new MinnowException("the model path is empty.");
        }

        if (Sealing.SealedPackage.IsPackage(path))
        {
            return Open(OpenPackage(path, access), pool);
        }

        string resolved = ResolveModelPath(System.IO.Path.GetFullPath(path));
        var format = ModelLoader.DetectFormat(resolved);
        var notes = new List<string>();
        var model = ModelLoader.LoadModel(resolved, pool, notes);
        try
        {
            var files = WeightFiles(resolved, format);
            var tokenizer = FindTokenizer(resolved, format, model.Config.VocabSize);
            var facts = new ModelFacts
            {
                Path = resolved,
                Format = format,
                Architecture = model.Config.Architecture,
                ModelType = model.Config.ModelType,
                Parameters = model.Weights.ParameterCount,
                DType = DescribeDTypes(model.Weights, format == ModelFormat.Gguf ? resolved : null),
                WeightFiles = files,
                WeightFileBytes = files.Sum(f => new FileInfo(f).Length),
                ContextLength = model.Config.MaxPositions,
                Layers = model.Config.Layers,
                HiddenSize = model.Config.HiddenSize,
                Heads = model.Config.Heads,
                KvHeads = model.Config.KvHeads,
                VocabSize = model.Config.VocabSize,
                TokenizerKind = tokenizer is null ? null : (tokenizer as TextTokenizer)?.Description ?? tokenizer.GetType().Name,
                TokenizerVocabSize = tokenizer?.VocabSize,
                Notes = notes,
            };
            return new LoadedModel(resolved, format, model, tokenizer, facts);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Verifies and decrypts the sealed package at <paramref name="path"/> with the key in <paramref name="access"/>
    /// (one clear error when there is none).
    /// </summary>
    public static Sealing.DecryptedPackage OpenPackage(string path, PackageAccess? access)
    {
        if (access?.Key is null)
        {
            throw new MinnowException($"{path}: a sealed package needs its key (--key-file K, or ${Sealing.PackageKey.EnvironmentVariable}).");
        }

        return Sealing.SealedPackage.Open(path, access.Key, access.Policy);
    }

    /// <summary>
    /// The files to seal for a model path: every file of a model folder; a .gguf file alone; a llama2.c .bin with
    /// the tokenizer.bin beside it. The files are only read.
    /// </summary>
    public static IModelFiles FilesToSeal(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(full) && File.Exists(System.IO.Path.Combine(full, LoraConfig.ConfigFile)))
        {
            // A PEFT adapter folder: its config and weights only (a finetune's training log stays out).
            return new FolderModelFiles(full, [LoraConfig.ConfigFile, LoraConfig.WeightsFile]);
        }

        if (Directory.Exists(full))
        {
            _ = ModelLoader.DetectFormat(new FolderModelFiles(full));
            return new FolderModelFiles(full);
        }

        if (!File.Exists(full))
        {
            throw new MinnowException($"{path}: no such file or folder.");
        }

        string folder = System.IO.Path.GetDirectoryName(full)!;
        string name = System.IO.Path.GetFileName(full);
        return ModelLoader.DetectFormat(full) switch
        {
            ModelFormat.HuggingFace => new FolderModelFiles(folder),
            ModelFormat.Gguf => new FolderModelFiles(folder, [name]),
            _ => new FolderModelFiles(folder, [name, "tokenizer.bin"]),
        };
    }

    /// <summary>
    /// The tokenizer that belongs to a model: tokenizer.json in a Hugging Face folder, the vocabulary inside a
    /// GGUF file, or tokenizer.bin beside a llama2.c checkpoint; null when there is none.
    /// </summary>
    public static ITextTokenizer? FindTokenizer(string path, ModelFormat format, int vocabSize)
    {
        switch (format)
        {
            case ModelFormat.HuggingFace:
                return TokenizerLoader.TryLoadFromFolder(Directory.Exists(path) ? path : System.IO.Path.GetDirectoryName(path)!);

            case ModelFormat.Gguf:
                var metadata = GgufFile.ReadMetadata(path);
                return TokenizerLoader.HasVocabulary(metadata) ? TokenizerLoader.FromGguf(metadata) : null;

            case ModelFormat.Llama2c:
                string bin = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(path)!, "tokenizer.bin");
                return File.Exists(bin) ? TokenizerLoader.FromLlama2c(bin, vocabSize) : null;

            default:
                return null;
        }
    }

    /// <summary>
    /// A folder without config.json that holds exactly one .gguf (or one llama2.c .bin) stands for that file.
    /// </summary>
    public static string ResolveModelPath(string path)
    {
        if (!Directory.Exists(path) || File.Exists(System.IO.Path.Combine(path, "config.json")))
        {
            return path;
        }

        var ggufs = Directory.GetFiles(path, "*.gguf");
        if (ggufs.Length == 1)
        {
            return ggufs[0];
        }

        var bins = Directory.GetFiles(path, "*.bin").Where(f => !System.IO.Path.GetFileName(f).Equals("tokenizer.bin", StringComparison.OrdinalIgnoreCase)).ToArray();
        if (ggufs.Length == 0 && bins.Length == 1)
        {
            return bins[0];
        }

        if (ggufs.Length > 1)
        {
            throw new MinnowException($"{path}: the folder holds {ggufs.Length} .gguf files and no config.json; pass the one to use.");
        }

        throw new MinnowException($"{path}: not a model folder (no config.json, and no single .gguf or llama2.c .bin file in it).");
    }

    /// <summary>"F32", or "mixed: Q8_0 + F32" listing the storage types by their share of the bytes.</summary>
    public static string DescribeDTypes(WeightSet weights) => DescribeDTypes(weights.All.Values);

    /// <summary>
    /// As <see cref="DescribeDTypes(WeightSet)"/>; when the weights came from the GGUF file at
    /// <paramref name="ggufPath"/> and some were converted at load, also what the file stores:
    /// "mixed: F32 + Q8_0 (stored as mixed: Q4_K + Q6_K + F32, converted to F32 at load)".
    /// </summary>
    public static string DescribeDTypes(WeightSet weights, string? ggufPath)
    {
        string inMemory = DescribeDTypes(weights);
        if (ggufPath == null)
        {
            return inMemory;
        }

        using var file = GgufFile.Open(ggufPath);
        return file.Tensors.Any(t => t.Type.IsLoadOnly())
            ? $"{inMemory} (stored as {DescribeDTypes(file.Tensors)}, converted to F32 at load)"
            : inMemory;
    }

    private static string DescribeDTypes(IEnumerable<Tensor> tensors)
    {
        var types = tensors
            .GroupBy(t => t.Type)
            .Select(g => (Type: g.Key, Bytes: g.Sum(t => t.ByteSize)))
            .OrderByDescending(g => g.Bytes)
            .ThenBy(g => g.Type)
            .Select(g => g.Type.Name())
            .ToList();
        return types.Count switch
        {
            0 => "none",
            1 => types[0],
            _ => "mixed: " + string.Join(" + ", types),
        };
    }

    private static List<string> WeightFiles(string path, ModelFormat format)
    {
        if (File.Exists(path))
        {
            return [path];
        }

        if (format == ModelFormat.HuggingFace)
        {
            string single = System.IO.Path.Combine(path, "model.safetensors");
            if (File.Exists(single))
            {
                return [single];
            }

            string index = System.IO.Path.Combine(path, "model.safetensors.index.json");
            if (File.Exists(index))
            {
                using var doc = Formats.JsonInput.ParseFile(index);
                return doc.RootElement.GetProperty("weight_map").EnumerateObject()
                    .Select(e => System.IO.Path.Combine(path, e.Value.ValueKind == System.Text.Json.JsonValueKind.String ? e.Value.GetString()! : ""))
                    .Distinct(StringComparer.Ordinal)
                    .Where(File.Exists)
                    .ToList();
            }
        }

        return [];
    }

    public void Dispose()
    {
        Model.Dispose();
        _ownedFiles?.Dispose();
        _ownedFiles = null;
    }
}
