using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Minnow.Formats;
using Minnow.Formats.Gguf;
using Minnow.Loading;

namespace Minnow.Export;

/// <summary>
/// A model's vocabulary as the <c>tokenizer.ggml.*</c> metadata llama.cpp reads (llama-vocab.cpp): model "gpt2"
/// (byte-level BPE: tokens, token_type, merges, pre) from a byte-level tokenizer.json; model "llama" (SentencePiece:
/// tokens with "▁" for spaces, scores, token_type) from a byte-fallback tokenizer.json or a llama2.c tokenizer.bin;
/// the source's own keys when the model is a GGUF file; and model "none" when there is no tokenizer. The token list
/// is padded to the model's vocabulary size with unused "[PAD{i}]" entries, as llama.cpp's converter does, since
/// llama.cpp sizes the embedding by it.
/// </summary>
public static class GgufTokenizerMetadata
{
    // Values of tokenizer.ggml.token_type (llama.cpp's llama_token_type).
    private const int Normal = 1;
    private const int Unknown = 2;
    private const int Control = 3;
    private const int UserDefined = 4;
    private const int Unused = 5;
    private const int Byte = 6;

    /// <summary>Pre-tokenizer regexes of tokenizer.json files, and the llama.cpp pre-tokenizer that splits the same way.</summary>
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    private const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string SingleDigitPattern = @"\p{N}";

    /// <summary>What was found for a model: the writer to pass to the exporter and a description ("gpt2, 49152 tokens").</summary>
    public sealed record Source(Action<GgufWriter> Write, string Description, bool HasVocabulary);

    /// <summary>
    /// The tokenizer metadata for the model at <paramref name="modelPath"/>: its folder's tokenizer.json, the GGUF
    /// file's own vocabulary, or tokenizer.bin beside a llama2.c checkpoint; "none" when it has none.
    /// </summary>
    public static Source For(string modelPath, ModelFormat format, int vocabSize)
    {
        switch (format)
        {
            case ModelFormat.HuggingFace:
                {
                    string folder = Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
                    string json = Path.Combine(folder, "tokenizer.json");
                    if (File.Exists(json))
                    {
                        var vocab = FromTokenizerJson(json, vocabSize);
                        return new Source(vocab.Write, vocab.Describe(), true);
                    }

                    break;
                }

            case ModelFormat.Gguf:
                {
                    var metadata = GgufFile.ReadMetadata(modelPath);
                    if (metadata.TryGetString("tokenizer.ggml.model", out string? model) && model is not ("none" or "no_vocab")
                        && metadata.ContainsKey("tokenizer.ggml.tokens"))
                    {
                        int count = metadata.GetStringArray("tokenizer.ggml.tokens").Length;
                        return new Source(w => CopyFromGguf(w, metadata, vocabSize), $"{model}, {count} tokens (from the GGUF file)", true);
                    }

                    break;
                }

            case ModelFormat.Llama2c:
                {
                    string bin = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelPath))!, "tokenizer.bin");
                    if (File.Exists(bin))
                    {
                        var vocab = FromLlama2c(bin, vocabSize);
                        return new Source(vocab.Write, vocab.Describe(), true);
                    }

