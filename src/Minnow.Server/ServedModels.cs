using System.Diagnostics;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Minnow.Inference;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Serving;
using Minnow.Serving.Rollout;
using Prometheus;

namespace Minnow.Server;

/// <summary>A loaded model with its own engine (the base model, or a variant that is a whole other build).</summary>
internal sealed class ModelSlot(string path, LoadedModel model, Engine engine, TextCompleter completer, bool owned) : IDisposable
{
    public string Path { get; } = path;

    public LoadedModel Model { get; } = model;

    public Engine Engine { get; } = engine;

    public TextCompleter Completer { get; } = completer;

    public void Dispose()
    {
        if (owned)
        {
            Engine.Dispose();
            Model.Dispose();
        }
    }
}

/// <summary>A rollout variant: a model (its slot), with an adapter on it or not, and a test-only delay.</summary>
internal sealed record ServedVariant(string Name, ModelSlot Slot, LoraAdapter? Adapter, TimeSpan InjectedLatency);

/// <summary>Where one request goes: the slot and adapter that serve it, the name it answers with, and its variant.</summary>
internal sealed record RequestRoute(ModelSlot Slot, LoraAdapter? Adapter, string ModelName, string Served, string? Variant, bool Recorded, TimeSpan Delay);

/// <summary>
/// What a server serves beside its base model: named adapters (loaded and unloaded at run time), and the variants
/// of a canary rollout with the rollout's controller. Resolves each request to the model, adapter and variant that
/// serve it, and records how it went.
/// </summary>
internal sealed class ServedModels : IDisposable
{
    /// <summary>The response header that names the variant (or model) that served a request; sent as a request header it forces one.</summary>
    public const string VariantHeader = "x-minnow-variant";

    private readonly Dictionary<string, ServedVariant> _variants = new(StringComparer.Ordinal);
    private readonly List<ModelSlot> _owned = [];
    private readonly Histogram _ttft, _interToken;
    private readonly Counter _requests;
    private readonly Gauge _weight, _agreement;
    private readonly CancellationTokenSource _stop = new();
    private Task _analysis = Task.CompletedTask;

    public ServedModels(ServerOptions options, string baseId, ModelSlot baseSlot, CollectorRegistry registry)
    {
        BaseId = baseId;
        Base = baseSlot;
        Adapters = new AdapterRegistry(baseSlot.Model.Config, options.AdapterBudgetBytes);
        Packages = options.Packages;
        foreach (var (name, path) in options.Adapters)
        {
            Adapters.Load(name, path, Packages);
        }

        var factory = Metrics.WithCustomRegistry(registry);
        double[] buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
        _ttft = factory.CreateHistogram("minnow_variant_time_to_first_token_seconds", "Time to first token by the variant that served the request.",
            new HistogramConfiguration { LabelNames = ["variant"], Buckets = buckets });
        _interToken = factory.CreateHistogram("minnow_variant_inter_token_latency_seconds", "Time between two tokens of a request, every gap, by variant.",
            new HistogramConfiguration { LabelNames = ["variant"], Buckets = buckets });
        _requests = factory.CreateCounter("minnow_variant_requests_total", "Completion requests by the variant that served them and outcome (ok, error).", ["variant", "outcome"]);
        _weight = factory.CreateGauge("minnow_rollout_weight_percent", "Each rollout variant's share of traffic in percent.", ["variant"]);
        _agreement = factory.CreateGauge("minnow_rollout_probe_agreement", "Share of greedy probe tokens the canary gives as stable does.");

        foreach (var (name, spec) in options.Variants)
        {
            options.TestOnlyInjectedLatency.TryGetValue(name, out var delay);
            _variants[name] = VariantOf(name, spec, options, delay);
        }

        if (options.RolloutPlanPath is not null || options.CanaryPercent is not null)
        {
            var plan = options.RolloutPlanPath is { } planPath ? RolloutPlan.Load(planPath) : RolloutPlan.Fixed("stable", "canary", options.CanaryPercent!.Value);
            foreach (string v in new[] { plan.Stable, plan.Canary })
            {
                if (!_variants.ContainsKey(v))
                {
                    throw new MinnowException($"the rollout needs a variant named '{v}': add --variant {v}=MODEL (or {v}=adapter:FOLDER).");
                }
            }

            foreach (int id in plan.ProbeTokenIds ?? [])
            {
                if (new[] { plan.Stable, plan.Canary }.Select(v => _variants[v].Slot.Model.Config.VocabSize).Min() is int vocab && id >= vocab)
                {
                    throw new MinnowException($"the rollout plan's probeTokenIds hold {id}, outside a variant's vocabulary of {vocab}.");
                }
            }

            string? state = options.RolloutStatePath ?? (options.RolloutPlanPath is { } p ? p + ".state.json" : null);
            Rollout = RolloutController.Open(plan, state);
            RefreshGauges();
            if (!plan.IsFixed)
            {
                _analysis = Task.Run(() => AnalyzeLoop(plan.AnalysisInterval, _stop.Token));
            }

            if (plan.ProbePrompts.Count > 0 || plan.HasPerplexityProbe)
            {
                _ = Task.Run(() => MeasureProbes(plan, _stop.Token));
            }
        }
    }

