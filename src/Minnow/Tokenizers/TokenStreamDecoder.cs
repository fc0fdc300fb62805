using System.Text;

namespace Minnow.Tokenizers;

/// <summary>
/// Decodes generated tokens one at a time: <see cref="Add"/> returns the text completed by the new token and holds
/// back the bytes of a character split across tokens (byte-level and byte-fallback vocabularies spell multi-byte
/// characters with several tokens). Concatenating all results and <see cref="Flush"/> gives the same text as
/// <see cref="ITextTokenizer.Decode(IEnumerable{int}, bool)"/> on the whole sequence. Not thread-safe.
/// </summary>
public sealed class TokenStreamDecoder
{
    private readonly ITextTokenizer _tokenizer;
    private readonly Decoder _utf8 = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private readonly bool _stripLeadingSpace;
    private char[] _chars = new char[64];
    private bool _started;

    /// <param name="tokenizer">The tokenizer whose ids are decoded.</param>
    /// <param name="skipSpecialTokens">Leave out control tokens (BOS, EOS, <c>&lt;|im_end|&gt;</c>...).</param>
    /// <param name="atStartOfText">
    /// Whether the first token begins the text: SentencePiece tokenizers then drop the leading space of the first
    /// word, as <c>Decode</c> does. Pass false when continuing after a prompt that is not decoded.
    /// </param>
    public TokenStreamDecoder(ITextTokenizer tokenizer, bool skipSpecialTokens = true, bool atStartOfText = true)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        SkipSpecialTokens = skipSpecialTokens;
        _stripLeadingSpace = atStartOfText && tokenizer.StripsLeadingSpace;
    }

    public bool SkipSpecialTokens { get; }

    /// <summary>Whether bytes of an incomplete UTF-8 character are held back.</summary>
    public bool HasPendingBytes { get; private set; }

    /// <summary>Adds one token and returns the newly completed text (possibly empty).</summary>
    public string Add(int id)
    {
        if (SkipSpecialTokens && _tokenizer.IsSpecial(id))
        {
            return "";
        }

        return Convert(_tokenizer.TokenBytes(id), flush: false);
    }

    /// <summary>Adds several tokens and returns the newly completed text.</summary>
    public string Add(IEnumerable<int> ids)
    {
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            sb.Append(Add(id));
        }

        return sb.ToString();
    }

    /// <summary>Ends the stream: returns held-back bytes as replacement characters (U+FFFD) and resets.</summary>
    public string Flush()
    {
        string rest = Convert([], flush: true);
        Reset();
        return rest;
    }

    /// <summary>Forgets held-back bytes and starts a new text.</summary>
    public void Reset()
    {
        _utf8.Reset();
        _started = false;
        HasPendingBytes = false;
    }

    private string Convert(ReadOnlySpan<byte> bytes, bool flush)
    {
        int needed = _utf8.GetCharCount(bytes, flush);
        if (needed > _chars.Length)
        {
            _chars = new char[Math.Max(needed, _chars.Length * 2)];
        }

        int count = _utf8.GetChars(bytes, _chars, flush);
        HasPendingBytes = !flush && _utf8.GetCharCount([], flush: true) > 0; // GetCharCount does not change the state
        var span = _chars.AsSpan(0, count);
        if (!_started && count > 0)
        {
            _started = true;
            if (_stripLeadingSpace && span[0] == ' ')
            {
                span = span[1..];
            }
        }

        return new string(span);
    }
}
