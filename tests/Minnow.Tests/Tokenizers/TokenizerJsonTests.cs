using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Minnow.Formats.Gguf;
using Minnow.Tokenizers;
using static Minnow.Tests.Tokenizers.TokenizerTestData;

namespace Minnow.Tests.Tokenizers;

/// <summary>Hugging Face tokenizer.json: SmolLM2's real file, and Llama-style files built from the GGUF vocabularies.</summary>
public sealed class TokenizerJsonTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("minnow-tok-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static JsonObject SmolLM2Json() => JsonNode.Parse(File.ReadAllText(Path.Combine(SmolLM2Folder!, "tokenizer.json")))!.AsObject();

    [Fact]
    public void SharedData_SmolLM2_LoadsWithIdsFromConfig()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var tok = SmolLM2();
        Assert.Equal(49152, tok.VocabSize);
        Assert.Equal(1, tok.BosId); // config.json
        Assert.Equal(2, tok.EosId);
        Assert.Equal([2, 0], tok.EosIds); // <|im_end|>, then <|endoftext|>
        Assert.False(tok.AddsBos); // no post-processor
        Assert.False(tok.StripsLeadingSpace);
        Assert.StartsWith("byte-level BPE", tok.Description);
        Assert.Equal(ChatFormat.ChatML, ChatTemplate.For(tok).Format);
    }

    [Fact]
    public void SharedData_SmolLM2_EncodesWholeWordsAndDigits()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var tok = SmolLM2();
        var vocab = SmolLM2Json()["model"]!["vocab"]!.AsObject();
        int Id(string token) => vocab[token]!.GetValue<int>();

        // Words in the vocabulary come out whole; 'Ġ' spells the leading space.
        Assert.Equal([Id("Hello"), Id("Ġworld")], tok.Encode("Hello world", addSpecial: true));
        Assert.Equal([Id("ĠHello"), Id("Ġworld")], tok.Encode(" Hello world", addSpecial: false));

        // The Digits pre-tokenizer splits numbers into single digits, and the space before them stands alone.
        Assert.Equal([Id("Ġin"), Id("Ġ"), Id("2"), Id("0"), Id("2"), Id("4")], tok.Encode(" in 2024", addSpecial: false));

        // Special tokens are matched in the text.
        Assert.Equal([1, Id("user"), Id("Ċ"), Id("Hi"), 2, Id("Ċ")], tok.Encode("<|im_start|>user\nHi<|im_end|>\n", addSpecial: false));
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n", tok.Decode([1, Id("user"), Id("Ċ"), Id("Hi"), 2, Id("Ċ")]));
        Assert.Equal("user\nHi\n", tok.Decode([1, Id("user"), Id("Ċ"), Id("Hi"), 2, Id("Ċ")], skipSpecialTokens: true));
    }

    [Fact]
    public void SharedData_SmolLM2_WikiTextRoundTripsQuickly()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        string wiki = WikiText!;
        var tok = TokenizerLoader.Load(SmolLM2Folder!);
        var watch = Stopwatch.StartNew();
        var ids = tok.Encode(wiki, addSpecial: false);
        var elapsed = watch.Elapsed;
        Assert.Equal(wiki, tok.Decode(ids));

        // A few seconds on a quiet machine; the bound is loose because tests run in parallel on shared CI runners.
        Assert.True(elapsed < TimeSpan.FromSeconds(30), $"encoding took {elapsed.TotalSeconds:F1} s");
    }

    /// <summary>
    /// The same vocabulary as a GGUF file (what llama.cpp's converter writes for SmolLM: pre-tokenizer "smollm",
    /// a regex sequence) must tokenize exactly as the tokenizer.json pipeline (Digits + ByteLevel pre-tokenizers).
    /// </summary>
    [Fact]
    public void SharedData_SmolLM2_GgufBuiltFromTokenizerJsonAgrees()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var json = SmolLM2();
        var merges = SmolLM2Json()["model"]!["merges"]!.AsArray().Select(m => m!.GetValue<string>()).ToArray();
        string[] tokens = [.. Enumerable.Range(0, json.VocabSize).Select(json.TokenToString)];
        int[] types = [.. Enumerable.Range(0, json.VocabSize).Select(i => (int)json.KindOf(i))];
        string path = Path.Combine(_dir, "smollm2-vocab.gguf");
        new GgufWriter()
            .Set("general.architecture", "llama")
            .Set("tokenizer.ggml.model", "gpt2")
            .Set("tokenizer.ggml.pre", "smollm")
            .Set("tokenizer.ggml.tokens", tokens)
            .Set("tokenizer.ggml.token_type", types)
            .Set("tokenizer.ggml.merges", merges)
            .Set("tokenizer.ggml.bos_token_id", 1u)
            .Set("tokenizer.ggml.eos_token_id", 2u)
            .Set("tokenizer.ggml.add_bos_token", false)
            .Write(path);
        using var file = GgufFile.Open(path);
        var gguf = TokenizerLoader.FromGguf(file);

        foreach (var (text, _) in Vectors("gpt-2"))
        {
            Assert.Equal(json.Encode(text, false), gguf.Encode(text, false));
        }

        string wiki = WikiText!;
        Assert.Equal(json.Encode(wiki, false), gguf.Encode(wiki, false));
        Assert.Equal([2, 0], gguf.EosIds);
    }

    /// <summary>
    /// Byte-level BPE merges run in Microsoft.ML.Tokenizers when it covers the case; Minnow's own merge loop (used for
    /// byte fallback and ignore_merges) must give the same ids on every word of WikiText.
    /// </summary>
    [Fact]
    public void SharedData_OwnBpeMatchesMicrosoftMLTokenizers()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var model = SmolLM2Json()["model"]!;
        var vocab = model["vocab"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>());
        var merges = model["merges"]!.AsArray().Select(m => m!.GetValue<string>().Split(' ')).Select(p => (p[0], p[1])).ToList();
        var library = LibraryBpeModel.TryCreate(vocab, merges);
        Assert.NotNull(library);
        var own = new BpeModel(vocab, merges, byteLevel: true, byteFallback: false, unknownId: null, fuseUnknown: false, ignoreMerges: false);
        var pre = new SequencePreTokenizer([new SplitPreTokenizer(char.IsNumber, SplitBehavior.Isolated), new ByteLevelPreTokenizer(false, true)]);
        string extra = " a\u0004b \u0013\u0014 x\u00ffy"; // bytes SmolLM2's vocabulary cannot spell are dropped
        var words = pre.Split(WikiText! + string.Concat(Vectors("gpt-2").Select(v => v.Text)) + extra, atTextStart: true).Distinct().ToList();
        Assert.True(words.Count > 10000);
        var a = new List<int>();
        var b = new List<int>();
        foreach (string word in words)
        {
            a.Clear();
            b.Clear();
            library.Encode(word, a);
            own.Encode(word, b);
            Assert.True(a.SequenceEqual(b), $"{Show(word)}: library [{string.Join(' ', a)}], own [{string.Join(' ', b)}]");
        }

        Assert.Contains("Microsoft.ML.Tokenizers", SmolLM2().Description);
        Assert.Contains("Microsoft.ML.Tokenizers", Gguf("gpt-2").Description);
    }

    /// <summary>
    /// Builds a Llama-2-style tokenizer.json (BPE with byte fallback, Prepend/Replace normalizer, Strip decoder) from
    /// a SentencePiece GGUF vocabulary, deriving the merges from the scores as transformers' LlamaConverter does.
    /// </summary>
    private static string SpmTokenizerJson(string vocab)
    {
        var m = GgufFile.ReadMetadata(GgufPath(vocab));
        string[] tokens = m.GetStringArray("tokenizer.ggml.tokens");
        float[] scores = m.GetArray<float>("tokenizer.ggml.scores");
        int[] types = m.GetArray<int>("tokenizer.ggml.token_type");
        var ids = new Dictionary<string, int>();
        for (int i = 0; i < tokens.Length; i++)
        {
            ids.TryAdd(tokens[i], i);
        }

        var merges = new List<(string L, string R, float Score)>();
        for (int i = 0; i < tokens.Length; i++)
        {
            if (types[i] != 1)
            {
                continue;
            }

            string piece = tokens[i];
            var local = new List<(string, string, float)>();
            for (int k = 1; k < piece.Length; k++)
            {
                if (char.IsLowSurrogate(piece[k]))
                {
                    continue;
                }

                string l = piece[..k], r = piece[k..];
                if (ids.TryGetValue(l, out int li) && ids.TryGetValue(r, out int ri) && types[li] == 1 && types[ri] == 1)
                {
                    local.Add((l, r, scores[i]));
                }
            }

            merges.AddRange(local.OrderBy(x => ids[x.Item1]).ThenBy(x => ids[x.Item2]));
        }

        var sorted = merges.OrderByDescending(x => x.Score).ToList(); // stable, as Python's sorted
        var vocabObject = new JsonObject();
        for (int i = 0; i < tokens.Length; i++)
        {
            vocabObject[tokens[i]] = i;
        }

        var added = new JsonArray();
        for (int i = 0; i < tokens.Length; i++)
        {
            if (types[i] is 2 or 3)
            {
                added.Add(new JsonObject { ["id"] = i, ["content"] = tokens[i], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true });
            }
        }

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = added,
            ["normalizer"] = JsonNode.Parse("""{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]}"""),
            ["pre_tokenizer"] = null,
            ["post_processor"] = JsonNode.Parse("""{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}}"""),
            ["decoder"] = JsonNode.Parse("""{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}"""),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = "<unk>",
                ["fuse_unk"] = true,
                ["byte_fallback"] = true,
                ["vocab"] = vocabObject,
                ["merges"] = new JsonArray([.. sorted.Select((x, i) => (JsonNode)(i % 2 == 0 ? JsonValue.Create($"{x.L} {x.R}") : new JsonArray(x.L, x.R)))]),
            },
        };
        return root.ToJsonString();
    }

    [Theory]
    [InlineData("llama-spm")]
    [InlineData("phi-3")]
    public void SharedData_SentencePieceStyleTokenizerJsonMatchesTestVectors(string vocab)
    {
        if (SharedData.Root is null)
        {
            return;
        }

        string folder = Path.Combine(_dir, vocab);
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), SpmTokenizerJson(vocab));
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), """{"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": true, "chat_template": "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"}""");
        var tok = TokenizerLoader.Load(folder);
        Assert.StartsWith("SentencePiece BPE with byte fallback", tok.Description);
        Assert.True(tok.AddsBos);
        Assert.True(tok.StripsLeadingSpace);
        Assert.Equal(2, tok.EosId);
        Assert.Equal(ChatFormat.Llama2, ChatTemplate.For(tok).Format);

        var failures = new List<string>();
        foreach (var (text, expected) in Vectors(vocab))
        {
            var ids = tok.Encode(text, addSpecial: false);
            if (!ids.SequenceEqual(expected))
            {
                failures.Add($"{Show(text)}: expected [{string.Join(' ', expected)}], got [{string.Join(' ', ids)}]");
            }

            Assert.Equal(text, tok.Decode(ids));
        }

        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.Equal([1, .. tok.Encode("Hello", false)], tok.Encode("Hello", addSpecial: true));

        // The whole corpus: same ids as the GGUF (score-based) tokenizer, and a round trip.
        string wiki = WikiText!;
        var ids2 = tok.Encode(wiki, false);
        Assert.Equal(Gguf(vocab).Encode(wiki, false), ids2);
        Assert.Equal(wiki, tok.Decode(ids2));
    }

    [Fact]
    public void ByteLevelTokenizerJsonWithSplitRegexAndIgnoreMerges()
    {
        // A tiny Qwen2-style byte-level tokenizer: Split(regex) then ByteLevel(use_regex = false).
        var vocab = new JsonObject();
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            vocab[ByteLevelMapping.ByteToChar((byte)b).ToString()] = next++;
        }

        string[] merged = ["he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld", "12"];
        foreach (string t in merged)
        {
            vocab[t] = next++;
        }

        vocab["lo"] = next++; // in the vocabulary but with no merge producing it
        string json = $$"""
        {
          "added_tokens": [{"id": {{next}}, "content": "<|endoftext|>", "special": true}, {"id": {{next + 1}}, "content": "<|im_end|>", "special": true, "lstrip": true}],
          "normalizer": {"type": "NFC"},
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]},
          "post_processor": {"type": "ByteLevel"},
          "decoder": {"type": "ByteLevel"},
          "model": {"type": "BPE", "vocab": {{vocab.ToJsonString()}},
                    "merges": [["h", "e"], "l l", ["he", "ll"], "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2"]}
        }
        """;
        var tok = TokenizerLoader.FromTokenizerJson(Encoding.UTF8.GetBytes(json));
        int Id(string t) => tok.StringToToken(t)!.Value;
        Assert.Equal([Id("hello"), Id("Ġworld")], tok.Encode("hello world", true));
        Assert.Equal([Id("1"), Id("2")], tok.Encode("12", false)); // \p{N} splits digits before the merge can apply
        Assert.Equal([Id("hello"), next + 1], tok.Encode("hello  <|im_end|>", false)); // lstrip eats the spaces
        Assert.Equal("héllo wörld 🦙\n", tok.Decode(tok.Encode("héllo wörld 🦙\n", false)));
        Assert.Equal(next + 2, tok.VocabSize);
        Assert.Null(tok.BosId);
        Assert.Equal([next + 1, next], tok.EosIds); // <|im_end|>, <|endoftext|>

        // With ignore_merges, a word found in the vocabulary is used whole ("lo" has no merge).
        string ignoring = json.Replace("\"type\": \"BPE\",", "\"type\": \"BPE\", \"ignore_merges\": true,");
        Assert.Equal([Id("lo")], TokenizerLoader.FromTokenizerJson(Encoding.UTF8.GetBytes(ignoring)).Encode("lo", false));
        Assert.Equal([Id("l"), Id("o")], tok.Encode("lo", false));
    }

    [Fact]
    public void MetaspacePreTokenizerAndDecoder()
    {
        string json = """
        {
          "added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true}],
          "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
          "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
          "model": {"type": "BPE", "unk_token": "<unk>", "vocab": {"<unk>": 0, "<s>": 1, "▁": 2, "a": 3, "b": 4, "▁a": 5, "ab": 6, "▁ab": 7},
                    "merges": ["▁ a", "a b", "▁a b"]}
        }
        """;
        var tok = TokenizerLoader.FromTokenizerJson(Encoding.UTF8.GetBytes(json));
        Assert.Equal([7, 7], tok.Encode("ab ab", false));
        Assert.Equal([1, 6], tok.Encode("<s>ab", false)); // "first": no prefix after a special token at the start
        Assert.Equal([2, 0, 7], tok.Encode("c ab", false)); // "▁", unknown "c", "▁ab"
        Assert.Equal("ab ab", tok.Decode([7, 7]));
    }

    [Fact]
    public void ReportsUnsupportedAndInvalidFiles()
    {
        MinnowException Load(string json) => Assert.Throws<MinnowException>(() => TokenizerLoader.FromTokenizerJson(Encoding.UTF8.GetBytes(json)));
        Assert.Contains("not valid JSON", Load("{ not json").Message);
        Assert.Contains("tokenizer model \"Unigram\" is not supported", Load("""{"model": {"type": "Unigram", "vocab": []}}""").Message);
        Assert.Contains("not a Hugging Face tokenizer.json", Load("""{"vocab": {}}""").Message);
        Assert.Contains("pre-tokenizer \"Bogus\" is not supported", Load("""{"pre_tokenizer": {"type": "Bogus"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}""").Message);
        Assert.Contains("the vocabulary is empty", Load("""{"model": {"type": "BPE", "vocab": {}, "merges": []}}""").Message);
        Assert.DoesNotContain('\n', Load("{ not json").Message);
    }
}
