using System.Text.RegularExpressions;

namespace Minnow.Tokenizers;

/// <summary>Splits a normalized segment into words that the BPE model encodes separately (Hugging Face "pre-tokenizer").</summary>
internal abstract class PreTokenizer
{
    /// <summary>Splits <paramref name="piece"/> and appends the non-empty words to <paramref name="output"/>.</summary>
    /// <param name="atTextStart">Whether the piece starts at the beginning of the whole input (for "first" prefix schemes).</param>
    public abstract void Split(string piece, bool atTextStart, List<string> output);

    /// <summary>Splits a whole segment.</summary>
    public List<string> Split(string segment, bool atTextStart)
    {
        var output = new List<string>();
        Split(segment, atTextStart, output);
        return output;
    }
}

internal sealed class SequencePreTokenizer(IReadOnlyList<PreTokenizer> steps) : PreTokenizer
{
    public IReadOnlyList<PreTokenizer> Steps => steps;

    public override void Split(string piece, bool atTextStart, List<string> output)
    {
        var current = new List<string> { piece };
        foreach (var step in steps)
        {
            var next = new List<string>(current.Count * 2);
            for (int i = 0; i < current.Count; i++)
            {
                step.Split(current[i], atTextStart && i == 0, next);
            }

            current = next;
        }

        output.AddRange(current);
    }
}

/// <summary>How a <see cref="SplitPreTokenizer"/> treats the delimiters it matches (Hugging Face's <c>SplitDelimiterBehavior</c>).</summary>
internal enum SplitBehavior
{
    Removed,
    Isolated,
    MergedWithPrevious,
    MergedWithNext,
    Contiguous,
}

/// <summary>Splits on the matches of a regular expression (or of a character predicate).</summary>
internal class SplitPreTokenizer : PreTokenizer
{
    private readonly Regex? _regex;
    private readonly Func<char, bool>? _predicate;
    private readonly SplitBehavior _behavior;
    private readonly bool _invert;

    public SplitPreTokenizer(Regex regex, SplitBehavior behavior, bool invert = false)
    {
        _regex = regex;
        _behavior = behavior;
        _invert = invert;
    }

    /// <summary>Each character satisfying <paramref name="predicate"/> is one match.</summary>
    public SplitPreTokenizer(Func<char, bool> predicate, SplitBehavior behavior, bool invert = false)
    {
        _predicate = predicate;
        _behavior = behavior;
        _invert = invert;
    }

