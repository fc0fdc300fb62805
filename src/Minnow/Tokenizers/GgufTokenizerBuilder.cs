using System.Globalization;
using System.Text;
using Minnow.Formats.Gguf;

namespace Minnow.Tokenizers;

/// <summary>Builds a tokenizer from the <c>tokenizer.*</c> metadata of a GGUF file, as llama.cpp does.</summary>
internal static class GgufTokenizerBuilder
{
    public static bool HasVocabulary(GgufMetadata m) =>
        m.TryGetString("tokenizer.ggml.model", out string? model) && model is not ("none" or "no_vocab") && m.ContainsKey("tokenizer.ggml.tokens");

    public static TextTokenizer Build(GgufMetadata m)
    {
        string source = m.Source;
        if (!m.TryGetString("tokenizer.ggml.model", out string? model))
        {
            throw new MinnowException($"{source}: the file has no tokenizer (tokenizer.ggml.model is missing); pass --tokenizer.");
        }

        if (model is "none" or "no_vocab")
        {
            throw new MinnowException($"{source}: the file has no vocabulary (tokenizer.ggml.model = \"{model}\"); pass --tokenizer.");
        }

        if (model is not ("llama" or "gpt2"))
        {
            throw new MinnowException($"{source}: tokenizer type \"{model}\" is not supported (Minnow supports \"llama\" SentencePiece and \"gpt2\" byte-level BPE).");
        }

        string[] tokens = m.GetStringArray("tokenizer.ggml.tokens");
        if (tokens.Length == 0)
        {
            throw new MinnowException($"{source}: tokenizer.ggml.tokens is empty.");
        }

        var kinds = new TokenKind[tokens.Length];
        if (m.TryGetArray<int>("tokenizer.ggml.token_type", out int[]? types))
        {
            if (types.Length != tokens.Length)
            {
                throw new MinnowException($"{source}: tokenizer.ggml.token_type has {types.Length} entries for {tokens.Length} tokens.");
            }

            for (int i = 0; i < types.Length; i++)
            {
                kinds[i] = types[i] is >= 1 and <= 6 ? (TokenKind)types[i] : TokenKind.Normal;
            }
        }
        else
        {
            Array.Fill(kinds, TokenKind.Normal);
        }

        int? Id(string key, int? fallback)
        {
            if (!m.ContainsKey(key))
            {
                return fallback;
            }

            // Ids outside the vocabulary (llama.cpp writes -1 or 0xFFFFFFFF for "none") mean there is no such token.
            return m.TryGetLong(key, out long id) && id >= 0 && id < tokens.Length ? (int)id : null;
        }

        bool spm = model == "llama";
        int? bos = Id("tokenizer.ggml.bos_token_id", spm ? 1 : null);
        int? eos = Id("tokenizer.ggml.eos_token_id", spm ? 2 : null);
        int? unk = Id("tokenizer.ggml.unknown_token_id", spm ? 0 : null);
        var extraEos = new List<int>();
        foreach (string key in (string[])["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"])
        {
            if (Id(key, null) is int id)
            {
                extraEos.Add(id);
            }
        }

        // Without token types (old files), the special ids are at least control tokens.
        if (types == null)
        {
            foreach (int? id in (int?[])[bos, eos])
            {
                if (id is int i)
                {
                    kinds[i] = TokenKind.Control;
                }
            }

            if (unk is int u)
            {
                kinds[u] = TokenKind.Unknown;
            }
        }

        string? pre = m.GetString("tokenizer.ggml.pre", null);
        bool addBos = m.GetBool("tokenizer.ggml.add_bos_token", spm || PreTokenizerPatterns.IgnoresMerges(pre));
        bool addEos = m.GetBool("tokenizer.ggml.add_eos_token", false);
        int[] prefix = addBos && bos is int b ? [b] : [];
        int[] suffix = addEos && eos is int e ? [e] : [];
        string? chatTemplate = m.GetString("tokenizer.chat_template", null);

        // Added tokens are matched in the text before the model: control and unknown tokens only when parsing
        // special tokens, user-defined ones always (llama.cpp's tokenizer_st_partition). Phi-3 strips the
        // whitespace after its special tokens (as llama.cpp does for that model).
        string name = m.GetString("general.name", "") ?? "";
        bool phi3 = name.Contains("phi-3", StringComparison.OrdinalIgnoreCase) || name.Contains("phi3", StringComparison.OrdinalIgnoreCase);
        var added = new List<AddedToken>();
        for (int i = 0; i < tokens.Length; i++)
        {
            if (kinds[i] is TokenKind.Control or TokenKind.UserDefined or TokenKind.Unknown)
            {
                bool rstrip = phi3 && tokens[i] is not ("<unk>" or "<s>" or "<|endoftext|>");
                added.Add(new AddedToken(tokens[i], i, Special: kinds[i] != TokenKind.UserDefined, RStrip: rstrip));
            }
        }

        var tokenBytes = new byte[tokens.Length][];
        if (spm)
        {
            bool addSpacePrefix = m.GetBool("tokenizer.ggml.add_space_prefix", true);
            if (!m.TryGetArray<float>("tokenizer.ggml.scores", out float[]? scores))
            {
                scores = new float[tokens.Length];
            }
            else if (scores.Length != tokens.Length)
            {
                throw new MinnowException($"{source}: tokenizer.ggml.scores has {scores.Length} entries for {tokens.Length} tokens.");
            }

            var pieces = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
            var byteIds = new int[256];
            Array.Fill(byteIds, -1);
            for (int i = 0; i < tokens.Length; i++)
            {
                if (TryParseByteToken(tokens[i], out byte value) && (kinds[i] == TokenKind.Byte || types == null))
                {
                    kinds[i] = TokenKind.Byte;
                    if (byteIds[value] < 0)
                    {
                        byteIds[value] = i;
                    }

                    tokenBytes[i] = [value];
                    continue;
                }

                if (kinds[i] == TokenKind.Normal)
                {
                    pieces.TryAdd(tokens[i], i);
                }

                tokenBytes[i] = Encoding.UTF8.GetBytes(kinds[i] is TokenKind.Normal or TokenKind.UserDefined ? tokens[i].Replace('▁', ' ') : tokens[i]);
            }

            var encoder = new SentencePieceSegmentEncoder(new SentencePieceModel(pieces, scores, byteIds, unk, meta: '▁'), addSpacePrefix, '▁');
            return new TextTokenizer("SentencePiece (GGUF)", tokens, kinds, tokenBytes, encoder, added, bos, eos, extraEos, prefix, suffix,
                stripsLeadingSpace: addSpacePrefix, chatTemplate);
        }

        // gpt2: byte-level BPE with a pre-tokenizer regex chosen by tokenizer.ggml.pre.
        string[] patterns = PreTokenizerPatterns.ForGgufPre(pre)
            ?? throw new MinnowException($"{source}: pre-tokenizer \"{pre}\" (tokenizer.ggml.pre) is not supported.");
        string[] mergeLines = m.GetStringArray("tokenizer.ggml.merges");
        var merges = new List<(string, string)>(mergeLines.Length);
        foreach (string line in mergeLines)
        {
            int space = line.IndexOf(' ', 1);
            if (space < 0)
            {
                throw new MinnowException($"{source}: invalid merge \"{line}\" in tokenizer.ggml.merges.");
            }

            merges.Add((line[..space], line[(space + 1)..]));
        }

        var vocab = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++)
        {
            if (kinds[i] is TokenKind.Normal or TokenKind.Byte)
            {
                vocab.TryAdd(tokens[i], i);
                tokenBytes[i] = ByteLevelMapping.Decode(tokens[i]);
            }
            else
            {
                tokenBytes[i] = Encoding.UTF8.GetBytes(tokens[i]);
            }
        }

