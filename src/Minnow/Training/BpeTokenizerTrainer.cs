using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;
using Minnow.Formats.Safetensors;
using Minnow.Tokenizers;

namespace Minnow.Training;

/// <summary>
/// A byte-level BPE tokenizer as GPT-2 defines it: text is split by GPT-2's pre-tokenization regex, each piece's
/// UTF-8 bytes are mapped to printable characters (bytes→unicode), and merges are applied by rank. Learned by
/// <see cref="BpeTokenizerTrainer"/>; saved as a standard Hugging Face <c>tokenizer.json</c> (model BPE with vocab
/// and merges, ByteLevel pre-tokenizer and decoder, special tokens as added tokens).
/// </summary>
public sealed partial class ByteLevelBpe
{
    /// <summary>GPT-2's pre-tokenization pattern.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly string[] _tokens;
    private readonly Dictionary<string, int> _ids;
    private readonly Dictionary<(int, int), (int Rank, int Id)> _merges = [];
    private readonly Dictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly int[] _byteIds = new int[256];

    public ByteLevelBpe(IReadOnlyList<string> tokens, IReadOnlyList<(string Left, string Right)> merges, IReadOnlyList<string> specialTokens)
    {
        _tokens = tokens.ToArray();
        _ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < _tokens.Length; i++)
        {
            if (!_ids.TryAdd(_tokens[i], i))
            {
                throw new MinnowException($"tokenizer: token '{_tokens[i]}' appears twice in the vocabulary.");
            }
        }

        for (int b = 0; b < 256; b++)
        {
            _byteIds[b] = _ids.TryGetValue(ByteToChar[b].ToString(), out int id) ? id
                : throw new MinnowException($"tokenizer: the vocabulary lacks byte {b} (a byte-level BPE needs all 256).");
        }

        Merges = merges.ToArray();
        for (int rank = 0; rank < Merges.Count; rank++)
        {
            var (l, r) = Merges[rank];
            if (!_ids.TryGetValue(l, out int a) || !_ids.TryGetValue(r, out int b) || !_ids.TryGetValue(l + r, out int merged))
            {
                throw new MinnowException($"tokenizer: merge '{l} {r}' uses a token missing from the vocabulary.");
            }

            _merges.TryAdd((a, b), (rank, merged));
        }