    public string BaseId { get; }

    public ModelSlot Base { get; }

    public AdapterRegistry Adapters { get; }

    /// <summary>The key and policy for sealed adapter packages (null: packages are refused for want of a key).</summary>
    public PackageAccess? Packages { get; }

    public RolloutController? Rollout { get; }

    public IReadOnlyDictionary<string, ServedVariant> Variants => _variants;

    /// <summary>Picks what serves a request: <c>BASE:ADAPTER</c>, a forced variant (header), or the rollout's choice for its user.</summary>
    public RequestRoute Resolve(HttpContext context, JsonElement body)
    {
        string? model = body.ValueKind == JsonValueKind.Object && body.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString() : null;
        if (model is not null && model != BaseId)
        {
            string prefix = BaseId + ":";
            if (!model.StartsWith(prefix, StringComparison.Ordinal))
            {
                throw ApiError.NotFound($"the model '{model}' does not exist; this server serves '{BaseId}' and its adapters as '{BaseId}:NAME'.", "model");
            }

            string name = model[prefix.Length..];
            var adapter = Adapters.Get(name) ?? throw ApiError.NotFound($"no adapter '{name}' is loaded (see GET /v1/adapters).", "model");
            return new RequestRoute(Base, adapter, model, model, null, false, TimeSpan.Zero);
        }

        string baseName = model ?? BaseId;
        string forced = context.Request.Headers[VariantHeader].ToString();
        if (forced.Length > 0)
        {
            var v = _variants.GetValueOrDefault(forced) ?? throw ApiError.BadRequest($"{VariantHeader}: no variant '{forced}' (variants: {string.Join(", ", _variants.Keys)}).");
            // Forced requests are for testing: served by the variant, but kept out of the rollout's analysis.
            return new RequestRoute(v.Slot, v.Adapter, baseName, v.Name, v.Name, false, v.InjectedLatency);
        }

        if (Rollout is { } rollout)
        {
            string? user = body.ValueKind == JsonValueKind.Object && body.TryGetProperty("user", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;
            if (string.IsNullOrEmpty(user))
            {
                string header = context.Request.Headers[rollout.Plan.UserHeader].ToString();
                user = header.Length > 0 ? header : null;
            }

            var v = _variants[rollout.Choose(user)];
            return new RequestRoute(v.Slot, v.Adapter, baseName, v.Name, v.Name, true, v.InjectedLatency);
        }

        return new RequestRoute(Base, null, baseName, baseName, null, false, TimeSpan.Zero);
    }

    /// <summary>Counts a finished request for its variant (metrics, and the rollout's window when it was bucketed).</summary>
    public void Record(RequestRoute route, bool failed, long arrivedAt, TextCompletion? completion)
    {
        if (route.Variant is not { } variant)
        {
            return;
        }

        double? ttft = null;
        double[]? gaps = null;
        if (!failed && completion?.Sequence is { FirstTokenAt: not 0 } s)
        {
            ttft = Stopwatch.GetElapsedTime(arrivedAt, s.FirstTokenAt).TotalSeconds;
            gaps = completion.InterTokenGapsSeconds();
        }

        _requests.WithLabels(variant, failed ? "error" : "ok").Inc();
        if (ttft is double t)
        {
            _ttft.WithLabels(variant).Observe(t);
        }

        foreach (double gap in gaps ?? [])
        {
            _interToken.WithLabels(variant).Observe(gap);
        }

        if (route.Recorded)
        {
            Rollout?.Record(variant, new RequestOutcome(failed, ttft, gaps));
        }
    }

    public IReadOnlyList<string> Summary()
    {
        var lines = Adapters.List().Select(a => $"adapter '{BaseId}:{a.Name}' ({a.Source}, {a.Bytes:N0} bytes, r = {a.Rank})").ToList();
        lines.AddRange(_variants.Values.Select(v => $"variant '{v.Name}': {v.Slot.Path}{(v.Adapter is { } a ? " + adapter " + a.Source : "")}"));
        if (Rollout is { } r)
        {
            lines.Add($"rollout: {r.Phase.ToString().ToLowerInvariant()}, step {r.Step + 1} of {r.Plan.Steps.Count}, {r.CanaryPercent:0.##} % to '{r.Plan.Canary}'" +
                (r.StatePath is { } state ? $"; state {state}, audit log {r.AuditLogPath}" : "") + "; GET /admin/rollout, /dashboard");
        }

        return lines;
    }

    public void RefreshGauges()
    {
        if (Rollout is not { } r)
        {
            return;
        }

        double canary = r.CanaryPercent;
        _weight.WithLabels(r.Plan.Canary).Set(canary);
        _weight.WithLabels(r.Plan.Stable).Set(100 - canary);
        if (r.ProbeAgreement is double a)
        {
            _agreement.Set(a);
        }
    }

    public async Task StopAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _analysis.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Stopped between two analyses.
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        foreach (var slot in _owned)
        {
            slot.Dispose();
        }

        _stop.Dispose();
    }

