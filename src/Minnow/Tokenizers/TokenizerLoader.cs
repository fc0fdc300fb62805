using Minnow.Formats;
using Minnow.Formats.Gguf;
using Minnow.Formats.Llama2c;

namespace Minnow.Tokenizers;

/// <summary>
/// Finds and loads a model's tokenizer: a Hugging Face model folder's <c>tokenizer.json</c> (with
/// <c>tokenizer_config.json</c>, <c>config.json</c>, <c>generation_config.json</c> and <c>chat_template.jinja</c>
/// when present), the vocabulary inside a GGUF file, or a llama2.c <c>tokenizer.bin</c>.
/// </summary>
public static class TokenizerLoader
{
    public const string TokenizerJson = "tokenizer.json";

    /// <summary>
    /// Loads a tokenizer from a path: a model folder (its tokenizer.json), a tokenizer.json file, a .gguf file or a
    /// llama2.c tokenizer.bin (<paramref name="vocabSize"/>: the model's vocabulary size, for tokenizer.bin only).
    /// </summary>
    public static TextTokenizer Load(string path, int? vocabSize = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path))
        {
            return LoadFromFolder(path);
        }

        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: no such file or folder.");
        }

        switch (Sniff(path))
        {
            case FileKind.Gguf:
                return FromGguf(GgufFile.ReadMetadata(path));
            case FileKind.Json:
                return FromTokenizerJson(path);
            default:
                if (path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase))
                {
                    return Llama2cTokenizerFile.Load(path, vocabSize);
                }

                throw new MinnowException($"{path}: not a tokenizer (expected a tokenizer.json, a .gguf file or a llama2.c tokenizer.bin).");
        }
    }

    /// <summary>Loads the tokenizer.json of a model folder, or returns null when the folder has none.</summary>
    public static TextTokenizer? TryLoadFromFolder(string folder)
    {
        string path = Path.Combine(folder, TokenizerJson);
        return File.Exists(path) ? FromTokenizerJson(path) : null;
    }

    /// <summary>
    /// Loads the tokenizer.json among a model's files (with the config files beside it), or returns null when there
    /// is none.
    /// </summary>
    public static TextTokenizer? TryLoadFrom(IModelFiles files)
    {
        if (!files.Contains(TokenizerJson))
        {
            return null;
        }

        string? Sibling(string name) => files.Contains(name) ? System.Text.Encoding.UTF8.GetString(files.ReadAllBytes(name)) : null;
        return HfTokenizerJson.Parse(files.ReadAllBytes(TokenizerJson), files.DisplayName(TokenizerJson), Sibling("tokenizer_config.json"), Sibling("config.json"),
            Sibling("generation_config.json"), Sibling("chat_template.jinja"));
    }

    /// <summary>Loads the tokenizer.json of a model folder; throws a <see cref="MinnowException"/> when it has none.</summary>
    public static TextTokenizer LoadFromFolder(string folder) => TryLoadFromFolder(folder)
        ?? throw new MinnowException($"{folder}: no tokenizer.json found; pass --tokenizer or use a model folder that has one.");

    /// <summary>Loads a Hugging Face tokenizer.json (and the config files beside it).</summary>
    public static TextTokenizer FromTokenizerJson(string path) => HfTokenizerJson.Load(path);

    /// <summary>Builds a tokenizer from tokenizer.json content (and optional tokenizer_config.json / config.json content).</summary>
    public static TextTokenizer FromTokenizerJson(byte[] tokenizerJson, string? tokenizerConfigJson = null, string? configJson = null, string source = TokenizerJson) =>
        HfTokenizerJson.Parse(tokenizerJson, source, tokenizerConfigJson, configJson);

    /// <summary>Builds the tokenizer stored in a GGUF file's metadata; throws when it has none.</summary>
    public static TextTokenizer FromGguf(GgufMetadata metadata) => GgufTokenizerBuilder.Build(metadata);

    /// <summary>Builds the tokenizer stored in a GGUF file; throws when it has none.</summary>
    public static TextTokenizer FromGguf(GgufFile file) => GgufTokenizerBuilder.Build(file.Metadata);

    /// <summary>Builds the tokenizer stored in a GGUF file, or returns null when the file has no vocabulary.</summary>
    public static TextTokenizer? TryFromGguf(GgufFile file) => HasVocabulary(file.Metadata) ? GgufTokenizerBuilder.Build(file.Metadata) : null;

    /// <summary>Whether GGUF metadata carries a vocabulary.</summary>
    public static bool HasVocabulary(GgufMetadata metadata) => GgufTokenizerBuilder.HasVocabulary(metadata);

    /// <summary>Reads a llama2.c tokenizer.bin (<paramref name="vocabSize"/> from the checkpoint header; null reads to the end).</summary>
    public static TextTokenizer FromLlama2c(string path, int? vocabSize = null) => Llama2cTokenizerFile.Load(path, vocabSize);

    private enum FileKind
    {
        Other,
        Gguf,
        Json,
    }

    private static FileKind Sniff(string path)
    {
        using var stream = File.OpenRead(path);
        Span<byte> head = stackalloc byte[16];
        int n = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        if (n >= 4 && head[0] == 'G' && head[1] == 'G' && head[2] == 'U' && head[3] == 'F')
        {
            return FileKind.Gguf;
        }

        for (int i = 0; i < n; i++)
        {
            byte b = head[i];
            if (b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n' or 0xEF or 0xBB or 0xBF)
            {
                continue;
            }

            return b == '{' ? FileKind.Json : FileKind.Other;
        }

        return FileKind.Other;
    }
}
