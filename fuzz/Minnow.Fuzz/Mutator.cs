using System.Text;

namespace Minnow.Fuzz;

/// <summary>Byte- and text-level mutations (an in-process stand-in for AFL's havoc stage).</summary>
public static class Mutator
{
    private static readonly long[] s_interesting = [0, 1, -1, 2, 7, 8, 31, 32, 127, 128, 255, 256, 4096, 65535, 65536, int.MaxValue, int.MinValue, uint.MaxValue, long.MaxValue, long.MinValue, 1L << 32, 1L << 40, 100_000_001];

    public static byte[] Mutate(byte[] seed, Random random, List<byte[]> all)
    {
        var data = new List<byte>(seed);
        int rounds = 1 + random.Next(random.Next(2) == 0 ? 2 : 6);
        for (int r = 0; r < rounds; r++)
        {
            if (data.Count == 0)
            {
                data.Add((byte)random.Next(256));
            }

            // Most damage happens where the structure is: the first kilobytes (headers), so bias there.
            int pos = random.Next(3) == 0 ? random.Next(data.Count) : random.Next(Math.Min(data.Count, 4096));
            switch (random.Next(10))
            {
                case 0:
                    data[pos] ^= (byte)(1 << random.Next(8));
                    break;
                case 1:
                    data[pos] = (byte)random.Next(256);
                    break;
                case 2:
                case 3:
                    {
                        long v = s_interesting[random.Next(s_interesting.Length)];
                        int width = new[] { 1, 2, 4, 8 }[random.Next(4)];
                        for (int i = 0; i < width && pos + i < data.Count; i++)
                        {
                            data[pos + i] = (byte)(v >> (8 * i));
                        }

                        break;
                    }

                case 4:
                    {
                        int cut = random.Next(data.Count);
                        data.RemoveRange(cut, data.Count - cut);
                        break;
                    }
                case 5:
                    {
                        int length = Math.Min(data.Count - pos, 1 + random.Next(64));
                        data.RemoveRange(pos, length);
                        break;
                    }

                case 6:
                    {
                        var other = all[random.Next(all.Count)];
                        int from = random.Next(other.Length);
                        int length = Math.Min(other.Length - from, 1 + random.Next(256));
                        data.InsertRange(pos, other.Skip(from).Take(length));
                        break;
                    }

                default:
                    TextMutation(data, pos, random);
                    break;
            }
        }

        return [.. data];
    }

    /// <summary>JSON-ish damage: numbers swapped for extremes, quotes and brackets dropped or repeated.</summary>
    private static void TextMutation(List<byte> data, int pos, Random random)
    {
        // Find the next digit, quote or bracket at or after pos.
        int i = pos;
        while (i < data.Count && !(char.IsAsciiDigit((char)data[i]) || data[i] is (byte)'"' or (byte)'[' or (byte)']' or (byte)'{' or (byte)'}' or (byte)','))
        {
            i++;
        }

        if (i >= data.Count)
        {
            return;
        }

        if (char.IsAsciiDigit((char)data[i]))
        {
            int end = i;
            while (end < data.Count && (char.IsAsciiDigit((char)data[end]) || data[end] is (byte)'.' or (byte)'e' or (byte)'E' or (byte)'-'))
            {
                end++;
            }

            string[] replacements = ["0", "-1", "1", "3", "2147483647", "2147483648", "-2147483648", "9223372036854775807", "18446744073709551616", "1e308", "1e400", "0.5", "-0", "65536", "1000000000"];
            data.RemoveRange(i, end - i);
            data.InsertRange(i, Encoding.ASCII.GetBytes(replacements[random.Next(replacements.Length)]));
            return;
        }

        switch (random.Next(4))
        {
            case 0:
                data.RemoveAt(i);
                break;
            case 1:
                data.InsertRange(i, Enumerable.Repeat(data[i], 1 + random.Next(200)));
                break;
            case 2:
                string[] values = ["null", "true", "[]", "{}", "\"\"", "\"\\u0000\\u001b[31m\"", "[[[[[[[[", "\"\\ud800\"", "-1", "1e999"];
                data.InsertRange(i + 1, Encoding.UTF8.GetBytes(values[random.Next(values.Length)]));
                break;
            default:
                data.Insert(i, (byte)random.Next(256));
                break;
        }
    }
}