                    break;
                }
        }

        return new Source(WriteNone, "none", false);
    }

    /// <summary>No vocabulary: llama.cpp then takes the vocabulary size from <c>{arch}.vocab_size</c> and runs on ids.</summary>
    public static void WriteNone(GgufWriter writer) => writer.Set("tokenizer.ggml.model", "none");

    /// <summary>Copies every <c>tokenizer.*</c> key of a GGUF file, padding the token list to <paramref name="vocabSize"/>.</summary>
    public static void CopyFromGguf(GgufWriter writer, GgufMetadata source, int vocabSize)
    {
        foreach (var (key, value) in source)
        {
            if (key.StartsWith("tokenizer.", StringComparison.Ordinal))
            {
                writer.Set(key, value);
            }
        }

        if (source.TryGetStringArray("tokenizer.ggml.tokens", out string[]? tokens) && tokens.Length < vocabSize)
        {
            writer.Set("tokenizer.ggml.tokens", Pad(tokens, vocabSize, i => $"[PAD{i}]"));
            if (source.TryGetArray<int>("tokenizer.ggml.token_type", out int[]? types))
            {
                writer.Set("tokenizer.ggml.token_type", Pad(types, vocabSize, _ => Unused));
            }

            if (source.TryGetArray<float>("tokenizer.ggml.scores", out float[]? scores))
            {
                writer.Set("tokenizer.ggml.scores", Pad(scores, vocabSize, _ => -1e9f));
            }

        }
    }

    /// <summary>A vocabulary ready to be written as GGUF metadata.</summary>
    public sealed class Vocabulary
    {
        /// <summary>"gpt2" or "llama".</summary>
        public required string Model { get; init; }

        public required string[] Tokens { get; init; }

        public required int[] TokenTypes { get; init; }

        public float[]? Scores { get; init; }

        public string[]? Merges { get; init; }

        /// <summary>llama.cpp's pre-tokenizer name, or null when the split is not one llama.cpp knows.</summary>
        public string? Pre { get; init; }

        public int? BosId { get; init; }

        public int? EosId { get; init; }

        public int? UnknownId { get; init; }

        public int? PaddingId { get; init; }

        public bool AddBos { get; init; }

        public bool AddEos { get; init; }

        /// <summary>SentencePiece: a "▁" is put before the text (llama.cpp's add_space_prefix).</summary>
        public bool? AddSpacePrefix { get; init; }

        public string? ChatTemplate { get; init; }

        /// <summary>How many tokens the tokenizer itself has (before padding to the model's vocabulary).</summary>
        public required int TokenizerSize { get; init; }

        public string Describe() => $"{Model}, {TokenizerSize} tokens{(Pre is null ? "" : $", pre-tokenizer {Pre}")}" +
            (Tokens.Length > TokenizerSize ? $", padded to {Tokens.Length}" : "");

        public void Write(GgufWriter w)
        {
            w.Set("tokenizer.ggml.model", Model);
            if (Pre != null)
            {
                w.Set("tokenizer.ggml.pre", Pre);
            }

            w.Set("tokenizer.ggml.tokens", Tokens);
            if (Scores != null)
            {
                w.Set("tokenizer.ggml.scores", Scores);
            }

            w.Set("tokenizer.ggml.token_type", TokenTypes);
            if (Merges != null)
            {
                w.Set("tokenizer.ggml.merges", Merges);
            }

            void Id(string key, int? id)
            {
                if (id is int v && v >= 0 && v < Tokens.Length)
                {
                    w.Set(key, (uint)v);
                }
                else
                {
                    w.Metadata.Remove(key);
                }
            }

            Id("tokenizer.ggml.bos_token_id", BosId);
            Id("tokenizer.ggml.eos_token_id", EosId);
            Id("tokenizer.ggml.unknown_token_id", UnknownId);
            Id("tokenizer.ggml.padding_token_id", PaddingId);
            w.Set("tokenizer.ggml.add_bos_token", AddBos);
            w.Set("tokenizer.ggml.add_eos_token", AddEos);
            if (AddSpacePrefix is bool prefix)
            {
                w.Set("tokenizer.ggml.add_space_prefix", prefix);
            }

            if (!string.IsNullOrEmpty(ChatTemplate))
            {
                w.Set("tokenizer.chat_template", ChatTemplate);
            }
        }
    }

    /// <summary>Reads a Hugging Face tokenizer.json (and tokenizer_config.json, config.json, chat_template.jinja beside it).</summary>
    public static Vocabulary FromTokenizerJson(string path, int vocabSize)
    {
        string folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        using (var doc = JsonInput.ParseFile(path, new JsonDocumentOptions { AllowTrailingCommas = true, MaxDepth = 256 }))
        {
            var root = doc.RootElement;
            if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            {
                throw new MinnowException($"{path}: not a Hugging Face tokenizer.json (no \"model\").");
            }

            string type = Str(model, "type") ?? (model.TryGetProperty("merges", out _) ? "BPE" : "?");
            if (type != "BPE")
            {
                throw new MinnowException($"{path}: tokenizer model \"{type}\" cannot be exported to GGUF (BPE tokenizers only).");
            }

            var byId = new Dictionary<int, string>();
            foreach (var entry in model.GetProperty("vocab").EnumerateObject())
            {
                byId.TryAdd(entry.Value.GetInt32(), entry.Name);
            }

            var types = new Dictionary<int, int>();
            var addedSpecial = new Dictionary<string, int>(StringComparer.Ordinal);
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            {
                foreach (var t in added.EnumerateArray())
                {
                    int id = t.GetProperty("id").GetInt32();
                    string content = Str(t, "content") ?? "";
                    bool special = t.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True;
                    byId[id] = content;
                    types[id] = special ? Control : UserDefined;
                    addedSpecial[content] = id;
                }
            }

            int size = byId.Count == 0 ? 0 : byId.Keys.Max() + 1;
            if (size == 0)
            {
                throw new MinnowException($"{path}: the vocabulary is empty.");
            }

            if (size > vocabSize)
            {
                throw new MinnowException($"{path}: the tokenizer has {size} tokens, more than the model's vocabulary of {vocabSize}.");
            }

            var merges = new List<string>();
            if (model.TryGetProperty("merges", out var mergeList) && mergeList.ValueKind == JsonValueKind.Array)
            {
                foreach (var m in mergeList.EnumerateArray())
                {
                    merges.Add(m.ValueKind == JsonValueKind.Array
                        ? $"{m[0].GetString()} {m[1].GetString()}"
                        : m.GetString() ?? throw new MinnowException($"{path}: a merge is not a string."));
                }
            }

            var tokenizerConfig = ReadOptionalJson(Path.Combine(folder, "tokenizer_config.json"));
            var modelConfig = ReadOptionalJson(Path.Combine(folder, "config.json"));
            int? SpecialId(string configKey, string? idKey)
            {
                string? text = tokenizerConfig is JsonElement tc && tc.TryGetProperty(configKey, out var v)
                    ? v.ValueKind == JsonValueKind.String ? v.GetString() : v.ValueKind == JsonValueKind.Object ? Str(v, "content") : null
                    : null;
                if (text != null && addedSpecial.TryGetValue(text, out int id))
                {
                    return id;
                }

                if (text != null && byId.FirstOrDefault(kv => kv.Value == text) is { Value: not null } found)
                {
                    return found.Key;
                }

                return idKey != null && modelConfig is JsonElement mc && mc.TryGetProperty(idKey, out var n) && n.ValueKind == JsonValueKind.Number
                    ? n.GetInt32()
                    : null;
            }

            bool byteLevel = HasComponent(root, "pre_tokenizer", "ByteLevel") || HasComponent(root, "decoder", "ByteLevel");
            bool byteFallback = model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True;
            string? unkText = Str(model, "unk_token");
            int? unk = unkText != null && byId.FirstOrDefault(kv => kv.Value == unkText) is { Value: not null } u ? u.Key : null;
            var (addBos, addEos) = PostProcessorAdds(root, tokenizerConfig, SpecialId("bos_token", "bos_token_id"), SpecialId("eos_token", "eos_token_id"));
            string? chatTemplate = ChatTemplateOf(tokenizerConfig, folder);

            var tokens = new string[vocabSize];
            var tokenTypes = new int[vocabSize];
            for (int i = 0; i < vocabSize; i++)
            {
                if (byId.TryGetValue(i, out string? text))
                {
                    tokens[i] = text;
                    tokenTypes[i] = types.TryGetValue(i, out int t) ? t : Normal;
                }
                else
                {
                    tokens[i] = $"[PAD{i}]";
                    tokenTypes[i] = Unused;
                }
            }

            if (byteLevel && !byteFallback)
            {
                return new Vocabulary
                {
                    Model = "gpt2",
                    Tokens = tokens,
                    TokenTypes = tokenTypes,
                    Merges = [.. merges],
                    Pre = PreTokenizerName(root),
                    BosId = SpecialId("bos_token", "bos_token_id"),
                    EosId = SpecialId("eos_token", "eos_token_id"),
                    UnknownId = unk,
                    PaddingId = SpecialId("pad_token", "pad_token_id"),
                    AddBos = addBos,
                    AddEos = addEos,
                    ChatTemplate = chatTemplate,
                    TokenizerSize = size,
                };
            }

            // SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama, Mistral): llama.cpp's "llama" model merges
            // the adjacent pair with the highest score, so a token's score is minus the rank of the merge that makes it.
            var scores = new float[vocabSize];
            var rank = new Dictionary<string, int>(StringComparer.Ordinal);
            for (int r = 0; r < merges.Count; r++)
            {
                rank.TryAdd(merges[r].Replace(" ", "", StringComparison.Ordinal), r);
            }

            for (int i = 0; i < vocabSize; i++)
            {
                if (tokenTypes[i] == Normal && i == unk)
                {
                    tokenTypes[i] = Unknown;
                }
                else if (tokenTypes[i] == Normal && IsByteToken(tokens[i]))
                {
                    tokenTypes[i] = Byte;
                }

                scores[i] = tokenTypes[i] != Normal ? 0f
                    : rank.TryGetValue(tokens[i], out int r) ? -r
                    : -(merges.Count + i);
            }

            return new Vocabulary
            {
                Model = "llama",
                Tokens = tokens,
                TokenTypes = tokenTypes,
                Scores = scores,
                Pre = "default",
                BosId = SpecialId("bos_token", "bos_token_id"),
                EosId = SpecialId("eos_token", "eos_token_id"),
                UnknownId = unk,
                PaddingId = SpecialId("pad_token", "pad_token_id"),
                AddBos = addBos,
                AddEos = addEos,
                AddSpacePrefix = AddsSpacePrefix(root),
                ChatTemplate = chatTemplate,
                TokenizerSize = size,
            };
        }
    }

    /// <summary>
    /// Reads a llama2.c tokenizer.bin (int32 max token length, then per token: float32 score, int32 length, bytes;
    /// spaces written as ' '; 0 = &lt;unk&gt;, 1 = BOS, 2 = EOS) as a "llama" vocabulary.
    /// </summary>
    public static Vocabulary FromLlama2c(string path, int vocabSize)
    {
        byte[] data = File.ReadAllBytes(path);
        var tokens = new string[vocabSize];
        var scores = new float[vocabSize];
        var types = new int[vocabSize];
        int pos = 4, count = 0;
        while (count < vocabSize && pos + 8 <= data.Length)
        {
            float score = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(pos));
            int length = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(pos + 4));
            pos += 8;
            if (length < 0 || length > data.Length - pos)
            {
                throw new MinnowException($"{path}: corrupt token {count} (length {length}).");
            }

            string piece = Encoding.UTF8.GetString(data, pos, length);
            pos += length;
            tokens[count] = piece.Replace(' ', '\u2581');
            scores[count] = score;
            types[count] = count switch
            {
                0 => Unknown,
                1 or 2 => Control,
                _ => IsByteToken(piece) ? Byte : Normal,
            };
            count++;
        }

        if (count == 0)
        {
            throw new MinnowException($"{path}: not a llama2.c tokenizer (no tokens).");
        }

        for (int i = count; i < vocabSize; i++)
        {
            tokens[i] = $"[PAD{i}]";
            types[i] = Unused;
            scores[i] = -1e9f;
        }

        return new Vocabulary
        {
            Model = "llama",
            Tokens = tokens,
            TokenTypes = types,
            Scores = scores,
            Pre = "default",
            BosId = 1,
            EosId = 2,
            UnknownId = 0,
            AddBos = true,
            AddEos = false,
            AddSpacePrefix = true,
            TokenizerSize = count,
        };
    }

    private static bool IsByteToken(string token) =>
        token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
        && byte.TryParse(token.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out _);

    /// <summary>The llama.cpp name of the tokenizer.json pre-tokenizer's split, or null when it is not a known one.</summary>
    private static string? PreTokenizerName(JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object)
        {
            return null;
        }

        var patterns = new List<string>();
        foreach (var step in Flatten(pre))
        {
            switch (Str(step, "type"))
            {
                case "ByteLevel":
                    if (!step.TryGetProperty("use_regex", out var useRegex) || useRegex.ValueKind != JsonValueKind.False)
                    {
                        patterns.Add(Gpt2Pattern);
                    }

                    break;
                case "Digits":
                    if (step.TryGetProperty("individual_digits", out var single) && single.ValueKind == JsonValueKind.True)
                    {
                        patterns.Add(SingleDigitPattern);
                    }
                    else
                    {
                        return null;
                    }

                    break;
                case "Split":
                    if (step.TryGetProperty("pattern", out var p) && p.ValueKind == JsonValueKind.Object && Str(p, "Regex") is string regex)
                    {
                        patterns.Add(regex);
                    }
                    else
                    {
                        return null;
                    }

                    break;
                default:
                    return null;
            }
        }

        return patterns.ToArray() switch
        {
            [Gpt2Pattern] => "gpt-2",
            [SingleDigitPattern, Gpt2Pattern] => "smollm",
            [Llama3Pattern] => "llama-bpe",
            [Qwen2Pattern] => "qwen2",
            _ => null,
        };
    }

    private static IEnumerable<JsonElement> Flatten(JsonElement step)
    {
        if (Str(step, "type") == "Sequence" && step.TryGetProperty("pretokenizers", out var list) && list.ValueKind == JsonValueKind.Array)
        {
            foreach (var inner in list.EnumerateArray())
            {
                foreach (var s in Flatten(inner))
                {
                    yield return s;
                }
            }
        }
        else
        {
            yield return step;
        }
    }

    private static bool HasComponent(JsonElement root, string section, string type)
    {
        if (!root.TryGetProperty(section, out var s) || s.ValueKind != JsonValueKind.Object)
        {
            return false;
        }

        if (Str(s, "type") == type)
        {
            return true;
        }

        foreach (string listName in new[] { "pretokenizers", "decoders", "normalizers" })
        {
            if (s.TryGetProperty(listName, out var list) && list.ValueKind == JsonValueKind.Array && list.EnumerateArray().Any(e => Str(e, "type") == type))
            {
                return true;
            }
        }

        return false;
    }

    private static bool AddsSpacePrefix(JsonElement root)
    {
        if (root.TryGetProperty("normalizer", out var n) && n.ValueKind == JsonValueKind.Object)
        {
            var steps = Str(n, "type") == "Sequence" && n.TryGetProperty("normalizers", out var list) ? list.EnumerateArray().ToList() : [n];
            if (steps.Any(s => Str(s, "type") == "Prepend" && Str(s, "prepend") == "\u2581"))
            {
                return true;
            }
        }

        if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind == JsonValueKind.Object)
        {
            foreach (var step in Flatten(pre))
            {
                if (Str(step, "type") == "Metaspace")
                {
                    string? scheme = Str(step, "prepend_scheme");
                    return scheme is null
                        ? !step.TryGetProperty("add_prefix_space", out var a) || a.ValueKind != JsonValueKind.False
                        : scheme != "never";
                }
            }
        }

        return false;
    }

    /// <summary>Whether encoding adds BOS / EOS: the post-processor's single-sequence template, else tokenizer_config.json.</summary>
    private static (bool Bos, bool Eos) PostProcessorAdds(JsonElement root, JsonElement? tokenizerConfig, int? bos, int? eos)
    {
        bool? addBos = null, addEos = null;
        if (tokenizerConfig is JsonElement tc)
        {
            if (tc.TryGetProperty("add_bos_token", out var b) && b.ValueKind is JsonValueKind.True or JsonValueKind.False)
            {
                addBos = b.GetBoolean();
            }

            if (tc.TryGetProperty("add_eos_token", out var e) && e.ValueKind is JsonValueKind.True or JsonValueKind.False)
            {
                addEos = e.GetBoolean();
            }
        }

        if (root.TryGetProperty("post_processor", out var pp) && pp.ValueKind == JsonValueKind.Object)
        {
            var processors = Str(pp, "type") == "Sequence" && pp.TryGetProperty("processors", out var list) ? list.EnumerateArray().ToList() : [pp];
            foreach (var p in processors)
            {
                if (Str(p, "type") != "TemplateProcessing" || !p.TryGetProperty("single", out var single) || single.ValueKind != JsonValueKind.Array)
                {
                    continue;
                }

                var items = single.EnumerateArray().ToList();
                int sequence = items.FindIndex(i => i.TryGetProperty("Sequence", out _));
                var specials = items.Select((item, index) => (Index: index, Id: item.TryGetProperty("SpecialToken", out var st) ? Str(st, "id") : null))
                    .Where(x => x.Id != null).ToList();
                int? IdOf(string text) => p.TryGetProperty("special_tokens", out var table) && table.TryGetProperty(text, out var entry)
                    && entry.TryGetProperty("ids", out var ids) && ids.GetArrayLength() > 0 ? ids[0].GetInt32() : null;
                addBos ??= specials.Any(s => s.Index < sequence && IdOf(s.Id!) is int id && id == bos);
                addEos ??= specials.Any(s => s.Index > sequence && IdOf(s.Id!) is int id && id == eos);
            }
        }

        return (addBos ?? false, addEos ?? false);
    }

    private static string? ChatTemplateOf(JsonElement? tokenizerConfig, string folder)
    {
        string jinja = Path.Combine(folder, "chat_template.jinja");
        if (File.Exists(jinja))
        {
            return File.ReadAllText(jinja);
        }

        return tokenizerConfig is JsonElement tc && tc.TryGetProperty("chat_template", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
    }

    private static JsonElement? ReadOptionalJson(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            using var doc = JsonInput.ParseFile(path, new JsonDocumentOptions { AllowTrailingCommas = true });
            return doc.RootElement.Clone();
        }
        catch (MinnowException)
        {
            return null;
        }
    }

    private static string? Str(JsonElement e, string key) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static T[] Pad<T>(T[] values, int length, Func<int, T> filler)
    {
        var result = new T[Math.Max(length, values.Length)];
        values.CopyTo(result, 0);
        for (int i = values.Length; i < result.Length; i++)
        {
            result[i] = filler(i);
        }

        return result;
    }
}