    public override void Split(string piece, bool atTextStart, List<string> output)
    {
        if (piece.Length == 0)
        {
            return;
        }

        // The piece as alternating (start, end, isMatch) runs covering it entirely.
        var runs = new List<(int Start, int End, bool IsMatch)>();
        int previous = 0;
        if (_regex != null)
        {
            try
            {
                foreach (var m in _regex.EnumerateMatches(piece))
                {
                    if (m.Length == 0)
                    {
                        continue;
                    }

                    if (m.Index > previous)
                    {
                        runs.Add((previous, m.Index, _invert));
                    }

                    runs.Add((m.Index, m.Index + m.Length, !_invert));
                    previous = m.Index + m.Length;
                }
            }
            catch (RegexMatchTimeoutException)
            {
                // A pattern from a tokenizer file can backtrack catastrophically: refuse it instead of hanging.
                throw new MinnowException($"the tokenizer's pre-tokenizer regex /{Formats.SafeText.Of(_regex.ToString())}/ takes too long on this text (over {_regex.MatchTimeout.TotalSeconds:0} s); the tokenizer file is damaged or hostile.");
            }
        }
        else
        {
            for (int i = 0; i < piece.Length; i++)
            {
                if (_predicate!(piece[i]))
                {
                    if (i > previous)
                    {
                        runs.Add((previous, i, _invert));
                    }

                    runs.Add((i, i + 1, !_invert));
                    previous = i + 1;
                }
            }
        }

        if (previous < piece.Length)
        {
            runs.Add((previous, piece.Length, _invert));
        }

        if (runs.Count == 1 && _behavior != SplitBehavior.Removed)
        {
            output.Add(piece);
            return;
        }

        var pieces = new List<(int Start, int End)>(runs.Count);
        bool previousMatch = false;
        switch (_behavior)
        {
            case SplitBehavior.Isolated:
                foreach (var r in runs)
                {
                    pieces.Add((r.Start, r.End));
                }

                break;
            case SplitBehavior.Removed:
                foreach (var r in runs)
                {
                    if (!r.IsMatch)
                    {
                        pieces.Add((r.Start, r.End));
                    }
                }

                break;
            case SplitBehavior.MergedWithPrevious:
                foreach (var r in runs)
                {
                    if (r.IsMatch && !previousMatch && pieces.Count > 0)
                    {
                        pieces[^1] = (pieces[^1].Start, r.End);
                    }
                    else
                    {
                        pieces.Add((r.Start, r.End));
                    }

                    previousMatch = r.IsMatch;
                }

                break;
            case SplitBehavior.MergedWithNext:
                for (int i = runs.Count - 1; i >= 0; i--)
                {
                    var r = runs[i];
                    if (r.IsMatch && !previousMatch && pieces.Count > 0)
                    {
                        pieces[^1] = (r.Start, pieces[^1].End);
                    }
                    else
                    {
                        pieces.Add((r.Start, r.End));
                    }

                    previousMatch = r.IsMatch;
                }

                pieces.Reverse();
                break;
            case SplitBehavior.Contiguous:
                foreach (var r in runs)
                {
                    if (r.IsMatch == previousMatch && pieces.Count > 0)
                    {
                        pieces[^1] = (pieces[^1].Start, r.End);
                    }
                    else
                    {
                        pieces.Add((r.Start, r.End));
                    }

                    previousMatch = r.IsMatch;
                }

                break;
        }

        foreach (var (start, end) in pieces)
        {
            if (end > start)
            {
                output.Add(piece[start..end]);
            }
        }
    }
}

/// <summary>
/// GPT-2's byte-level pre-tokenizer: optionally prefixes a space, then splits with the GPT-2 regex. The mapping of
/// bytes to characters is done by the BPE model (<see cref="BpeModel"/> with byte-level input).
/// </summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
{
    private static readonly SplitPreTokenizer Gpt2Split = new(PreTokenizerPatterns.Create(PreTokenizerPatterns.Gpt2), SplitBehavior.Isolated);

    public override void Split(string piece, bool atTextStart, List<string> output)
    {
        if (addPrefixSpace && !piece.StartsWith(' '))
        {
            piece = " " + piece;
        }

        if (useRegex)
        {
            Gpt2Split.Split(piece, atTextStart, output);
        }
        else if (piece.Length > 0)
        {
            output.Add(piece);
        }
    }
}

/// <summary>SentencePiece-style: spaces become "▁", optionally prefixed, optionally split before each "▁".</summary>
internal sealed class MetaspacePreTokenizer(char replacement, MetaspacePrepend prepend, bool split) : PreTokenizer
{
    public override void Split(string piece, bool atTextStart, List<string> output)
    {
        string text = piece.Replace(' ', replacement);
        if (text.Length > 0 && !text.StartsWith(replacement) && (prepend == MetaspacePrepend.Always || (prepend == MetaspacePrepend.First && atTextStart)))
        {
            text = replacement + text;
        }

        if (!split)
        {
            if (text.Length > 0)
            {
                output.Add(text);
            }

            return;
        }

        int start = 0;
        for (int i = 1; i < text.Length; i++)
        {
            if (text[i] == replacement)
            {
                output.Add(text[start..i]);
                start = i;
            }
        }

        if (start < text.Length)
        {
            output.Add(text[start..]);
        }
    }
}

internal enum MetaspacePrepend
{
    Never,
    First,
    Always,
}