        SpecialTokens = specialTokens.ToArray();
        foreach (string s in SpecialTokens)
        {
            if (!_ids.ContainsKey(s))
            {
                throw new MinnowException($"tokenizer: special token '{s}' is not in the vocabulary.");
            }
        }
    }

    /// <summary>GPT-2's reversible map from bytes to printable characters (printable Latin-1 map to themselves).</summary>
    public static readonly char[] ByteToChar = [.. Enumerable.Range(0, 256).Select(b => ByteLevelMapping.ByteToChar((byte)b))];

    public int VocabSize => _tokens.Length;

    public IReadOnlyList<string> Tokens => _tokens;

    public IReadOnlyList<(string Left, string Right)> Merges { get; }

    public IReadOnlyList<string> SpecialTokens { get; }

    public int? TokenId(string token) => _ids.TryGetValue(token, out int id) ? id : null;

    [GeneratedRegex(Gpt2Pattern)]
    public static partial Regex PreTokenizer();

    /// <summary>The byte-level form of a piece of text (its UTF-8 bytes as mapped characters).</summary>
    public static string ToByteLevel(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++)
        {
            chars[i] = ByteToChar[bytes[i]];
        }

        return new string(chars);
    }

    /// <summary>Token ids of <paramref name="text"/>; special tokens written literally in it become their ids.</summary>
    public int[] Encode(string text)
    {
        var output = new List<int>();
        int start = 0;
        while (start < text.Length)
        {
            int next = text.Length, which = -1;
            for (int s = 0; s < SpecialTokens.Count; s++)
            {
                int at = text.IndexOf(SpecialTokens[s], start, StringComparison.Ordinal);
                if (at >= 0 && at < next)
                {
                    next = at;
                    which = s;
                }
            }

            EncodeOrdinary(text.AsSpan(start, next - start), output);
            if (which < 0)
            {
                break;
            }

            output.Add(_ids[SpecialTokens[which]]);
            start = next + SpecialTokens[which].Length;
        }

        return output.ToArray();
    }

    private void EncodeOrdinary(ReadOnlySpan<char> text, List<int> output)
    {
        foreach (var m in PreTokenizer().EnumerateMatches(text))
        {
            string piece = text.Slice(m.Index, m.Length).ToString();
            if (!_cache.TryGetValue(piece, out var ids))
            {
                ids = EncodePiece(piece);
                if (_cache.Count < 1_000_000)
                {
                    _cache[piece] = ids;
                }
            }

            output.AddRange(ids);
        }
    }

    /// <summary>GPT-2's bpe(): merge the lowest-ranked adjacent pair until no pair has a merge.</summary>
    private int[] EncodePiece(string piece)
    {
        var bytes = Encoding.UTF8.GetBytes(piece);
        var symbols = new List<int>(bytes.Length);
        foreach (byte b in bytes)
        {
            symbols.Add(_byteIds[b]);
        }

        while (symbols.Count > 1)
        {
            int bestRank = int.MaxValue, bestId = -1;
            (int, int) bestPair = default;
            for (int i = 0; i < symbols.Count - 1; i++)
            {
                if (_merges.TryGetValue((symbols[i], symbols[i + 1]), out var m) && m.Rank < bestRank)
                {
                    bestRank = m.Rank;
                    bestId = m.Id;
                    bestPair = (symbols[i], symbols[i + 1]);
                }
            }

            if (bestId < 0)
            {
                break;
            }

            var merged = new List<int>(symbols.Count);
            for (int i = 0; i < symbols.Count; i++)
            {
                if (i < symbols.Count - 1 && (symbols[i], symbols[i + 1]) == bestPair)
                {
                    merged.Add(bestId);
                    i++;
                }
                else
                {
                    merged.Add(symbols[i]);
                }
            }

            symbols = merged;
        }

        return symbols.ToArray();
    }

    /// <summary>The text of token ids (bytes that do not form valid UTF-8 become U+FFFD).</summary>
    public string Decode(IEnumerable<int> ids)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            string token = _tokens[id];
            if (SpecialTokens.Contains(token))
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(token));
                continue;
            }

            foreach (char ch in token)
            {
                bytes.Add(CharToByte(ch));
            }
        }

        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    private static byte CharToByte(char c)
    {
        if (c < 256 && ByteToChar[c] == c)
        {
            return (byte)c;
        }

        int index = Array.IndexOf(ByteToChar, c);
        return index >= 0 ? (byte)index : throw new MinnowException($"tokenizer: character U+{(int)c:X4} is not byte-level.");
    }

    // ---- tokenizer.json ----

    /// <summary>The Hugging Face tokenizer.json text.</summary>
    public string ToJson()
    {
        using var buffer = new MemoryStream();
        var options = new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        using (var json = new Utf8JsonWriter(buffer, options))
        {
            json.WriteStartObject();
            json.WriteString("version", "1.0");
            json.WriteNull("truncation");
            json.WriteNull("padding");
            json.WriteStartArray("added_tokens");
            foreach (string s in SpecialTokens)
            {
                json.WriteStartObject();
                json.WriteNumber("id", _ids[s]);
                json.WriteString("content", s);
                json.WriteBoolean("single_word", false);
                json.WriteBoolean("lstrip", false);
                json.WriteBoolean("rstrip", false);
                json.WriteBoolean("normalized", false);
                json.WriteBoolean("special", true);
                json.WriteEndObject();
            }

            json.WriteEndArray();
            json.WriteNull("normalizer");
            WriteByteLevel(json, "pre_tokenizer", addPrefixSpace: false, trimOffsets: true);
            WriteByteLevel(json, "post_processor", addPrefixSpace: true, trimOffsets: false);
            WriteByteLevel(json, "decoder", addPrefixSpace: true, trimOffsets: true);
            json.WriteStartObject("model");
            json.WriteString("type", "BPE");
            json.WriteNull("dropout");
            json.WriteNull("unk_token");
            json.WriteString("continuing_subword_prefix", "");
            json.WriteString("end_of_word_suffix", "");
            json.WriteBoolean("fuse_unk", false);
            json.WriteBoolean("byte_fallback", false);
            json.WriteBoolean("ignore_merges", false);
            json.WriteStartObject("vocab");
            for (int i = 0; i < _tokens.Length; i++)
            {
                json.WriteNumber(_tokens[i], i);
            }

            json.WriteEndObject();
            json.WriteStartArray("merges");
            foreach (var (l, r) in Merges)
            {
                json.WriteStringValue(l + " " + r);
            }

            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    private static void WriteByteLevel(Utf8JsonWriter json, string name, bool addPrefixSpace, bool trimOffsets)
    {
        json.WriteStartObject(name);
        json.WriteString("type", "ByteLevel");
        json.WriteBoolean("add_prefix_space", addPrefixSpace);
        json.WriteBoolean("trim_offsets", trimOffsets);
        json.WriteBoolean("use_regex", true);
        json.WriteEndObject();
    }

    /// <summary>Writes tokenizer.json atomically.</summary>
    public void Save(string path) => AtomicFile.WriteAllText(path, ToJson());

    /// <summary>
    /// The matching tokenizer_config.json: <paramref name="endOfText"/> as bos/eos/unk, no BOS added, context length.
    /// </summary>
    public string TokenizerConfigJson(string endOfText, int modelMaxLength)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            json.WriteString("tokenizer_class", "GPT2Tokenizer");
            json.WriteString("bos_token", endOfText);
            json.WriteString("eos_token", endOfText);
            json.WriteString("unk_token", endOfText);
            json.WriteBoolean("add_bos_token", false);
            json.WriteBoolean("add_prefix_space", false);
            json.WriteBoolean("clean_up_tokenization_spaces", false);
            json.WriteNumber("model_max_length", modelMaxLength);
            json.WriteStartObject("added_tokens_decoder");
            foreach (string s in SpecialTokens)
            {
                json.WriteStartObject(_ids[s].ToString(System.Globalization.CultureInfo.InvariantCulture));
                json.WriteString("content", s);
                json.WriteBoolean("lstrip", false);
                json.WriteBoolean("normalized", false);
                json.WriteBoolean("rstrip", false);
                json.WriteBoolean("single_word", false);
                json.WriteBoolean("special", true);
                json.WriteEndObject();
            }

            json.WriteEndObject();
            json.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    /// <summary>Reads back a byte-level BPE tokenizer.json (as written by <see cref="Save"/>).</summary>
    public static ByteLevelBpe Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: file not found.");
        }

        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var root = doc.RootElement;
            var model = root.GetProperty("model");
            if (model.GetProperty("type").GetString() != "BPE")
            {
                throw new MinnowException($"{path}: not a BPE tokenizer.");
            }

            var vocab = model.GetProperty("vocab").EnumerateObject().Select(p => (p.Name, Id: p.Value.GetInt32())).OrderBy(p => p.Id).ToList();
            if (vocab.Where((v, i) => v.Id != i).Any())
            {
                throw new MinnowException($"{path}: vocabulary ids are not 0..{vocab.Count - 1}.");
            }

            var merges = model.GetProperty("merges").EnumerateArray().Select(m =>
            {
                if (m.ValueKind == JsonValueKind.Array)
                {
                    return (m[0].GetString()!, m[1].GetString()!);
                }

                string s = m.GetString()!;
                int space = s.IndexOf(' ', StringComparison.Ordinal);
                return (s[..space], s[(space + 1)..]);
            }).ToList();
            var specials = root.TryGetProperty("added_tokens", out var added)
                ? added.EnumerateArray().Where(t => t.GetProperty("special").GetBoolean()).Select(t => t.GetProperty("content").GetString()!).ToList()
                : [];
            return new ByteLevelBpe(vocab.Select(v => v.Name).ToList(), merges, specials);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new MinnowException($"{path}: not a readable tokenizer.json ({e.Message}).");
        }
    }
}

