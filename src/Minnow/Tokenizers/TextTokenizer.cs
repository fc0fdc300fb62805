using System.Text;

namespace Minnow.Tokenizers;

/// <summary>
/// The tokenizer built by <see cref="TokenizerLoader"/> from a <c>tokenizer.json</c>, a GGUF vocabulary or a
/// llama2.c <c>tokenizer.bin</c>: added/special tokens are matched in the text first, then each raw segment is
/// encoded by the model (byte-level BPE, SentencePiece-style BPE with byte fallback, or score-based SentencePiece).
/// Immutable and thread-safe.
/// </summary>
public sealed class TextTokenizer : ITextTokenizer
{
    /// <summary>Token ids that end generation when they are special tokens of the vocabulary (as llama.cpp's EOG list).</summary>
    internal static readonly string[] EndOfGenerationTexts =
    [
        "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>", "<EOT>",
        "<|return|>", "<|call|>", "<｜end▁of▁sentence｜>",
    ];

    private readonly string[] _tokens;
    private readonly TokenKind[] _kinds;
    private readonly byte[][] _bytes;
    private readonly Dictionary<string, int> _ids;
    private readonly AddedTokenSplitter _splitter;
    private readonly SegmentEncoder _encoder;
    private readonly int[] _prefixIds;
    private readonly int[] _suffixIds;

    internal TextTokenizer(
        string description,
        string[] tokens,
        TokenKind[] kinds,
        byte[][] tokenBytes,
        SegmentEncoder encoder,
        IEnumerable<AddedToken> addedTokens,
        int? bosId,
        int? eosId,
        IEnumerable<int> extraEosIds,
        int[] prefixIds,
        int[] suffixIds,
        bool stripsLeadingSpace,
        string? chatTemplate)
    {
        Description = description;
        _tokens = tokens;
        _kinds = kinds;
        _bytes = tokenBytes;
        _encoder = encoder;
        _splitter = new AddedTokenSplitter(addedTokens);
        _prefixIds = prefixIds;
        _suffixIds = suffixIds;
        BosId = bosId is int b && b >= 0 && b < tokens.Length ? b : null;
        EosId = eosId is int e && e >= 0 && e < tokens.Length ? e : null;
        StripsLeadingSpace = stripsLeadingSpace;
        ChatTemplate = string.IsNullOrWhiteSpace(chatTemplate) ? null : chatTemplate;
        _ids = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++)
        {
            _ids.TryAdd(tokens[i], i);
        }

        var eos = new List<int>();
        if (EosId is int eid)
        {
            eos.Add(eid);
        }

        foreach (int id in extraEosIds)
        {
            if (id >= 0 && id < tokens.Length && !eos.Contains(id))
            {
                eos.Add(id);
            }
        }

        foreach (string text in EndOfGenerationTexts)
        {
            if (_ids.TryGetValue(text, out int id) && kinds[id] is TokenKind.Control or TokenKind.UserDefined && !eos.Contains(id))
            {
                eos.Add(id);
            }
        }

        EosIds = eos;
    }

    /// <summary>A short description of the tokenizer ("byte-level BPE (tokenizer.json)", ...).</summary>
    public string Description { get; }

    public int VocabSize => _tokens.Length;

    public int? BosId { get; }

    public int? EosId { get; }

    public IReadOnlyList<int> EosIds { get; }

    public bool AddsBos => BosId is int b && _prefixIds.Contains(b);

    /// <summary>Ids added before the text by <c>Encode(text, addSpecial: true)</c>.</summary>
    public IReadOnlyList<int> PrefixIds => _prefixIds;

    /// <summary>Ids added after the text by <c>Encode(text, addSpecial: true)</c>.</summary>
    public IReadOnlyList<int> SuffixIds => _suffixIds;

    public string? ChatTemplate { get; }

    public bool StripsLeadingSpace { get; }

    public TokenKind KindOf(int id) => _kinds[id];

    public IReadOnlyList<int> Encode(string text, bool addSpecial) => Encode(text, addSpecial, parseSpecial: true);

    public IReadOnlyList<int> Encode(string text, bool addSpecial, bool parseSpecial)
    {
        ArgumentNullException.ThrowIfNull(text);
        var output = new List<int>(text.Length / 3 + 4);
        if (addSpecial)
        {
            output.AddRange(_prefixIds);
        }

        if (_splitter.IsEmpty)
        {
            if (text.Length > 0)
            {
                _encoder.Encode(text, atTextStart: true, output);
            }
        }
        else
        {
            foreach (var segment in _splitter.Split(text, parseSpecial))
            {
                if (segment.IsToken)
                {
                    output.Add(segment.TokenId);
                }
                else
                {
                    _encoder.Encode(text.Substring(segment.Start, segment.Length), segment.Start == 0, output);
                }
            }
        }

        if (addSpecial)
        {
            output.AddRange(_suffixIds);
        }

        return output;
    }

    public string Decode(IEnumerable<int> ids) => Decode(ids, skipSpecialTokens: false);

    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)_tokens.Length || (skipSpecialTokens && IsSpecial(id)))
            {
                continue;
            }

            bytes.AddRange(_bytes[id]);
        }

        string text = Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
        return StripsLeadingSpace && text.StartsWith(' ') ? text[1..] : text;
    }

    public string TokenToString(int id) => _tokens[id];

    public int? StringToToken(string token) => _ids.TryGetValue(token, out int id) ? id : null;

    public ReadOnlySpan<byte> TokenBytes(int id) => (uint)id < (uint)_bytes.Length ? _bytes[id] : [];

    public bool IsSpecial(int id) => (uint)id < (uint)_kinds.Length && _kinds[id] is TokenKind.Control or TokenKind.Unknown or TokenKind.Unused;

    public override string ToString() => $"{Description}, {VocabSize} tokens";
}
