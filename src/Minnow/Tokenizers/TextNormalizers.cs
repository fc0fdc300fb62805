using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Minnow.Tokenizers;

/// <summary>A text transformation applied to each raw segment before pre-tokenization (Hugging Face "normalizer").</summary>
internal abstract class TextNormalizer
{
    public abstract string Normalize(string text);
}

internal sealed class SequenceNormalizer(IReadOnlyList<TextNormalizer> steps) : TextNormalizer
{
    public override string Normalize(string text)
    {
        foreach (var step in steps)
        {
            text = step.Normalize(text);
        }

        return text;
    }
}

/// <summary>Prepends a string to every non-empty segment (Llama's <c>Prepend("▁")</c>).</summary>
internal sealed class PrependNormalizer(string prefix) : TextNormalizer
{
    public override string Normalize(string text) => text.Length == 0 ? text : prefix + text;
}

internal sealed class ReplaceNormalizer : TextNormalizer
{
    private readonly string? _literal;
    private readonly Regex? _regex;
    private readonly string _content;

    public ReplaceNormalizer(string? literal, Regex? regex, string content)
    {
        _literal = literal;
        _regex = regex;
        _content = content;
    }

    public override string Normalize(string text) => _literal != null
        ? (_literal.Length == 0 ? text : text.Replace(_literal, _content, StringComparison.Ordinal))
        : _regex!.Replace(text, _content.Replace("$", "$$", StringComparison.Ordinal));
}

internal sealed class UnicodeNormalizer(NormalizationForm form) : TextNormalizer
{
    public override string Normalize(string text) => text.IsNormalized(form) ? text : text.Normalize(form);
}

internal sealed class LowercaseNormalizer : TextNormalizer
{
    public override string Normalize(string text) => text.ToLowerInvariant();
}

internal sealed class StripNormalizer(bool left, bool right) : TextNormalizer
{
    public override string Normalize(string text) => left && right ? text.Trim() : left ? text.TrimStart() : right ? text.TrimEnd() : text;
}

/// <summary>Removes combining marks (used after NFD/NFKD).</summary>
internal sealed class StripAccentsNormalizer : TextNormalizer
{
    public override string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (char c in text)
        {
            if (CharUnicodeInfo.GetUnicodeCategory(c) != UnicodeCategory.NonSpacingMark)
            {
                sb.Append(c);
            }
        }

        return sb.ToString();
    }
}