/// <summary>
/// Learns a byte-level BPE vocabulary from text: pieces from GPT-2's pre-tokenizer are counted, every piece
/// starts as its bytes, and the most frequent adjacent pair (ties: the pair whose token strings sort first,
/// ordinal) is merged into a new token until the vocabulary is full. Deterministic for a given text.
/// </summary>
public static class BpeTokenizerTrainer
{
    public const string EndOfText = "<|endoftext|>";

    /// <summary>
    /// Trains a tokenizer of <paramref name="vocabSize"/> tokens: 256 bytes, learned merges, then the special tokens
    /// (default <c>&lt;|endoftext|&gt;</c>) at the end. Pairs seen fewer than <paramref name="minFrequency"/> times are
    /// not merged, so a small text may give a smaller vocabulary.
    /// </summary>
    public static ByteLevelBpe Train(string text, int vocabSize, IReadOnlyList<string>? specialTokens = null, int minFrequency = 2,
        CancellationToken cancellationToken = default)
    {
        specialTokens ??= [EndOfText];
        if (vocabSize < 256 + specialTokens.Count)
        {
            throw new MinnowException($"vocabulary size {vocabSize} is too small: a byte-level BPE needs 256 byte tokens plus {specialTokens.Count} special.");
        }

        // Count pieces.
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var m in ByteLevelBpe.PreTokenizer().EnumerateMatches(text))
        {
            string piece = text.Substring(m.Index, m.Length);
            counts[piece] = counts.GetValueOrDefault(piece) + 1;
        }

