using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Microsoft.ML.Tokenizers;

namespace Minnow.Tokenizers;

/// <summary>
/// Byte-level BPE merges by Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/> (GPT-2, GPT-NeoX, SmolLM, Qwen2):
/// Minnow does the added-token matching, normalization and pre-tokenization (which the library cannot read from a
/// tokenizer.json or GGUF file) and hands each word to the library. Cases the library does not cover (byte fallback,
/// unknown tokens, <c>ignore_merges</c>) use <see cref="BpeModel"/>, which gives identical ids where both apply.
/// </summary>
internal sealed class LibraryBpeModel : WordEncoder
{
    private const int MaxCachedWordLength = 64;
    private const int MaxCacheEntries = 200_000;

    private readonly BpeTokenizer _tokenizer;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheLookup;

    private LibraryBpeModel(BpeTokenizer tokenizer)
    {
        _tokenizer = tokenizer;
        _cacheLookup = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    /// <summary>
    /// Creates the library tokenizer for a plain byte-level vocabulary (merges without spaces), or returns null when
    /// the library does not cover the case. Like Hugging Face, the library drops bytes the vocabulary cannot spell
    /// (SmolLM2 has no token for some control bytes).
    /// </summary>
    public static LibraryBpeModel? TryCreate(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges)
    {
        var lines = new List<string>(merges.Count);
        foreach (var (left, right) in merges)
        {
            if (left.Contains(' ') || right.Contains(' ') || left.Length == 0 || right.Length == 0)
            {
                return null;
            }

            lines.Add(left + " " + right);
        }

        try
        {
            var options = new BpeOptions(vocab) { Merges = lines, ByteLevel = true };
            return new LibraryBpeModel(BpeTokenizer.Create(options));
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or KeyNotFoundException or InvalidDataException)
        {
            return null;
        }
    }

    public override void Encode(ReadOnlySpan<char> word, List<int> output)
    {
        if (word.Length == 0)
        {
            return;
        }

        if (word.Length > MaxCachedWordLength)
        {
            output.AddRange(_tokenizer.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false));
            return;
        }

        if (_cacheLookup.TryGetValue(word, out int[]? cached))
        {
            output.AddRange(cached);
            return;
        }

        int before = output.Count;
        output.AddRange(_tokenizer.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false));
        if (_cache.Count >= MaxCacheEntries)
        {
            _cache.Clear();
        }

        _cache.TryAdd(word.ToString(), [.. CollectionsMarshal.AsSpan(output)[before..]]);
    }
}
