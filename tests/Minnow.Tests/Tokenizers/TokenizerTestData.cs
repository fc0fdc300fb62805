using System.Text;
using System.Text.Json;
using Minnow.Formats.Gguf;
using Minnow.Tokenizers;

namespace Minnow.Tests.Tokenizers;

/// <summary>Shared test data for tokenizer tests (all under ../shared; null/empty when the folder is absent).</summary>
internal static class TokenizerTestData
{
    private static readonly Dictionary<string, TextTokenizer> Cache = [];
    private static string? _wiki;

    public static string? VocabFolder => SharedData.Root is null ? null : SharedData.Path("tokenizers", "llama.cpp-vocab");

    public static string? SmolLM2Folder => SharedData.Root is null ? null : SharedData.Path("tokenizers", "smollm2-135m");

    public static string? WikiText => SharedData.Root is null ? null : _wiki ??= File.ReadAllText(SharedData.Path("corpora", "wikitext-2-raw", "wiki.test.raw"));

    public static string GgufPath(string vocab) => Path.Combine(VocabFolder!, $"ggml-vocab-{vocab}.gguf");

    /// <summary>The tokenizer of a llama.cpp vocabulary file (cached: tokenizers are immutable and thread-safe).</summary>
    public static TextTokenizer Gguf(string vocab) => Cached("gguf:" + vocab, () => TokenizerLoader.FromGguf(GgufFile.ReadMetadata(GgufPath(vocab))));

    public static TextTokenizer SmolLM2() => Cached("smollm2", () => TokenizerLoader.Load(SmolLM2Folder!));

    public static TextTokenizer Cached(string key, Func<TextTokenizer> create)
    {
        lock (Cache)
        {
            if (!Cache.TryGetValue(key, out var t))
            {
                t = create();
                Cache[key] = t;
            }

            return t;
        }
    }

    /// <summary>
    /// llama.cpp's test-tokenizer-0 vectors: the texts of <c>*.inp</c> split on "\n__ggml_vocab_test__\n" and the
    /// expected ids of <c>*.out</c>, one line per text.
    /// </summary>
    public static List<(string Text, int[] Ids)> Vectors(string vocab)
    {
        string raw = File.ReadAllText(GgufPath(vocab) + ".inp", Encoding.UTF8);
        const string separator = "\n__ggml_vocab_test__\n";
        var texts = new List<string>();
        int pos = 0;
        while (true)
        {
            int next = raw.IndexOf(separator, pos, StringComparison.Ordinal);
            if (next < 0)
            {
                break;
            }

            texts.Add(raw[pos..next]);
            pos = next + separator.Length;
        }

        string[] lines = File.ReadAllLines(GgufPath(vocab) + ".out");
        Assert.Equal(texts.Count, lines.Length);
        return [.. texts.Select((t, i) => (t, lines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray()))];
    }

    public static string Show(string text) => JsonSerializer.Serialize(text);
}