        bool ignoreMerges = PreTokenizerPatterns.IgnoresMerges(pre);
        WordEncoder? library = ignoreMerges ? null : LibraryBpeModel.TryCreate(vocab, merges);
        WordEncoder bpe = library ?? new BpeModel(vocab, merges, byteLevel: true, byteFallback: false, unknownId: null, fuseUnknown: false, ignoreMerges);
        PreTokenizer preTokenizer = patterns.Length == 1
            ? new SplitPreTokenizer(PreTokenizerPatterns.Create(patterns[0]), SplitBehavior.Isolated)
            : new SequencePreTokenizer([.. patterns.Select(p => new SplitPreTokenizer(PreTokenizerPatterns.Create(p), SplitBehavior.Isolated))]);
        return new TextTokenizer(library != null ? "byte-level BPE (GGUF, Microsoft.ML.Tokenizers)" : "byte-level BPE (GGUF)", tokens, kinds, tokenBytes, new BpeSegmentEncoder(null, preTokenizer, bpe), added,
            bos, eos, extraEos, prefix, suffix, stripsLeadingSpace: false, chatTemplate);
    }

    /// <summary>Parses a byte-fallback token "&lt;0xXX&gt;".</summary>
    internal static bool TryParseByteToken(string token, out byte value)
    {
        value = 0;
        return token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out value);
    }
}
