using System.Text.Json;
using Minnow.Formats;
using Minnow.Tensors;

namespace Minnow.Formats.Safetensors;

/// <summary>
/// The weights of a Hugging Face checkpoint folder: <c>model.safetensors</c>, or the shards listed in
/// <c>model.safetensors.index.json</c>, or a single safetensors file given directly.
/// </summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    private readonly List<SafetensorsFile> _files;

    private SafetensorsCheckpoint(List<SafetensorsFile> files, Dictionary<string, Tensor> tensors)
    {
        _files = files;
        Tensors = tensors;
    }

    public IReadOnlyDictionary<string, Tensor> Tensors { get; }

    public IReadOnlyList<string> Files => _files.ConvertAll(f => f.Path);

    public long TotalBytes => _files.Sum(f => f.Length);

    /// <summary>Opens the weights of a folder (or one .safetensors file).</summary>
    public static SafetensorsCheckpoint Open(string pathOrFolder)
    {
        if (File.Exists(pathOrFolder))
        {
            return FromFiles([pathOrFolder]);
        }

        string index = Path.Combine(pathOrFolder, "model.safetensors.index.json");
        string single = Path.Combine(pathOrFolder, "model.safetensors");
        if (File.Exists(single))
        {
            return FromFiles([single]);
        }

        if (File.Exists(index))
        {
            return FromIndex(index);
        }

        throw new MinnowException($"{pathOrFolder}: no model.safetensors or model.safetensors.index.json found.");
    }

    /// <summary>Opens the weights among a model's files (a folder, or a decrypted sealed package).</summary>
    public static SafetensorsCheckpoint Open(IModelFiles files)
    {
        const string Single = "model.safetensors", Index = "model.safetensors.index.json";
        if (files.Contains(Single))
        {
            return FromOpened([Single], files.DisplayName, name => SafetensorsFile.Open(files.Open(name)));
        }

        if (files.Contains(Index))
        {
            var (shards, expected) = ReadIndex(files.ReadAllBytes(Index), files.DisplayName(Index));
            var checkpoint = FromOpened(shards, files.DisplayName, name => SafetensorsFile.Open(files.Open(name)));
            CheckIndex(checkpoint, expected, files.DisplayName(Index));
            return checkpoint;
        }

        throw new MinnowException($"{files.Location}: no model.safetensors or model.safetensors.index.json found.");
    }

    private static SafetensorsCheckpoint FromIndex(string indexPath)
    {
        string folder = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        var (shardNames, expected) = ReadIndex(File.ReadAllBytes(indexPath), indexPath);
        var checkpoint = FromFiles(shardNames.Select(s => Path.Combine(folder, s)).ToList());
        CheckIndex(checkpoint, expected, indexPath);
        return checkpoint;
    }

    private static (List<string> Shards, Dictionary<string, string> Expected) ReadIndex(byte[] json, string indexPath)
    {
        var shardNames = new SortedSet<string>(StringComparer.Ordinal);
        var expected = new Dictionary<string, string>(StringComparer.Ordinal);
        using (var doc = JsonInput.Parse(json, indexPath))
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            {
                throw new MinnowException($"{indexPath}: no weight_map object in the index.");
            }

            foreach (var entry in map.EnumerateObject())
            {
                string shard = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString()! : "";
                if (shard.Length == 0 || shard.Contains('/') || shard.Contains('\\') || shard is "." or "..")
                {
                    throw new MinnowException($"{indexPath}: shard name '{SafeText.Of(shard)}' of tensor '{SafeText.Of(entry.Name)}' must be a file name in the same folder.");
                }

                shardNames.Add(shard);
                expected[entry.Name] = shard;
            }
        }

        return (shardNames.ToList(), expected);
    }

    private static void CheckIndex(SafetensorsCheckpoint checkpoint, Dictionary<string, string> expected, string indexPath)
    {
        foreach (var (tensor, shard) in expected)
        {
            if (!checkpoint.Tensors.ContainsKey(tensor))
            {
                checkpoint.Dispose();
                throw new MinnowException($"{indexPath}: tensor '{tensor}' is listed in shard {shard} but is not in it.");
            }
        }
    }

    private static SafetensorsCheckpoint FromFiles(List<string> paths) => FromOpened(paths, p => p, SafetensorsFile.Open);

    private static SafetensorsCheckpoint FromOpened(List<string> paths, Func<string, string> displayName, Func<string, SafetensorsFile> open)
    {
        var files = new List<SafetensorsFile>();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (string path in paths)
            {
                var file = open(path);
                files.Add(file);
                foreach (var (name, tensor) in file.Tensors)
                {
                    if (!tensors.TryAdd(name, tensor))
                    {
                        throw new MinnowException($"{displayName(path)}: tensor '{name}' also appears in another shard.");
                    }
                }
            }
        }
        catch
        {
            files.ForEach(f => f.Dispose());
            throw;
        }

        return new SafetensorsCheckpoint(files, tensors);
    }

    public void Dispose() => _files.ForEach(f => f.Dispose());
}
