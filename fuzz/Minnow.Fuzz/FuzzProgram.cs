using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
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
                    // The fixtures are made inside the first run: instrumented code may only run once afl's shared memory is attached.
                    FuzzFixtures? fixtures = null;
                    string target = args[1];
                    SharpFuzz.Fuzzer.Run(stream =>
                    {
                        fixtures ??= new FuzzFixtures(root);
                        using var buffer = new MemoryStream();
                        stream.CopyTo(buffer);
                        FuzzTargets.Run(target, buffer.GetBuffer().AsSpan(0, (int)buffer.Length), fixtures);
                    });
                    fixtures?.Dispose();
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

            case "minimize":
                {
                    using var fixtures = new FuzzFixtures(root);
                    byte[] data = Minimize(args[1], File.ReadAllBytes(args[2]), fixtures);
                    File.WriteAllBytes(args[3], data);
                    Console.WriteLine($"{args[2]}: {new FileInfo(args[2]).Length} -> {data.Length} bytes");
                    return 0;
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

    /// <summary>The failure signature of an input (exception type and the first Minnow frame), or null when it is refused cleanly.</summary>
    private static string? Signature(string target, byte[] data, FuzzFixtures fixtures)
    {
        try
        {
            FuzzTargets.Run(target, data, fixtures);
            return null;
        }
        catch (Exception e)
        {
            var frame = new StackTrace(e, fNeedFileInfo: false).GetFrames().FirstOrDefault(f => f.GetMethod()?.DeclaringType?.Namespace?.StartsWith("Minnow", StringComparison.Ordinal) == true);
            return $"{e.GetType().Name} {frame?.GetMethod()?.DeclaringType?.Name}.{frame?.GetMethod()?.Name}";
        }
    }

    /// <summary>Delta debugging: removes ever smaller chunks while the input still fails the same way.</summary>
    private static byte[] Minimize(string target, byte[] data, FuzzFixtures fixtures)
    {
        string signature = Signature(target, data, fixtures) ?? throw new InvalidOperationException("the input does not fail");
        int attempts = 0;
        for (int chunk = Math.Max(1, data.Length / 2); chunk >= 1 && attempts < 4000; chunk /= 2)
        {
            for (int start = data.Length - chunk; start >= 0 && attempts < 4000; start -= chunk, attempts++)
            {
                byte[] candidate = [.. data.AsSpan(0, start), .. data.AsSpan(start + chunk)];
                if (Signature(target, candidate, fixtures) == signature)
                {
                    data = candidate;
                    start = Math.Min(start, data.Length - chunk + 1);
                }
            }

            if (chunk == 1)
            {
                break;
            }
        }

        return data;
    }

    private static void Save(string output, string target, byte[] data)
    {
        string hash = Convert.ToHexStringLower(SHA256.HashData(data))[..16];
        File.WriteAllBytes(Path.Combine(output, $"{target}-{hash}"), data);
    }
}
