using System.Text;

namespace Minnow.Tokenizers;

/// <summary>
/// GPT-2's reversible byte ↔ character mapping (<c>bytes_to_unicode</c>): byte-level BPE vocabularies spell every
/// byte as a printable character, e.g. a space as 'Ġ' (U+0120) and a newline as 'Ċ' (U+010A).
/// </summary>
public static class ByteLevelMapping
{
    private static readonly char[] ByteToCharTable = BuildTable();
    private static readonly short[] CharToByteTable = BuildReverse();

    /// <summary>The character that spells <paramref name="b"/>.</summary>
    public static char ByteToChar(byte b) => ByteToCharTable[b];

    /// <summary>The byte spelled by <paramref name="c"/>, or -1 if the character is not part of the mapping.</summary>
    public static int CharToByte(char c) => c < CharToByteTable.Length ? CharToByteTable[c] : -1;

    /// <summary>Spells the UTF-8 bytes of <paramref name="text"/> with the mapping characters.</summary>
    public static string Encode(ReadOnlySpan<char> text)
    {
        int byteCount = Encoding.UTF8.GetByteCount(text);
        Span<byte> bytes = byteCount <= 512 ? stackalloc byte[byteCount] : new byte[byteCount];
        Encoding.UTF8.GetBytes(text, bytes);
        return string.Create(byteCount, bytes.ToArray(), static (chars, b) =>
        {
            for (int i = 0; i < b.Length; i++)
            {
                chars[i] = ByteToCharTable[b[i]];
            }
        });
    }

    /// <summary>
    /// The bytes spelled by a byte-level token string. Characters outside the mapping (which byte-level vocabularies
    /// should not contain) are kept as their UTF-8 encoding.
    /// </summary>
    public static byte[] Decode(string token)
    {
        var result = new List<byte>(token.Length);
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < token.Length; i++)
        {
            int b = CharToByte(token[i]);
            if (b >= 0)
            {
                result.Add((byte)b);
                continue;
            }

            int length = char.IsHighSurrogate(token[i]) && i + 1 < token.Length ? 2 : 1;
            int n = Encoding.UTF8.GetBytes(token.AsSpan(i, length), utf8);
            for (int k = 0; k < n; k++)
            {
                result.Add(utf8[k]);
            }

            i += length - 1;
        }

        return [.. result];
    }

    private static char[] BuildTable()
    {
        var table = new char[256];
        var direct = new bool[256];
        for (int b = '!'; b <= '~'; b++)
        {
            direct[b] = true;
        }

        for (int b = 0xA1; b <= 0xAC; b++)
        {
            direct[b] = true;
        }

        for (int b = 0xAE; b <= 0xFF; b++)
        {
            direct[b] = true;
        }

        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            table[b] = direct[b] ? (char)b : (char)(256 + n++);
        }

        return table;
    }

    private static short[] BuildReverse()
    {
        var reverse = new short[512];
        Array.Fill(reverse, (short)-1);
        for (int b = 0; b < 256; b++)
        {
            reverse[ByteToCharTable[b]] = (short)b;
        }

        return reverse;
    }
}
