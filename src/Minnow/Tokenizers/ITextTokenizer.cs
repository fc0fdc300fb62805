namespace Minnow.Tokenizers;

/// <summary>
/// Converts text to token ids and back, as the model's own tokenizer does (Hugging Face <c>tokenizer.json</c>,
/// a GGUF vocabulary, or a llama2.c <c>tokenizer.bin</c>). Implementations are immutable and thread-safe.
/// </summary>
public interface ITextTokenizer
{
    /// <summary>Number of token ids (the largest id + 1).</summary>
    int VocabSize { get; }

    /// <summary>The beginning-of-sequence token, if the vocabulary has one.</summary>
    int? BosId { get; }

    /// <summary>The end-of-sequence token, if the vocabulary has one.</summary>
    int? EosId { get; }

    /// <summary>All ids that end generation: <see cref="EosId"/> plus end-of-turn tokens such as <c>&lt;|im_end|&gt;</c>.</summary>
    IReadOnlyList<int> EosIds { get; }

    /// <summary>Whether <c>Encode(text, addSpecial: true)</c> prepends <see cref="BosId"/> (Llama SentencePiece: yes; GPT-2: no).</summary>
    bool AddsBos { get; }

    /// <summary>The model's chat template (Jinja source), if it has one; see <see cref="Tokenizers.ChatTemplate"/>.</summary>
    string? ChatTemplate { get; }

    /// <summary>
    /// Encodes text. Special tokens written in the text (<c>&lt;|im_start|&gt;</c>) are recognised. With
    /// <paramref name="addSpecial"/>, adds BOS (and EOS) where the model's tokenizer does.
    /// </summary>
    IReadOnlyList<int> Encode(string text, bool addSpecial);

    /// <summary>
    /// Encodes text; with <paramref name="parseSpecial"/> false, control tokens written in the text are encoded as
    /// plain text (llama.cpp's <c>parse_special = false</c>; user-defined added tokens are still matched).
    /// </summary>
    IReadOnlyList<int> Encode(string text, bool addSpecial, bool parseSpecial);

    /// <summary>Decodes ids to text; special tokens are rendered as their text (as Hugging Face's default).</summary>
    string Decode(IEnumerable<int> ids);

    /// <summary>Decodes ids to text, leaving out control tokens (BOS, EOS, ...) when <paramref name="skipSpecialTokens"/>.</summary>
    string Decode(IEnumerable<int> ids, bool skipSpecialTokens);

    /// <summary>The token's string as stored in the vocabulary (e.g. <c>"Ġthe"</c>, <c>"▁the"</c>, <c>"&lt;0x0A&gt;"</c>).</summary>
    string TokenToString(int id);

    /// <summary>The id of a vocabulary string (as stored, see <see cref="TokenToString"/>), or null.</summary>
    int? StringToToken(string token);

    /// <summary>The bytes a token contributes to decoded text (UTF-8, possibly a partial character).</summary>
    ReadOnlySpan<byte> TokenBytes(int id);

    /// <summary>Whether the id is a control token (BOS, EOS, <c>&lt;|im_end|&gt;</c>...), left out when decoding with skipping.</summary>
    bool IsSpecial(int id);

    /// <summary>Whether decoding removes one leading space (SentencePiece tokenizers that prepend "▁" when encoding).</summary>
    bool StripsLeadingSpace { get; }
}
