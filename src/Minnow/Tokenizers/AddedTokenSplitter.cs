namespace Minnow.Tokenizers;

/// <summary>A token matched literally in the text before the model runs (special and added tokens).</summary>
internal sealed record AddedToken(string Content, int Id, bool Special, bool LStrip = false, bool RStrip = false, bool SingleWord = false);

/// <summary>
/// Splits text into raw segments and added tokens, leftmost-longest (as Hugging Face tokenizers and llama.cpp
/// do): at the first position where any added token starts, the longest one wins.
/// </summary>
internal sealed class AddedTokenSplitter
{
    private readonly Dictionary<char, AddedToken[]> _byFirstChar = [];
    private readonly bool[] _isFirstChar = new bool[65536];

    public AddedTokenSplitter(IEnumerable<AddedToken> tokens)
    {
        foreach (var group in tokens.Where(t => t.Content.Length > 0).GroupBy(t => t.Content[0]))
        {
            _byFirstChar[group.Key] = [.. group.DistinctBy(t => t.Content).OrderByDescending(t => t.Content.Length)];
            _isFirstChar[group.Key] = true;
        }
    }

    public bool IsEmpty => _byFirstChar.Count == 0;

    /// <summary>A raw text segment (<see cref="TokenId"/> = -1) or a matched token.</summary>
    public readonly record struct Segment(int Start, int Length, int TokenId)
    {
        public bool IsToken => TokenId >= 0;
    }

    /// <summary>Splits <paramref name="text"/>; control tokens are matched only when <paramref name="parseSpecial"/>.</summary>
    public List<Segment> Split(string text, bool parseSpecial)
    {
        var result = new List<Segment>();
        int rawStart = 0;
        int i = 0;
        while (i < text.Length)
        {
            char c = text[i];
            AddedToken? match = null;
            if (_isFirstChar[c])
            {
                foreach (var token in _byFirstChar[c])
                {
                    if ((parseSpecial || !token.Special) && text.AsSpan(i).StartsWith(token.Content, StringComparison.Ordinal)
                        && (!token.SingleWord || IsWordBoundary(text, i, i + token.Content.Length)))
                    {
                        match = token;
                        break;
                    }
                }
            }

            if (match == null)
            {
                i++;
                continue;
            }

            int rawEnd = i;
            if (match.LStrip)
            {
                while (rawEnd > rawStart && char.IsWhiteSpace(text[rawEnd - 1]))
                {
                    rawEnd--;
                }
            }

            if (rawEnd > rawStart)
            {
                result.Add(new Segment(rawStart, rawEnd - rawStart, -1));
            }

            result.Add(new Segment(i, match.Content.Length, match.Id));
            i += match.Content.Length;
            if (match.RStrip)
            {
                while (i < text.Length && char.IsWhiteSpace(text[i]))
                {
                    i++;
                }
            }

            rawStart = i;
        }

        if (rawStart < text.Length)
        {
            result.Add(new Segment(rawStart, text.Length - rawStart, -1));
        }

        return result;
    }

    private static bool IsWordBoundary(string text, int start, int end) =>
        (start == 0 || !char.IsLetterOrDigit(text[start - 1])) && (end >= text.Length || !char.IsLetterOrDigit(text[end]));
}
