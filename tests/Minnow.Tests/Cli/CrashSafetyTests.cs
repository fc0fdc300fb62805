using System.Diagnostics;
using System.Text.Json;
using Minnow.Formats.Gguf;
using Minnow.Formats.Safetensors;
using Minnow.Loading;
using Minnow.Models;
using Xunit.Abstractions;

namespace Minnow.Tests.Cli;

/// <summary>
/// Outputs survive kill -9 and a full disk: every file a command leaves is either the complete old one or the
/// complete new one (never a torn write), the next run removes the temporary files a killed run left, and a write
/// that runs out of space is one clean error that leaves nothing corrupt behind.
/// </summary>
public class CrashSafetyTests(ITestOutputHelper output)
{
    private static string DefaultModel => Path.Combine(SharedData.RepositoryRoot, "models", "default");

    /// <summary>One command to kill: its arguments given the output folder, the files it writes there, and how many kills.</summary>
    private sealed record Victim(string Name, Func<string, string, string[]> Arguments, int Kills);

    [Fact]
    public void KilledAtRandomMomentsEveryOutputIsCompleteAndLeftoversAreCleaned()
    {
        if (!Directory.Exists(DefaultModel))
        {
            return;
        }

        using var temp = new TempFolder();
        string text = temp.File("small.txt");
        File.WriteAllText(text, File.ReadAllText(Path.Combine(DefaultModel, "held-out.txt"))[..3000]);
        Victim[] victims =
        [
            new("export", (o, t) => ["export", DefaultModel, "--type", "q8_0", "--out", Path.Combine(o, "model.gguf")], 15),
            new("prune", (o, t) => ["prune", DefaultModel, "--method", "magnitude", "--sparsity", "0.5", "--no-speed", "--ctx", "64", "--chunks", "1", "--eval", t, "--out", o], 12),
            new("quantize", (o, t) => ["quantize", DefaultModel, "--scheme", "q8_0", "--method", "rtn", "--ctx", "64", "--chunks", "1", "--eval", t, "--calib", t, "--out", Path.Combine(o, "model.gguf")], 9),
            new("finetune", (o, t) => ["finetune", DefaultModel, "--data", t, "--steps", "2", "--batch", "1", "--ctx", "32", "--out", o], 9),
            new("optimize", (o, t) => ["optimize", DefaultModel, "--recipe", "q8_0", "--ctx", "64", "--chunks", "1", "--calib-tokens", "256", "--eval", t, "--calib", t, "--out", o], 9),
        ];

        var lines = new System.Collections.Concurrent.ConcurrentBag<string>();
        int totalKills = 0;
        Parallel.ForEach(victims, new ParallelOptions { MaxDegreeOfParallelism = 2 }, victim =>
        {
            string folder = Path.Combine(temp.Path, victim.Name);
            var random = new Random(victim.Name.Length * 31);

            // A complete run first, so the kills that follow interrupt the replacement of a valid output.
            var watch = Stopwatch.StartNew();
            var first = ProcessRunner.Run(victim.Arguments(folder, text));
            Assert.True(first.ExitCode == 0, $"{victim.Name}: {first}");
            double seconds = watch.Elapsed.TotalSeconds;
            CheckOutputs(folder, victim.Name);

            // Kill times are drawn within the shortest complete run seen (a busy machine makes runs vary), half of
            // them late, where the outputs are written; a run that ends before its kill counts as a complete run.
            int leftovers = 0, kills = 0;
            for (int attempt = 0; kills < victim.Kills && attempt < victim.Kills * 3; attempt++)
            {
                double fraction = attempt % 2 == 0 ? 0.05 + (0.9 * random.NextDouble()) : 0.7 + (0.3 * random.NextDouble());
                double at = seconds * fraction;
                var run = Stopwatch.StartNew();
                if (ProcessRunner.RunAndKill(victim.Arguments(folder, text), TimeSpan.FromSeconds(at)))
                {
                    kills++;
                }
                else
                {
                    seconds = Math.Min(seconds, run.Elapsed.TotalSeconds);
                }

                leftovers += TemporaryFiles(folder).Length;
                CheckOutputs(folder, $"{victim.Name} after a kill at {at:0.00} s");
            }

            Interlocked.Add(ref totalKills, kills);
            var last = ProcessRunner.Run(victim.Arguments(folder, text));
            Assert.True(last.ExitCode == 0, $"{victim.Name}: {last}");
            CheckOutputs(folder, victim.Name);
            Assert.True(TemporaryFiles(folder).Length == 0, $"{victim.Name}: the complete run left temporary files: {string.Join(", ", TemporaryFiles(folder))}");
            lines.Add($"{victim.Name}: shortest run {seconds:0.0} s, {kills} kills, {leftovers} temporary files seen after kills, all removed by the next run");
        });

        foreach (string line in lines.Order(StringComparer.Ordinal))
        {
            output.WriteLine(line);
        }

        Assert.True(totalKills >= 50, $"only {totalKills} runs were killed before they ended");
    }

