using System.CommandLine;
using System.Globalization;
using Minnow.Optimization;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow check MODEL [--ram 2GB] [--latency 80ms] [--ctx N] [-t N]</c>: the deployment checklist on its own — peak
/// memory of a clean process that loads the model once and fills the KV cache to the context (weights, KV cache and
/// runtime apart), latency at batch 1 and 4 with their conditions, the thread count, and the F32 fallback path in a
/// process of its own — each PASS, FAIL or INFO with its figure. Exits 1 when an item fails.
/// </summary>
internal static class CheckCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var ram = new Option<string?>("--ram") { Description = "Memory the model may use on the device, e.g. 2GB or 1536MiB (a 10% safety margin is kept)." };
        var latency = new Option<string?>("--latency") { Description = "Most time a decoded token may take at batch 1, e.g. 80ms." };
        var ctx = new Option<int?>("--ctx", "-c") { Description = "Context the KV cache is sized and filled to (default: the model's context length)." };
        var threads = ThreadsOption();
        var json = JsonOption();

        // The child-process mode: one part of the check, one JSON object.
        var part = new Option<string?>("--part") { Hidden = true };
        var command = new Command("check", "Check that a model fits a device: memory, latency at batch 1 and 4, threads, fallback kernels.")
        {
            model, ram, latency, ctx, threads, json, part,
        };
        var package = new PackageOptions();
        package.AddTo(command);

        command.SetSyncAction((r, ct) =>
        {
            var budget = new Budget
            {
                RamBytes = r.GetValue(ram) is string ramText ? OptimizeCommand.ParseSize(ramText, "--ram") : null,
                LatencyMs = r.GetValue(latency) is string latencyText ? OptimizeCommand.ParseMilliseconds(latencyText) : null,
            };
            if (r.GetValue(ctx) is < 2)
            {
                throw new MinnowException($"--ctx must be at least 2 (got {r.GetValue(ctx)}).");
            }

            int threadCount = ResolveThreads(r.GetValue(threads));
            string path = DefaultModel.Resolve(r.GetValue(model));
            if (!File.Exists(path) && !Directory.Exists(path))
            {
                throw new MinnowException($"{path}: no such file or folder.");
            }

            path = Path.GetFullPath(path);
            if (r.GetValue(part) is string partName)
            {
                var which = partName switch
                {
                    "measure" => CheckPart.Measure,
                    "fallback" => CheckPart.Fallback,
                    _ => throw new MinnowException($"--part must be measure or fallback (got '{partName}')."),
                };
                if (Sealing.SealedPackage.IsPackage(path))
                {
                    using var files = package.OpenPackage(r, path);
                    WriteJson(Out(r), w => DeploymentCheck.RunPart(which, DeploymentCheck.Loader(files), threadCount, r.GetValue(ctx), w, ct));
                }
                else
                {
                    WriteJson(Out(r), w => DeploymentCheck.RunPart(which, DeploymentCheck.Loader(path), threadCount, r.GetValue(ctx), w, ct));
                }

                return 0;
            }

            if (Sealing.SealedPackage.IsPackage(path))
            {
                // Opened here first so that a wrong key is reported before any child starts.
                using var files = package.OpenPackage(r, path);
            }

            var result = DeploymentCheck.Run(p => RunPart(path, p, threadCount, r.GetValue(ctx), PackageArguments(r, package), ct), budget, ct);
            var o = Out(r);
            if (r.GetValue(json))
            {
                WriteJson(o, w =>
                {
                    w.WriteString("model", path);
                    result.WriteProperties(w);
                });
            }
            else
            {
                foreach (var item in result.Items)
                {
                    o.WriteLine($"[{item.Status}] {item.Name}: {item.Figure}");
                }
            }

            return result.Passed ? 0 : 1;
        });
        return command;
    }

    /// <summary>Runs one part of the check in a fresh process of this CLI; returns the JSON it printed.</summary>
    internal static string RunPart(string path, CheckPart part, int threads, int? ctx, IEnumerable<string> extra, CancellationToken ct)
    {
        var args = new List<string>
        {
            "check", path, "--part", part == CheckPart.Measure ? "measure" : "fallback", "--threads", threads.ToString(CultureInfo.InvariantCulture),
        };
        if (ctx is int c)
        {
            args.AddRange(["--ctx", c.ToString(CultureInfo.InvariantCulture)]);
        }

        args.AddRange(extra);
        return BenchCommand.RunSelf(args, part == CheckPart.Measure ? "check's measuring" : "check's fallback", ct);
    }

    /// <summary>The package options given, for a child process (paths made absolute).</summary>
    private static List<string> PackageArguments(ParseResult r, PackageOptions package)
    {
        var args = new List<string>();
        if (r.GetValue(package.KeyFile) is string key)
        {
            args.AddRange(["--key-file", Path.GetFullPath(key)]);
        }

        foreach (string trusted in r.GetValue(package.Trust) ?? [])
        {
            args.AddRange(["--trust", Path.GetFullPath(trusted)]);
        }

        if (r.GetValue(package.MinVersion) is long v and > 0)
        {
            args.AddRange(["--min-version", v.ToString(CultureInfo.InvariantCulture)]);
        }

        return args;
    }
}
