using Minnow.Tensors;

namespace Minnow.Formats;

/// <summary>
/// The files that make up a model, by name (<c>config.json</c>, <c>model.safetensors</c>, <c>tokenizer.json</c>,
/// ...): a folder on disk, or a sealed package decrypted into anonymous memory. Loaders read through this so that
/// a decrypted model never has to be written to a file.
/// </summary>
public interface IModelFiles : IDisposable
{
    /// <summary>Where the files come from (a folder, or the package file), for messages.</summary>
    string Location { get; }

    /// <summary>The file names (no folders), in ordinal order.</summary>
    IReadOnlyList<string> Names { get; }

    bool Contains(string name);

    /// <summary>The size of the file in bytes.</summary>
    long SizeOf(string name);

    /// <summary>The file's bytes as a read-only view (a memory map, or anonymous memory); the caller disposes it.</summary>
    MappedFile Open(string name);

    /// <summary>A copy of the file's bytes (for small files: JSON, tokenizers).</summary>
    byte[] ReadAllBytes(string name);

    /// <summary>How a file is named in messages: its full path, or "package!name".</summary>
    string DisplayName(string name);
}

/// <summary>A model's files in a folder on disk (the files directly inside it).</summary>
public sealed class FolderModelFiles : IModelFiles
{
    private readonly string[] _names;

    /// <summary>The files directly inside <paramref name="folder"/>, or only <paramref name="only"/> among them.</summary>
    public FolderModelFiles(string folder, IEnumerable<string>? only = null)
    {
        Location = Path.GetFullPath(folder);
        if (!Directory.Exists(Location))
        {
            throw new MinnowException($"{folder}: no such folder.");
        }

        var all = Directory.GetFiles(Location).Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal).ToArray();
        _names = only is null ? all : all.Intersect(only, StringComparer.Ordinal).ToArray();
    }

    public string Location { get; }

    public IReadOnlyList<string> Names => _names;

    public bool Contains(string name) => Array.IndexOf(_names, name) >= 0 && File.Exists(Path.Combine(Location, name));

    public long SizeOf(string name) => new FileInfo(PathOf(name)).Length;

    public MappedFile Open(string name) => MappedFile.Open(PathOf(name));

    public byte[] ReadAllBytes(string name)
    {
        string path = PathOf(name);
        return File.Exists(path) ? File.ReadAllBytes(path) : throw new MinnowException($"{path}: file not found.");
    }

    public string DisplayName(string name) => Path.Combine(Location, name);

    public void Dispose()
    {
    }

    /// <summary>A file name without any folder part (what a model's file set may hold).</summary>
    public static bool IsPlainName(string name) =>
        name.Length > 0 && name != "." && name != ".." && name.IndexOfAny(['/', '\\', '\0']) < 0;

    private string PathOf(string name) => IsPlainName(name)
        ? Path.Combine(Location, name)
        : throw new MinnowException($"'{name}' is not a file name (folders are not allowed).");
}
