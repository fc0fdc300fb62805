using System.Text;
using System.Text.Json;

namespace Minnow.Formats;

/// <summary>
/// Reads JSON from a user's file (config.json, tokenizer.json, a safetensors header, ...) so that damage gives one
/// clear <see cref="MinnowException"/>: the syntax, every string and every property name are checked up front (a
/// <see cref="JsonDocument"/> defers invalid UTF-8 and lone surrogates to the first <c>GetString</c>, which then
/// throws far from the file), and messages give a position instead of quoting the damaged bytes.
/// </summary>
public static class JsonInput
{
    /// <summary>Parses <paramref name="utf8"/> (a leading byte-order mark is skipped); <paramref name="source"/> names the file in errors.</summary>
    public static JsonDocument Parse(ReadOnlyMemory<byte> utf8, string source, JsonDocumentOptions options = default)
    {
        if (utf8.Span.StartsWith("\xEF\xBB\xBF"u8))
        {
            utf8 = utf8[3..];
        }

        var reader = new Utf8JsonReader(utf8.Span, new JsonReaderOptions
        {
            AllowTrailingCommas = options.AllowTrailingCommas,
            CommentHandling = options.CommentHandling,
            MaxDepth = options.MaxDepth,
        });
        try
        {
            while (reader.Read())
            {
                if (reader.TokenType is JsonTokenType.String or JsonTokenType.PropertyName)
                {
                    try
                    {
                        _ = reader.GetString();
                    }
                    catch (InvalidOperationException)
                    {
                        throw new MinnowException($"{source}: not valid JSON (the string at byte {reader.TokenStartIndex} is not valid UTF-8 text).");
                    }
                }
            }
        }
        catch (JsonException e)
        {
            throw new MinnowException($"{source}: not valid JSON ({Describe(e)}).");
        }

        try
        {
            return JsonDocument.Parse(utf8, options);
        }
        catch (JsonException e)
        {
            throw new MinnowException($"{source}: not valid JSON ({Describe(e)}).");
        }
    }

    /// <summary>Reads and parses a JSON file.</summary>
    public static JsonDocument ParseFile(string path, JsonDocumentOptions options = default) =>
        Parse(File.ReadAllBytes(path), path, options);

    /// <summary>Where the syntax broke, without quoting the file (its bytes may be anything).</summary>
    private static string Describe(JsonException e)
    {
        string where = e.LineNumber is long line ? $"line {line + 1}, byte {(e.BytePositionInLine ?? 0) + 1}" : "position unknown";
        string message = e.Message;
        // The runtime's message starts with what went wrong, but may quote the damaged text in '...': keep only printable text.
        int cut = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        if (cut > 0)
        {
            message = message[..cut];
        }

        return $"{where}: {SafeText.Of(message, 120)}";
    }
}

/// <summary>Makes text from a file safe to put in a one-line message.</summary>
public static class SafeText
{
    /// <summary>
    /// <paramref name="text"/> with control characters, undecodable bytes (U+FFFD) and lone surrogates written as
    /// <c>\xNN</c> / <c>\uNNNN</c>, cut to <paramref name="max"/> characters (names in a damaged file can be anything).
    /// </summary>
    public static string Of(string? text, int max = 80) => Escape(text, max, keepNewlines: false);

    /// <summary>A whole message: as <see cref="Of"/>, but line breaks are kept and the cut is at <see cref="MinnowException.MaxMessageLength"/>.</summary>
    public static string Message(string? text) => Escape(text, MinnowException.MaxMessageLength, keepNewlines: true);

    private static string Escape(string? text, int max, bool keepNewlines)
    {
        if (text is null)
        {
            return "";
        }

        if (text.Length <= max && !NeedsEscape(text, keepNewlines))
        {
            return text;
        }

        var sb = new StringBuilder(Math.Min(text.Length, max) + 8);
        int i = 0;
        for (; i < text.Length && sb.Length < max; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                sb.Append(c).Append(text[++i]);
            }
            else if (keepNewlines && c == '\n')
            {
                sb.Append(c);
            }
            else if (c < 0x20 || c == 0x7F)
            {
                sb.Append("\\x").Append(((int)c).ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
            }
            else if (char.IsControl(c) || char.IsSurrogate(c) || c == '\uFFFD')
            {
                sb.Append("\\u").Append(((int)c).ToString("X4", System.Globalization.CultureInfo.InvariantCulture));
            }
            else
            {
                sb.Append(c);
            }
        }

        if (i < text.Length)
        {
            sb.Append('…');
        }

        return sb.ToString();
    }

    private static bool NeedsEscape(string text, bool keepNewlines)
    {
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i++;
            }
            else if ((char.IsControl(c) && !(keepNewlines && c == '\n')) || char.IsSurrogate(c) || c == '\uFFFD')
            {
                return true;
            }
        }

        return false;
    }
}