        var tokens = new List<string>(vocabSize);
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++)
        {
            string t = ByteLevelBpe.ByteToChar[b].ToString();
            ids[t] = tokens.Count;
            tokens.Add(t);
        }

        // Words in first-seen order, as id sequences with their counts.
        var words = new List<List<int>>(counts.Count);
        var freq = new List<long>(counts.Count);
        foreach (var (piece, count) in counts)
        {
            var bytes = Encoding.UTF8.GetBytes(piece);
            words.Add(bytes.Select(b => (int)b).ToList());
            freq.Add(count);
        }

        var pairCounts = new Dictionary<(int, int), long>();
        var where = new Dictionary<(int, int), HashSet<int>>();
        for (int w = 0; w < words.Count; w++)
        {
            AddPairs(words[w], freq[w], w, pairCounts, where);
        }

        var merges = new List<(string, string)>();
        int target = vocabSize - specialTokens.Count;
        while (tokens.Count < target && pairCounts.Count > 0)
        {
            cancellationToken.ThrowIfCancellationRequested();
            (int, int) best = default;
            long bestCount = 0;
            foreach (var (pair, count) in pairCounts)
            {
                if (count > bestCount || (count == bestCount && count > 0 && ComparePairs(tokens, pair, best) < 0))
                {
                    best = pair;
                    bestCount = count;
                }
            }

            if (bestCount < minFrequency)
            {
                break;
            }

            string mergedText = tokens[best.Item1] + tokens[best.Item2];
            if (!ids.TryGetValue(mergedText, out int newId))
            {
                newId = tokens.Count;
                ids[mergedText] = newId;
                tokens.Add(mergedText);
            }

            merges.Add((tokens[best.Item1], tokens[best.Item2]));
            foreach (int w in where[best].ToArray())
            {
                var word = words[w];
                RemovePairs(word, freq[w], pairCounts);
                for (int i = 0; i < word.Count - 1; i++)
                {
                    if (word[i] == best.Item1 && word[i + 1] == best.Item2)
                    {
                        word[i] = newId;
                        word.RemoveAt(i + 1);
                    }
                }

                AddPairs(word, freq[w], w, pairCounts, where);
            }

            pairCounts.Remove(best);
            where.Remove(best);
        }

        foreach (string s in specialTokens)
        {
            if (ids.ContainsKey(s))
            {
                throw new MinnowException($"special token '{s}' collides with a learned token.");
            }

            ids[s] = tokens.Count;
            tokens.Add(s);
        }

        return new ByteLevelBpe(tokens, merges, specialTokens);
    }

    private static int ComparePairs(List<string> tokens, (int, int) a, (int, int) b)
    {
        int c = string.CompareOrdinal(tokens[a.Item1], tokens[b.Item1]);
        return c != 0 ? c : string.CompareOrdinal(tokens[a.Item2], tokens[b.Item2]);
    }

    private static void AddPairs(List<int> word, long count, int w, Dictionary<(int, int), long> pairCounts, Dictionary<(int, int), HashSet<int>> where)
    {
        for (int i = 0; i < word.Count - 1; i++)
        {
            var pair = (word[i], word[i + 1]);
            pairCounts[pair] = pairCounts.GetValueOrDefault(pair) + count;
            if (!where.TryGetValue(pair, out var set))
            {
                where[pair] = set = [];
            }

            set.Add(w);
        }
    }

    private static void RemovePairs(List<int> word, long count, Dictionary<(int, int), long> pairCounts)
    {
        for (int i = 0; i < word.Count - 1; i++)
        {
            var pair = (word[i], word[i + 1]);
            long c = pairCounts[pair] - count;
            if (c == 0)
            {
                pairCounts.Remove(pair);
            }
            else
            {
                pairCounts[pair] = c;
            }
        }
    }
}