    [Fact]
    public void FullDiskIsOneCleanErrorAndLeavesTheOldFileIntact()
    {
        if (!Directory.Exists(DefaultModel))
        {
            return;
        }

        using var temp = new TempFolder();
        string mount = temp.File("small-disk");
        Directory.CreateDirectory(mount);
        if (!TryMountTmpfs(mount, "4m", out string why))
        {
            output.WriteLine($"skipped: a size-limited tmpfs could not be mounted ({why}); the full-disk check needs root and mount permission.");
            return;
        }

        try
        {
            string target = Path.Combine(mount, "model.gguf");

            // 11 MiB of F32 weights into 4 MiB: the write fails with a clean error and leaves nothing.
            var full = Cli.Run("export", DefaultModel, "--type", "f32", "--out", target);
            Cli.AssertCleanError(full, target);
            Assert.False(File.Exists(target));
            Assert.Empty(Directory.GetFiles(mount));

            // A valid 3 MiB file, then a larger export over it: the error leaves the old file complete.
            var small = Cli.Run("export", DefaultModel, "--type", "q8_0", "--out", target);
            Assert.True(small.ExitCode == 0, small.ToString());
            byte[] before = File.ReadAllBytes(target);
            var again = Cli.Run("export", DefaultModel, "--type", "f16", "--out", target);
            Cli.AssertCleanError(again, target);
            Assert.Equal(before, File.ReadAllBytes(target));
            Assert.Equal([target], Directory.GetFiles(mount));
            using var model = ModelLoader.LoadModel(target);
            output.WriteLine($"full disk: {full.Stderr.Trim()}");
        }
        finally
        {
            using var umount = Process.Start(new ProcessStartInfo("umount", ["-l", mount]) { RedirectStandardError = true, UseShellExecute = false });
            umount?.WaitForExit(10_000);
        }
    }

    private static bool TryMountTmpfs(string folder, string size, out string why)
    {
        if (!OperatingSystem.IsLinux())
        {
            why = "not Linux";
            return false;
        }

        try
        {
            using var mount = Process.Start(new ProcessStartInfo("mount", ["-t", "tmpfs", "-o", $"size={size}", "tmpfs", folder])
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
                UseShellExecute = false,
            })!;
            string error = mount.StandardError.ReadToEnd();
            mount.WaitForExit(10_000);
            why = error.Trim();
            return mount.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            why = e.Message;
            return false;
        }
    }

    private static string[] TemporaryFiles(string folder) =>
        Directory.Exists(folder) ? Directory.GetFiles(folder, "*.tmp", SearchOption.AllDirectories) : [];

    /// <summary>Every output file present opens as what it claims to be, completely.</summary>
    private static void CheckOutputs(string folder, string when)
    {
        if (!Directory.Exists(folder))
        {
            return;
        }

        foreach (string file in Directory.GetFiles(folder))
        {
            string name = Path.GetFileName(file);
            if (name.EndsWith(".tmp", StringComparison.Ordinal))
            {
                continue;
            }

            try
            {
                switch (Path.GetExtension(name))
                {
                    case ".gguf":
                        using (var model = ModelLoader.LoadModel(file))
                        {
                            Assert.True(model.Weights.ParameterCount > 0);
                        }

                        break;
                    case ".safetensors":
                        using (var st = SafetensorsFile.Open(file))
                        {
                            Assert.NotEmpty(st.Tensors);
                            foreach (var t in st.Tensors.Values)
                            {
                                _ = t.ToFloatArray();
                            }
                        }

                        break;
                    case ".json":
                        using (var doc = JsonDocument.Parse(File.ReadAllBytes(file)))
                        {
                            Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
                        }

                        if (name == "config.json")
                        {
                            _ = ModelConfig.FromHuggingFace(file);
                        }
                        else if (name == LoraConfig.ConfigFile)
                        {
                            _ = LoraConfig.Load(file);
                        }

                        break;
                    case ".html":
                        Assert.EndsWith("</html>", File.ReadAllText(file).TrimEnd(), StringComparison.Ordinal);
                        break;
                    default:
                        string source = Path.Combine(DefaultModel, name);
                        Assert.True(File.Exists(source), $"unexpected output {name}");
                        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(file));
                        break;
                }
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                Assert.Fail($"{when}: {name} is damaged: {e.GetType().Name}: {e.Message}");
            }
        }

        if (File.Exists(Path.Combine(folder, "config.json")) && File.Exists(Path.Combine(folder, "model.safetensors")))
        {
            using var loaded = LoadedModel.Open(folder);
        }
    }
}

/// <summary>Runs the built CLI as a separate process (so that it can be killed).</summary>
internal static class ProcessRunner
{
    private static string CliDll()
    {
        string baseDir = AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar);
        string framework = Path.GetFileName(baseDir);
        string configuration = Path.GetFileName(Path.GetDirectoryName(baseDir)!);
        string built = Path.Combine(SharedData.RepositoryRoot, "src", "Minnow.Cli", "bin", configuration, framework, "Minnow.Cli.dll");
        return File.Exists(built) ? built : Path.Combine(baseDir, "Minnow.Cli.dll");
    }

    private static ProcessStartInfo StartInfo(string[] args)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        var start = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(CliDll());
        foreach (string a in args)
        {
            start.ArgumentList.Add(a);
        }

        return start;
    }

    public static CliResult Run(string[] args)
    {
        using var process = Process.Start(StartInfo(args))!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        Assert.True(process.WaitForExit(180_000), "the CLI did not finish in 3 minutes");
        return new CliResult(process.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Starts the CLI and sends it SIGKILL after <paramref name="after"/>; false when it had already ended.</summary>
    public static bool RunAndKill(string[] args, TimeSpan after)
    {
        using var process = Process.Start(StartInfo(args))!;
        _ = process.StandardOutput.ReadToEndAsync();
        _ = process.StandardError.ReadToEndAsync();
        if (process.WaitForExit(after))
        {
            return false;
        }

        process.Kill(entireProcessTree: true);
        process.WaitForExit();
        return true;
    }
}
