using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Minnow.Formats;

namespace Minnow.Tokenizers;

/// <summary>
/// Reads a Hugging Face <c>tokenizer.json</c> (BPE models: byte-level like GPT-2/Qwen2/SmolLM, or SentencePiece-style
/// with byte fallback like Llama 2/TinyLlama), with the optional <c>tokenizer_config.json</c>, <c>config.json</c>
/// and <c>generation_config.json</c> beside it for BOS/EOS, <c>add_bos_token</c> and the chat template.
/// </summary>
internal static class HfTokenizerJson
{
    private static readonly JsonDocumentOptions JsonOptions = new() { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip, MaxDepth = 256 };

    /// <summary>Loads <paramref name="path"/> (a tokenizer.json), reading its sibling config files when present.</summary>
    public static TextTokenizer Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: file not found.");
        }

        string folder = Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".";
        string? Sibling(string name)
        {
            string p = Path.Combine(folder, name);
            return File.Exists(p) ? File.ReadAllText(p) : null;
        }

        return Parse(File.ReadAllBytes(path), Path.GetFileName(path), Sibling("tokenizer_config.json"), Sibling("config.json"), Sibling("generation_config.json"),
            Sibling("chat_template.jinja"));
    }

    public static TextTokenizer Parse(byte[] tokenizerJson, string source, string? tokenizerConfig = null, string? modelConfig = null, string? generationConfig = null,
        string? chatTemplateFile = null)
    {
        using (var doc = JsonInput.Parse(tokenizerJson, source, JsonOptions))
        {
            try
            {
                return Build(doc.RootElement, source, ParseOptional(tokenizerConfig, "tokenizer_config.json"), ParseOptional(modelConfig, "config.json"),
                    ParseOptional(generationConfig, "generation_config.json"), chatTemplateFile);
            }
            catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException or ArgumentException)
            {
                throw new MinnowException($"{source}: unexpected content ({SafeText.Of(FirstLine(e.Message), 160)}).", e);
            }
        }
    }

    private static JsonElement? ParseOptional(string? json, string name)
    {
        if (json == null)
        {
            return null;
        }

        using var doc = JsonInput.Parse(System.Text.Encoding.UTF8.GetBytes(json), name, JsonOptions);
        return doc.RootElement.Clone();
    }

    /// <summary>Most ids a vocabulary may leave unused below its largest one.</summary>
    private const int MaxUnusedIds = 1 << 20;

    private static void CheckId(int id, string source)
    {
        if (id < 0)
        {
            throw new MinnowException($"{source}: token id {id} is negative.");
        }
    }

    private static string FirstLine(string message) => message.Split('\n')[0].Trim();

    private static TextTokenizer Build(JsonElement root, string source, JsonElement? tokenizerConfig, JsonElement? modelConfig, JsonElement? generationConfig,
        string? chatTemplateFile)
    {
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
        {
            throw new MinnowException($"{source}: not a Hugging Face tokenizer.json (no \"model\").");
        }

        string type = Str(model, "type") ?? (model.TryGetProperty("merges", out _) ? "BPE" : "?");
        if (type != "BPE")
        {
            throw new MinnowException($"{source}: tokenizer model \"{SafeText.Of(type, 40)}\" is not supported (Minnow supports BPE tokenizers).");
        }

        if (!string.IsNullOrEmpty(Str(model, "continuing_subword_prefix")) || !string.IsNullOrEmpty(Str(model, "end_of_word_suffix")))
        {
            throw new MinnowException($"{source}: BPE with continuing_subword_prefix or end_of_word_suffix is not supported.");
        }

        // Vocabulary, then added tokens (which may extend it).
        var byId = new Dictionary<int, string>();
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
        {
            int id = entry.Value.GetInt32();
            CheckId(id, source);
            vocab.TryAdd(entry.Name, id);
            byId.TryAdd(id, entry.Name);
        }

        var added = new List<AddedToken>();
        var addedKinds = new Dictionary<int, TokenKind>();
        if (root.TryGetProperty("added_tokens", out var addedTokens) && addedTokens.ValueKind == JsonValueKind.Array)
        {
            foreach (var t in addedTokens.EnumerateArray())
            {
                int id = t.GetProperty("id").GetInt32();
                CheckId(id, source);
                string content = Str(t, "content") ?? throw new MinnowException($"{source}: an added token has no content.");
                bool special = Bool(t, "special", false);
                added.Add(new AddedToken(content, id, special, Bool(t, "lstrip", false), Bool(t, "rstrip", false), Bool(t, "single_word", false)));
                addedKinds[id] = special ? TokenKind.Control : TokenKind.UserDefined;
                byId[id] = content;
            }
        }

        long largestId = byId.Count == 0 ? -1 : byId.Keys.Max();
        if (largestId < 0)
        {
            throw new MinnowException($"{source}: the vocabulary is empty.");
        }

        // Ids index arrays of vocabSize entries: a few unused ids are tolerated, a damaged id asking for millions is not.
        if (largestId >= (long)byId.Count + MaxUnusedIds)
        {
            throw new MinnowException($"{source}: token id {largestId} is far beyond the {byId.Count} tokens the file defines; the vocabulary is corrupt.");
        }

        int vocabSize = (int)largestId + 1;

        var tokens = new string[vocabSize];
        var kinds = new TokenKind[vocabSize];
        for (int i = 0; i < vocabSize; i++)
        {
            tokens[i] = byId.TryGetValue(i, out string? s) ? s : $"[UNUSED{i}]";
            kinds[i] = addedKinds.TryGetValue(i, out var k) ? k : byId.ContainsKey(i) ? TokenKind.Normal : TokenKind.Unused;
        }

        // Merges: "a b" strings or ["a", "b"] pairs.
        var merges = new List<(string, string)>();
        if (model.TryGetProperty("merges", out var mergeList) && mergeList.ValueKind == JsonValueKind.Array)
        {
            foreach (var merge in mergeList.EnumerateArray())
            {
                if (merge.ValueKind == JsonValueKind.String)
                {
                    string line = merge.GetString()!;
                    int space = line.IndexOf(' ', 1);
                    if (space < 0)
                    {
                        throw new MinnowException($"{source}: invalid merge \"{SafeText.Of(line)}\".");
                    }

                    merges.Add((line[..space], line[(space + 1)..]));
                }
                else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2)
                {
                    merges.Add((merge[0].GetString()!, merge[1].GetString()!));
                }
                else
                {
                    throw new MinnowException($"{source}: invalid merge {SafeText.Of(merge.GetRawText())}.");
                }
            }
        }

        bool byteFallback = Bool(model, "byte_fallback", false);
        string? unkToken = Str(model, "unk_token");
        int? unkId = unkToken != null && vocab.TryGetValue(unkToken, out int u) ? u : null;
        if (unkId is int unk && !addedKinds.ContainsKey(unk))
        {
            kinds[unk] = TokenKind.Unknown;
        }

        TextNormalizer? normalizer = root.TryGetProperty("normalizer", out var n) ? ParseNormalizer(n, source) : null;
        bool byteLevel = false;
        PreTokenizer? preTokenizer = root.TryGetProperty("pre_tokenizer", out var p) ? ParsePreTokenizer(p, source, ref byteLevel) : null;
        bool ignoreMerges = Bool(model, "ignore_merges", false);
        WordEncoder? library = byteLevel && !byteFallback && unkId == null && !ignoreMerges ? LibraryBpeModel.TryCreate(vocab, merges) : null;
        WordEncoder bpe = library ?? new BpeModel(vocab, merges, byteLevel, byteFallback, unkId, Bool(model, "fuse_unk", false), ignoreMerges);

        // Decoding: what each token contributes.
        var decoder = root.TryGetProperty("decoder", out var d) && d.ValueKind == JsonValueKind.Object ? d : (JsonElement?)null;
        var decoding = ParseDecoder(decoder, source);
        var tokenBytes = new byte[vocabSize][];
        for (int i = 0; i < vocabSize; i++)
        {
            if (kinds[i] is TokenKind.Control or TokenKind.UserDefined)
            {
                tokenBytes[i] = Encoding.UTF8.GetBytes(tokens[i]);
            }
            else if (decoding.ByteFallback && GgufTokenizerBuilder.TryParseByteToken(tokens[i], out byte value))
            {
                kinds[i] = TokenKind.Byte;
                tokenBytes[i] = [value];
            }
            else if (decoding.ByteLevel)
            {
                tokenBytes[i] = ByteLevelMapping.Decode(tokens[i]);
            }
            else
            {
                string text = tokens[i];
                foreach (var (from, to) in decoding.Replacements)
                {
                    text = text.Replace(from, to, StringComparison.Ordinal);
                }

                tokenBytes[i] = Encoding.UTF8.GetBytes(text);
            }
        }

        // Special ids and BOS/EOS insertion: post-processor template, then tokenizer_config.json overrides.
        int? Lookup(string? token) => token != null && vocab.TryGetValue(token, out int id) ? id : token != null ? added.FirstOrDefault(a => a.Content == token)?.Id : null;
        var (prefix, suffix) = ParsePostProcessor(root.TryGetProperty("post_processor", out var pp) ? pp : null, Lookup);

        int? bos = null, eos = null;
        var extraEos = new List<int>();
        string? chatTemplate = null;
        if (tokenizerConfig is JsonElement tc && tc.ValueKind == JsonValueKind.Object)
        {
            bos = Lookup(TokenContent(tc, "bos_token"));
            eos = Lookup(TokenContent(tc, "eos_token"));
            chatTemplate = ChatTemplateOf(tc);
        }

        foreach (var config in (JsonElement?[])[modelConfig, generationConfig])
        {
            if (config is JsonElement c && c.ValueKind == JsonValueKind.Object)
            {
                var bosIds = Ids(c, "bos_token_id");
                var eosIds = Ids(c, "eos_token_id");
                bos ??= bosIds.Count > 0 ? bosIds[0] : null;
                eos ??= eosIds.Count > 0 ? eosIds[0] : null;
                extraEos.AddRange(eosIds);
            }
        }

        // The post-processor's first special token is the BOS when nothing else says so (Llama: "<s>").
        bos ??= prefix.Length > 0 ? prefix[0] : null;
        eos ??= suffix.Length > 0 ? suffix[^1] : null;
        if (tokenizerConfig is JsonElement cfg && cfg.ValueKind == JsonValueKind.Object)
        {
            if (cfg.TryGetProperty("add_bos_token", out var addBos) && addBos.ValueKind is JsonValueKind.True or JsonValueKind.False && bos is int b)
            {
                prefix = addBos.GetBoolean() ? (prefix.Contains(b) ? prefix : [b, .. prefix]) : [.. prefix.Where(x => x != b)];
            }

            if (cfg.TryGetProperty("add_eos_token", out var addEos) && addEos.ValueKind is JsonValueKind.True or JsonValueKind.False && eos is int e)
            {
                suffix = addEos.GetBoolean() ? (suffix.Contains(e) ? suffix : [.. suffix, e]) : [.. suffix.Where(x => x != e)];
            }
        }

        foreach (int? special in (int?[])[bos, eos])
        {
            if (special is not int id)
            {
                continue;
            }

            if (id >= 0 && id < vocabSize && kinds[id] == TokenKind.Normal)
            {
                kinds[id] = TokenKind.Control;
            }
        }

        chatTemplate ??= chatTemplateFile;

        string description = (byteLevel ? "byte-level BPE" : byteFallback ? "SentencePiece BPE with byte fallback" : "BPE")
            + (library != null ? " (tokenizer.json, Microsoft.ML.Tokenizers)" : " (tokenizer.json)");
        return new TextTokenizer(description, tokens, kinds, tokenBytes, new BpeSegmentEncoder(normalizer, preTokenizer, bpe), added,
            bos, eos, extraEos, prefix, suffix, decoding.StripLeadingSpace, chatTemplate);
    }

    private sealed record Decoding(bool ByteLevel, bool ByteFallback, List<(string From, string To)> Replacements, bool StripLeadingSpace);

    private static Decoding ParseDecoder(JsonElement? decoder, string source)
    {
        var result = new Decoding(false, false, [], false);
        if (decoder is not JsonElement d)
        {
            return result;
        }

        void Visit(JsonElement e)
        {
            switch (Str(e, "type"))
            {
                case "Sequence":
                    foreach (var child in e.GetProperty("decoders").EnumerateArray())
                    {
                        Visit(child);
                    }

                    break;
                case "ByteLevel":
                    result = result with { ByteLevel = true };
                    break;
                case "ByteFallback":
                    result = result with { ByteFallback = true };
                    break;
                case "Replace":
                    if (Pattern(e, out string? literal, out _) && literal != null)
                    {
                        result.Replacements.Add((literal, Str(e, "content") ?? ""));
                    }

                    break;
                case "Strip":
                    if (Str(e, "content") == " " && e.TryGetProperty("start", out var start) && start.GetInt32() > 0)
                    {
                        result = result with { StripLeadingSpace = true };
                    }

                    break;
                case "Metaspace":
                    {
                        string replacement = Str(e, "replacement") ?? "▁";
                        result.Replacements.Add((replacement, " "));
                        string scheme = Str(e, "prepend_scheme") ?? (Bool(e, "add_prefix_space", true) ? "always" : "never");
                        if (scheme != "never")
                        {
                            result = result with { StripLeadingSpace = true };
                        }

                        break;
                    }

                case "Fuse":
                    break;
                default:
                    throw new MinnowException($"{source}: decoder \"{SafeText.Of(Str(e, "type"), 40)}\" is not supported.");
            }
        }

        Visit(d);
        return result;
    }

    private static (int[] Prefix, int[] Suffix) ParsePostProcessor(JsonElement? postProcessor, Func<string?, int?> lookup)
    {
        if (postProcessor is not JsonElement pp || pp.ValueKind != JsonValueKind.Object)
        {
            return ([], []);
        }

        switch (Str(pp, "type"))
        {
            case "Sequence":
                {
                    var prefix = new List<int>();
                    var suffix = new List<int>();
                    foreach (var child in pp.GetProperty("processors").EnumerateArray())
                    {
                        var (p, s) = ParsePostProcessor(child, lookup);
                        prefix.AddRange(p);
                        suffix.AddRange(s);
                    }

                    return ([.. prefix], [.. suffix]);
                }

            case "TemplateProcessing":
                {
                    var prefix = new List<int>();
                    var suffix = new List<int>();
                    bool seenSequence = false;
                    if (!pp.TryGetProperty("single", out var single))
                    {
                        return ([], []);
                    }

                    foreach (var item in single.EnumerateArray())
                    {
                        if (item.TryGetProperty("Sequence", out _))
                        {
                            seenSequence = true;
                        }
                        else if (item.TryGetProperty("SpecialToken", out var special))
                        {
                            string? name = Str(special, "id");
                            var ids = new List<int>();
                            if (name != null && pp.TryGetProperty("special_tokens", out var map) && map.TryGetProperty(name, out var def)
                                && def.TryGetProperty("ids", out var idArray))
                            {
                                ids.AddRange(idArray.EnumerateArray().Select(x => x.GetInt32()));
                            }
                            else if (lookup(name) is int id)
                            {
                                ids.Add(id);
                            }

                            (seenSequence ? suffix : prefix).AddRange(ids);
                        }
                    }

                    return ([.. prefix], [.. suffix]);
                }

            case "RobertaProcessing" or "BertProcessing":
                {
                    int? cls = pp.TryGetProperty("cls", out var c) && c.ValueKind == JsonValueKind.Array ? c[1].GetInt32() : null;
                    int? sep = pp.TryGetProperty("sep", out var s) && s.ValueKind == JsonValueKind.Array ? s[1].GetInt32() : null;
                    return (cls is int ci ? [ci] : [], sep is int si ? [si] : []);
                }

            default:
                return ([], []);
        }
    }

    private static TextNormalizer? ParseNormalizer(JsonElement e, string source)
    {
        if (e.ValueKind != JsonValueKind.Object)
        {
            return null;
        }

        string? type = Str(e, "type");
        switch (type)
        {
            case "Sequence":
                {
                    var steps = e.GetProperty("normalizers").EnumerateArray().Select(x => ParseNormalizer(x, source)).OfType<TextNormalizer>().ToList();
                    return steps.Count == 0 ? null : steps.Count == 1 ? steps[0] : new SequenceNormalizer(steps);
                }

            case "Prepend":
                return new PrependNormalizer(Str(e, "prepend") ?? "");
            case "Replace":
                Pattern(e, out string? literal, out Regex? regex);
                return new ReplaceNormalizer(literal, regex, Str(e, "content") ?? "");
            case "NFC":
                return new UnicodeNormalizer(NormalizationForm.FormC);
            case "NFD":
                return new UnicodeNormalizer(NormalizationForm.FormD);
            case "NFKC":
                return new UnicodeNormalizer(NormalizationForm.FormKC);
            case "NFKD":
                return new UnicodeNormalizer(NormalizationForm.FormKD);
            case "Lowercase":
                return new LowercaseNormalizer();
            case "Strip":
                return new StripNormalizer(Bool(e, "strip_left", true), Bool(e, "strip_right", true));
            case "StripAccents":
                return new StripAccentsNormalizer();
            case "Precompiled":
                // SentencePiece's compiled character map: identity for the Llama-family models that carry it.
                return null;
            default:
                throw new MinnowException($"{source}: normalizer \"{SafeText.Of(type, 40)}\" is not supported.");
        }
    }

    private static PreTokenizer? ParsePreTokenizer(JsonElement e, string source, ref bool byteLevel)
    {
        if (e.ValueKind != JsonValueKind.Object)
        {
            return null;
        }

        string? type = Str(e, "type");
        switch (type)
        {
            case "Sequence":
                {
                    var steps = new List<PreTokenizer>();
                    foreach (var child in e.GetProperty("pretokenizers").EnumerateArray())
                    {
                        if (ParsePreTokenizer(child, source, ref byteLevel) is PreTokenizer step)
                        {
                            steps.Add(step);
                        }
                    }

                    return steps.Count == 0 ? null : steps.Count == 1 ? steps[0] : new SequencePreTokenizer(steps);
                }

            case "ByteLevel":
                byteLevel = true;
                return new ByteLevelPreTokenizer(Bool(e, "add_prefix_space", false), Bool(e, "use_regex", true));
            case "Split":
                {
                    Pattern(e, out string? literal, out Regex? regex);
                    regex ??= new Regex(Regex.Escape(literal ?? ""), RegexOptions.CultureInvariant);
                    return new SplitPreTokenizer(regex, Behavior(Str(e, "behavior"), source), Bool(e, "invert", false));
                }

            case "Digits":
                return new SplitPreTokenizer(char.IsNumber, Bool(e, "individual_digits", false) ? SplitBehavior.Isolated : SplitBehavior.Contiguous);
            case "Metaspace":
                {
                    string replacement = Str(e, "replacement") ?? "▁";
                    string scheme = Str(e, "prepend_scheme") ?? (Bool(e, "add_prefix_space", true) ? "always" : "never");
                    var prepend = scheme switch
                    {
                        "always" => MetaspacePrepend.Always,
                        "first" => MetaspacePrepend.First,
                        _ => MetaspacePrepend.Never,
                    };
                    return new MetaspacePreTokenizer(replacement[0], prepend, Bool(e, "split", true));
                }

            case "Whitespace":
                return new SplitPreTokenizer(PreTokenizerPatterns.Create(@"\w+|[^\w\s]+"), SplitBehavior.Removed, invert: true);
            case "WhitespaceSplit":
                return new SplitPreTokenizer(char.IsWhiteSpace, SplitBehavior.Removed);
            case "Punctuation":
                return new SplitPreTokenizer(c => char.IsPunctuation(c) || (c < 128 && char.IsSymbol(c)), Behavior(Str(e, "behavior") ?? "Isolated", source));
            default:
                throw new MinnowException($"{source}: pre-tokenizer \"{SafeText.Of(type, 40)}\" is not supported.");
        }
    }

    private static SplitBehavior Behavior(string? name, string source) => name switch
    {
        "Removed" => SplitBehavior.Removed,
        "Isolated" => SplitBehavior.Isolated,
        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitBehavior.MergedWithNext,
        "Contiguous" => SplitBehavior.Contiguous,
        _ => throw new MinnowException($"{source}: split behavior \"{SafeText.Of(name, 40)}\" is not supported."),
    };

    /// <summary>Reads a {"pattern": {"String": ...}} or {"pattern": {"Regex": ...}} field.</summary>
    private static bool Pattern(JsonElement e, out string? literal, out Regex? regex)
    {
        literal = null;
        regex = null;
        if (!e.TryGetProperty("pattern", out var pattern))
        {
            return false;
        }

        if (pattern.TryGetProperty("String", out var s))
        {
            literal = s.GetString();
            return true;
        }

        if (pattern.TryGetProperty("Regex", out var r))
        {
            string source = r.GetString() ?? "";
            try
            {
                regex = PreTokenizerPatterns.Create(source);
            }
            catch (ArgumentException ex)
            {
                throw new MinnowException($"tokenizer.json: the regex /{SafeText.Of(source)}/ is not supported by .NET ({SafeText.Of(FirstLine(ex.Message), 160)}).", ex);
            }

            return true;
        }

        return false;
    }

    private static string? Str(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static bool Bool(JsonElement e, string name, bool fallback) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

    /// <summary>A token given as a string or as {"content": ...} (tokenizer_config.json).</summary>
    private static string? TokenContent(JsonElement e, string name)
    {
        if (!e.TryGetProperty(name, out var v))
        {
            return null;
        }

        return v.ValueKind == JsonValueKind.String ? v.GetString() : Str(v, "content");
    }

    private static List<int> Ids(JsonElement e, string name)
    {
        var result = new List<int>();
        if (e.TryGetProperty(name, out var v))
        {
            if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int id))
            {
                result.Add(id);
            }
            else if (v.ValueKind == JsonValueKind.Array)
            {
                foreach (var x in v.EnumerateArray())
                {
                    if (x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out int i))
                    {
                        result.Add(i);
                    }
                }
            }
        }

        return result;
    }

    /// <summary>The chat template: a string, or a list of {"name", "template"} (the "default" one, else the first).</summary>
    private static string? ChatTemplateOf(JsonElement config)
    {
        if (!config.TryGetProperty("chat_template", out var t))
        {
            return null;
        }

        if (t.ValueKind == JsonValueKind.String)
        {
            return t.GetString();
        }

        if (t.ValueKind == JsonValueKind.Array)
        {
            string? first = null;
            foreach (var item in t.EnumerateArray())
            {
                string? template = Str(item, "template");
                first ??= template;
                if (Str(item, "name") == "default")
                {
                    return template;
                }
            }

            return first;
        }

        return null;
    }
}
