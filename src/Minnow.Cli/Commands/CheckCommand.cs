using System.CommandLine;
using Minnow.Optimization;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow check MODEL [--ram 2GB] [--latency 80ms] [--ctx N]</c>: the deployment checklist on its own — peak
/// memory with the KV cache at the context (measured), latency at batch 1 and 4, the thread count, and the F32
/// fallback path — each PASS, FAIL or INFO with its figure. Exits 1 when an item fails.
/// </summary>
internal static class CheckCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var ram = new Option<string?>("--ram") { Description = "Memory the model may use on the device, e.g. 2GB (a 10% safety margin is kept)." };
        var latency = new Option<string?>("--latency") { Description = "Most time a decoded token may take at batch 1, e.g. 80ms." };
        var ctx = new Option<int?>("--ctx", "-c") { Description = "Context the KV cache is sized and filled to (default: the model's context length)." };
        var json = JsonOption();
        var command = new Command("check", "Check that a model fits a device: memory, latency at batch 1 and 4, threads, fallback kernels.")
        {
            model, ram, latency, ctx, json,
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

            string path = DefaultModel.Resolve(r.GetValue(model));
            if (!File.Exists(path) && !Directory.Exists(path))
            {
                throw new MinnowException($"{path}: no such file or folder.");
            }

            CheckResult result;
            if (Sealing.SealedPackage.IsPackage(path))
            {
                using var files = package.OpenPackage(r, path);
                result = DeploymentCheck.Run(files, budget, r.GetValue(ctx), ct);
            }
            else
            {
                result = DeploymentCheck.Run(path, budget, r.GetValue(ctx), ct);
            }

            var o = Out(r);
            if (r.GetValue(json))
            {
                WriteJson(o, w =>
                {
                    w.WriteString("model", Path.GetFullPath(path));
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
}
