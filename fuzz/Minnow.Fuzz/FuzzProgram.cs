using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Minnow.Cli;

namespace Minnow.Fuzz;

/// <summary>
/// <c>Minnow.Fuzz afl TARGET</c>: the SharpFuzz entry point afl-fuzz drives (scripts/fuzz.sh).
/// <c>Minnow.Fuzz sweep TARGET SECONDS OUT SEED...</c>: an in-process mutation sweep (bit flips, interesting
/// values, truncations, splices) for finding crashers fast without AFL; findings are written to OUT.
/// <c>Minnow.Fuzz replay TARGET FILE...</c>: runs files through a target and prints the outcome.
/// <c>Minnow.Fuzz seeds OUT</c>: writes a seed corpus per target, made from the project's own model and exports.
/// </summary>
public static class FuzzProgram
{
    public static int Main(string[] args)
    {
        if (args.Length < 2)
        {
            Console.Error.WriteLine("usage: Minnow.Fuzz afl TARGET | sweep TARGET SECONDS OUT SEED... | replay TARGET FILE... | seeds OUT");
            return 2;
        }

        string root = RepositoryRoot();
        switch (args[0])
        {
            case "afl":
                {
                    using var fixtures = new FuzzFixtures(root);
                    string target = args[1];
                    SharpFuzz.Fuzzer.Run(stream =>
                    {
                        using var buffer = new MemoryStream();
                        stream.CopyTo(buffer);
                        FuzzTargets.Run(target, buffer.GetBuffer().AsSpan(0, (int)buffer.Length), fixtures);
                    });
                    return 0;
                }

            case "sweep":
                return Sweep(args[1], double.Parse(args[2], CultureInfo.InvariantCulture), args[3], args[4..], root);

            case "replay":
                {
                    using var fixtures = new FuzzFixtures(root);
                    int findings = 0;
                    foreach (string file in args[2..])
                    {
                        try
                        {
                            FuzzTargets.Run(args[1], File.ReadAllBytes(file), fixtures);
                            Console.WriteLine($"ok       {file}");
                        }
                        catch (Exception e)
                        {
                            findings++;
                            Console.WriteLine($"FINDING  {file}: {e.GetType().Name}: {FuzzFixtures.Printable(e.Message)}\n{e.StackTrace}");
                        }
                    }

                    return findings == 0 ? 0 : 1;
                }

            case "seeds":
                Seeds.Write(args[1], root);
                return 0;

            default:
                Console.Error.WriteLine($"unknown mode '{args[0]}'");
                return 2;
        }
    }

    private static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "Minnow.slnx")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("Minnow.slnx not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Mutates the seeds for <paramref name="seconds"/> and runs each mutant; returns 1 when anything was found.</summary>
    private static int Sweep(string target, double seconds, string output, string[] seedPaths, string root)
    {
        var seeds = seedPaths.SelectMany(p => Directory.Exists(p) ? Directory.GetFiles(p) : [p]).Select(File.ReadAllBytes).ToList();
        if (seeds.Count == 0)
        {
            Console.Error.WriteLine("no seeds");
            return 2;
        }

        using var fixtures = new FuzzFixtures(root);
        var random = new Random(12345);
        var watch = Stopwatch.StartNew();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        long runs = 0;
        Directory.CreateDirectory(output);
        foreach (var seed in seeds)
        {
            FuzzTargets.Run(target, seed, fixtures);
        }

        while (watch.Elapsed.TotalSeconds < seconds)
        {
            byte[] seed = seeds[random.Next(seeds.Count)];
            byte[] mutant = Mutator.Mutate(seed, random, seeds);
            runs++;
            long before = GC.GetAllocatedBytesForCurrentThread();
            var caseWatch = Stopwatch.StartNew();
            string? finding = null;
            try
            {
                FuzzTargets.Run(target, mutant, fixtures);
            }
            catch (Exception e)
            {
                var frame = new StackTrace(e, fNeedFileInfo: false).GetFrames().FirstOrDefault(f => f.GetMethod()?.DeclaringType?.Namespace?.StartsWith("Minnow", StringComparison.Ordinal) == true);
                finding = $"{e.GetType().Name} at {frame?.GetMethod()?.DeclaringType?.Name}.{frame?.GetMethod()?.Name}: {FuzzFixtures.Printable(e.Message.Length > 300 ? e.Message[..300] : e.Message)}";
                string signature = $"{e.GetType().Name} {frame?.GetMethod()?.DeclaringType?.Name}.{frame?.GetMethod()?.Name}";
                if (seen.Add(signature))
                {
                    Save(output, target, mutant);
                    Console.WriteLine($"FINDING  {finding}\n{e.StackTrace}");
                }
            }

            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (finding is null && allocated > (64L * mutant.Length) + (256L << 20))
            {
                if (seen.Add("allocation"))
                {
                    Save(output, target, mutant);
                    Console.WriteLine($"FINDING  allocated {allocated} bytes for a {mutant.Length}-byte input");
                }
            }

            if (caseWatch.Elapsed.TotalSeconds > 5 && seen.Add("slow"))
            {
                Save(output, target, mutant);
                Console.WriteLine($"FINDING  one case took {caseWatch.Elapsed.TotalSeconds:0.0} s");
            }
        }

        double rate = runs / watch.Elapsed.TotalSeconds;
        Console.WriteLine($"sweep {target}: {runs} executions in {watch.Elapsed.TotalSeconds:0} s ({rate:0.0}/s), {seen.Count} distinct findings");
        return seen.Count == 0 ? 0 : 1;
    }

    private static void Save(string output, string target, byte[] data)
    {
        string hash = Convert.ToHexStringLower(SHA256.HashData(data))[..16];
        File.WriteAllBytes(Path.Combine(output, $"{target}-{hash}"), data);
    }
}

/// <summary>Byte- and text-level mutations (an in-process stand-in for AFL's havoc stage).</summary>
internal static class Mutator
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