    private ServedVariant VariantOf(string name, string spec, ServerOptions options, TimeSpan delay)
    {
        const string adapterPrefix = "adapter:";
        if (spec.StartsWith(adapterPrefix, StringComparison.Ordinal))
        {
            // A variant's adapter is its own: it is never evicted by the run-time adapters' budget.
            return new ServedVariant(name, Base, LoraAdapter.Load(spec[adapterPrefix.Length..], Base.Model.Config), delay);
        }

        string full = System.IO.Path.GetFullPath(spec);
        var same = full == System.IO.Path.GetFullPath(Base.Path) ? Base : _owned.FirstOrDefault(s => System.IO.Path.GetFullPath(s.Path) == full);
        if (same is null)
        {
            var model = LoadedModel.Open(spec, null, Packages);
            try
            {
                if (model.Tokenizer is null)
                {
                    throw new MinnowException($"--variant {name}: {model.Path} has no tokenizer, so it cannot serve text.");
                }

                var engine = new Engine(model.Model, options.EngineOptions());
                same = new ModelSlot(spec, model, engine, new TextCompleter(engine, model.Tokenizer), owned: true);
                _owned.Add(same);
            }
            catch
            {
                model.Dispose();
                throw;
            }
        }

        return new ServedVariant(name, same, null, delay);
    }

    private async Task AnalyzeLoop(TimeSpan interval, CancellationToken stop)
    {
        using var timer = new PeriodicTimer(interval);
        while (await timer.WaitForNextTickAsync(stop).ConfigureAwait(false))
        {
            Rollout!.Analyze();
            RefreshGauges();
        }
    }

    /// <summary>The quality guard: both variants complete each probe prompt greedily; the share of positions that agree.</summary>
    private async Task MeasureProbes(RolloutPlan plan, CancellationToken stop)
    {
        try
        {
            var stable = _variants[plan.Stable];
            var canary = _variants[plan.Canary];
            if (plan.HasPerplexityProbe)
            {
                double ps = await Task.Run(() => ProbePerplexity(stable, plan, stop), stop).ConfigureAwait(false);
                double pc = await Task.Run(() => ProbePerplexity(canary, plan, stop), stop).ConfigureAwait(false);
                Rollout!.SetProbePerplexity(ps, pc);
            }

            if (plan.ProbePrompts.Count == 0)
            {
                return;
            }

            long same = 0, total = 0;
            foreach (string prompt in plan.ProbePrompts)
            {
                int[] a = await Greedy(stable, prompt, plan.ProbeTokens, stop).ConfigureAwait(false);
                int[] b = await Greedy(canary, prompt, plan.ProbeTokens, stop).ConfigureAwait(false);
                for (int i = 0; i < plan.ProbeTokens; i++)
                {
                    same += i < a.Length && i < b.Length && a[i] == b[i] ? 1 : 0;
                }

                total += plan.ProbeTokens;
            }

            Rollout!.SetProbeAgreement(total == 0 ? 0 : (double)same / total);
            RefreshGauges();
        }
        catch (OperationCanceledException)
        {
            // The server stopped first.
        }
    }

    private static double ProbePerplexity(ServedVariant v, RolloutPlan plan, CancellationToken stop)
    {
        var tokens = plan.ProbeTokenIds ?? v.Slot.Completer.Prompts.EncodeText(plan.ProbeText!);
        return RolloutProbes.Perplexity(v.Slot.Model.Model, tokens, v.Adapter, stop);
    }

    private static async Task<int[]> Greedy(ServedVariant v, string prompt, int tokens, CancellationToken stop)
    {
        var completer = v.Slot.Completer;
        int[] ids = completer.Prompts.EncodeText(prompt);
        int room = Math.Max(1, Math.Min(tokens, completer.Engine.ContextSize - ids.Length));
        while (true)
        {
            try
            {
                var completion = completer.Start(new TextCompletionRequest { Prompt = ids, MaxTokens = room, IgnoreEos = true, Adapter = v.Adapter }, stop);
                var result = new List<int>();
                await foreach (var d in completion.ReadAsync(stop).ConfigureAwait(false))
                {
                    if (d.TokenId >= 0)
                    {
                        result.Add(d.TokenId);
                    }
                }

                return result.ToArray();
            }
            catch (EngineBusyException)
            {
                await Task.Delay(50, stop).ConfigureAwait(false); // user traffic first
            }
        }
    }
}
