namespace Minnow.Tokenizers;

/// <summary>Encodes one raw text segment (the text between added tokens).</summary>
internal abstract class SegmentEncoder
{
    /// <param name="atTextStart">Whether the segment starts at the beginning of the input.</param>
    public abstract void Encode(string segment, bool atTextStart, List<int> output);
}

/// <summary>Hugging Face pipeline: normalizer, pre-tokenizer, then rank-based BPE per word.</summary>
internal sealed class BpeSegmentEncoder(TextNormalizer? normalizer, PreTokenizer? preTokenizer, WordEncoder model) : SegmentEncoder
{
    public WordEncoder Model => model;

    public override void Encode(string segment, bool atTextStart, List<int> output)
    {
        string text = normalizer?.Normalize(segment) ?? segment;
        if (preTokenizer == null)
        {
            model.Encode(text, output);
            return;
        }

        foreach (string word in preTokenizer.Split(text, atTextStart))
        {
            model.Encode(word, output);
        }
    }
}

/// <summary>llama.cpp / llama2.c SentencePiece: optional space prefix, spaces escaped, then score-based merges.</summary>
internal sealed class SentencePieceSegmentEncoder(SentencePieceModel model, bool addSpacePrefix, char? escapeSpaceAs) : SegmentEncoder
{
    public override void Encode(string segment, bool atTextStart, List<int> output)
    {
        string text = addSpacePrefix ? " " + segment : segment;
        if (escapeSpaceAs is char c)
        {
            text = text.Replace(' ', c);
        }

        model.Encode(text, output);
    }
}
