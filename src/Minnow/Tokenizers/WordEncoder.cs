namespace Minnow.Tokenizers;

/// <summary>The BPE step: encodes one pre-tokenized word.</summary>
internal abstract class WordEncoder
{
    /// <summary>Encodes one word (raw text; byte-level mapping, if any, is applied here) and appends the ids.</summary>
    public abstract void Encode(ReadOnlySpan<char> word, List<int> output);
}
