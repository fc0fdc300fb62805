using System.CommandLine;
using System.Runtime.InteropServices;
using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Sealing;
using Minnow.Server;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow serve [MODEL]</c>: an OpenAI-compatible HTTP server. Prints the address it listens on, then "ready"
/// once the model is loaded; Ctrl+C or SIGTERM stops admitting, lets running requests finish (up to
/// <c>--drain-timeout</c>), and exits 0.
/// </summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var host = new Option<string>("--host") { Description = "Address to listen on (an IP address or localhost).", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port to listen on (0: any free port).", DefaultValueFactory = _ => 8080 };
        var maxBatch = new Option<int>("--max-batch") { Description = "Most requests decoded together.", DefaultValueFactory = _ => 4 };
        var kvBudget = new Option<string>("--kv-budget") { Description = "Memory for the KV cache, e.g. 256MB.", DefaultValueFactory = _ => "256MB" };
        var maxQueue = new Option<int>("--max-queue") { Description = "Most requests waiting for the batch; more are answered 429.", DefaultValueFactory = _ => 16 };
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer KEY' on API requests." };
        var ctx = new Option<int?>("--ctx", "-c") { Description = "Context size in tokens (default: the model's context length)." };
        var threads = new Option<int?>("--threads", "-t") { Description = "Worker threads (default: one per core)." };
        var name = new Option<string?>("--model-name") { Description = "The model's name in the API (default: its folder or file name)." };
        var drain = new Option<double>("--drain-timeout") { Description = "Seconds a shutdown lets running requests finish.", DefaultValueFactory = _ => 30 };
        var adapters = new Option<string[]>("--adapter") { Description = "A LoRA adapter to serve as BASE:NAME, as NAME=PEFT_FOLDER (repeatable; more at run time with POST /v1/adapters).", AllowMultipleArgumentsPerToken = false };
        var adapterBudget = new Option<string>("--adapter-budget") { Description = "Memory the adapters may take together; past it the least recently used is unloaded.", DefaultValueFactory = _ => "64MB" };
        var variants = new Option<string[]>("--variant") { Description = "A rollout variant, NAME=MODEL or NAME=adapter:FOLDER (repeatable; name them stable and canary)." };
        var rollout = new Option<string?>("--rollout") { Description = "A canary rollout plan (JSON: steps, intervals, thresholds) between the variants." };
        var canary = new Option<string?>("--canary") { Description = "A fixed canary share with no schedule, e.g. 5%." };
        var rolloutState = new Option<string?>("--rollout-state") { Description = "Where the rollout's state is kept (default: PLAN.json.state.json; the audit log is beside it)." };
        var command = new Command("serve", "Serve a model over an OpenAI-compatible HTTP API (chat, completions, streaming, metrics, adapters, canary rollouts).")
        {
            model, host, port, maxBatch, kvBudget, maxQueue, apiKey, ctx, threads, name, drain, adapters, adapterBudget, variants, rollout, canary, rolloutState,
        };
        var sealing = new ServeSealingOptions();
        sealing.AddTo(command);

        var package = sealing.Package; // added to the command with the other sealing options
        command.SetAction(async (r, ct) =>
        {
            long budget;
            try
            {
                budget = MixedPrecision.ParseSize(r.GetValue(kvBudget)!);
            }
            catch (MinnowException)
            {
                throw new MinnowException($"--kv-budget: '{r.GetValue(kvBudget)}' is not a size such as 256MB.");
            }

            double drainSeconds = r.GetValue(drain);
            if (drainSeconds is < 0 or > 3600)
            {
                throw new MinnowException($"--drain-timeout must be between 0 and 3600 seconds (got {drainSeconds}).");
            }

            var variantSpecs = Pairs(r.GetValue(variants), "--variant", "NAME=MODEL");
            string? modelArgument = r.GetValue(model);
            if (modelArgument is null && variantSpecs.TryGetValue("stable", out string? stableSpec) && !stableSpec.StartsWith("adapter:", StringComparison.Ordinal))
            {
                modelArgument = stableSpec; // the stable variant is the base model
            }

            using var packageKey = package.Key(r);
            var options = new ServerOptions
            {
                Packages = packageKey is null ? null : new PackageAccess(packageKey, new PackagePolicy { TrustedSigners = package.TrustedKeys(r), MinimumVersion = r.GetValue(package.MinVersion) }),
                ModelPath = DefaultModel.Resolve(modelArgument),
                Adapters = Pairs(r.GetValue(adapters), "--adapter", "NAME=PATH"),
                AdapterBudgetBytes = Size(r.GetValue(adapterBudget)!, "--adapter-budget"),
                Variants = variantSpecs,
                RolloutPlanPath = r.GetValue(rollout),
                CanaryPercent = r.GetValue(canary) is { } c ? Percent(c) : null,
                RolloutStatePath = r.GetValue(rolloutState),
                ModelId = r.GetValue(name),
                Host = r.GetValue(host)!,
                Port = r.GetValue(port),
                MaxBatch = r.GetValue(maxBatch),
                KvBudgetBytes = budget,
                MaxQueue = r.GetValue(maxQueue),
                ApiKey = r.GetValue(apiKey),
                ContextSize = r.GetValue(ctx) ?? 0,
                Threads = r.GetValue(threads) ?? 0,
                DrainDeadline = TimeSpan.FromSeconds(drainSeconds),
                Sealing = sealing.Read(r),
            };

            // Ctrl+C reaches us through ct; SIGTERM (a service manager, docker stop) is handled the same way.
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, signal =>
            {
                signal.Cancel = true;
                stop.Cancel();
            });

            var output = Out(r);
            var err = Err(r);
            await using var server = await MinnowServer.StartAsync(options, ct);
            output.WriteLine($"listening on {server.Url}");
            output.Flush();
            await server.Ready;
            var engine = server.Engine!;
            if (server.Updates is { } updates)
            {
                updates.Reported += report =>
                {
                    err.WriteLine(report.Outcome == Sealing.UpdateOutcome.Activated
                        ? $"update: version {report.VersionInService} is in service."
                        : $"update refused, version {report.VersionInService} keeps serving: {report.Message}");
                    err.Flush();
                };
            }

            output.WriteLine($"ready: model '{server.ModelId}' ({options.ModelPath}), context {engine.ContextSize}, batch {options.MaxBatch}, " +
                $"queue {options.MaxQueue}, KV cache {engine.Pages.PageCount} pages of {engine.Pages.PageSize} positions{(server.ModelVersion > 0 ? $", package version {server.ModelVersion}" : "")}; Ctrl+C to stop.");
            foreach (string line in server.OperationsSummary())
            {
                output.WriteLine(line);
            }

            output.Flush();
            try
            {
                await Task.Delay(Timeout.Infinite, stop.Token);
            }
            catch (OperationCanceledException)
            {
                // Asked to stop.
            }

            err.WriteLine($"stopping: finishing {engine.Running + engine.Waiting} running and queued requests (up to {drainSeconds:0.#} s)...");
            err.Flush();
            await server.StopAsync();
            err.WriteLine("stopped.");
            return MinnowCli.ExitOk;
        });
        return command;
    }

    private static Dictionary<string, string> Pairs(string[]? values, string option, string shape)
    {
        var pairs = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string value in values ?? [])
        {
            int eq = value.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || eq == value.Length - 1)
            {
                throw new MinnowException($"{option} '{value}' must be {shape}.");
            }

            if (!pairs.TryAdd(value[..eq], value[(eq + 1)..]))
            {
                throw new MinnowException($"{option}: the name '{value[..eq]}' is given twice.");
            }
        }

        return pairs;
    }

    private static long Size(string text, string option)
    {
        try
        {
            return MixedPrecision.ParseSize(text);
        }
        catch (MinnowException)
        {
            throw new MinnowException($"{option}: '{text}' is not a size such as 64MB.");
        }
    }

    private static double Percent(string text)
    {
        string number = text.TrimEnd('%').Trim();
        return double.TryParse(number, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double p) && p is >= 0 and <= 100
            ? p
            : throw new MinnowException($"--canary '{text}' must be a percentage from 0% to 100%, e.g. 5%.");
    }
}
