namespace Minnow.Tokenizers;

/// <summary>What a vocabulary entry is (the values of GGUF's <c>tokenizer.ggml.token_type</c>).</summary>
public enum TokenKind : byte
{
    /// <summary>A piece of text produced by the BPE/SentencePiece model.</summary>
    Normal = 1,

    /// <summary>The unknown token (<c>&lt;unk&gt;</c>).</summary>
    Unknown = 2,

    /// <summary>A control token (BOS, EOS, <c>&lt;|im_start|&gt;</c>...): matched in text, left out when decoding with skipping.</summary>
    Control = 3,

    /// <summary>A user-defined (added, non-special) token: matched in text before the model runs, always decoded.</summary>
    UserDefined = 4,

    /// <summary>A reserved, unused entry.</summary>
    Unused = 5,

    /// <summary>A byte-fallback token <c>&lt;0xXX&gt;</c>.</summary>
    Byte = 6,
}
