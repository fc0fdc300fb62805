using System.Globalization;
using System.Text.Json;
using Minnow.Formats;

namespace Minnow.Serving.Rollout;

/// <summary>The limits a canary must stay within, canary against stable over the same analysis window.</summary>
public sealed record RolloutThresholds
{
    /// <summary>Most the canary's error rate may exceed stable's (0.02: two points).</summary>
    public double MaxErrorRateIncrease { get; init; } = 0.02;

    /// <summary>Most the canary's TTFT p95 may be, as a multiple of stable's, beyond <see cref="TtftSlackMs"/>.</summary>
    public double MaxTtftP95Ratio { get; init; } = 1.5;

    /// <summary>Milliseconds of TTFT p95 allowed above the ratio (timings of small models are noisy at a few ms).</summary>
    public double TtftSlackMs { get; init; } = 20;

    /// <summary>Most the canary's inter-token p95 may be, as a multiple of stable's, beyond <see cref="InterTokenSlackMs"/>.</summary>
    public double MaxInterTokenP95Ratio { get; init; } = 1.5;

    public double InterTokenSlackMs { get; init; } = 5;

    /// <summary>Least share of greedy probe tokens the canary must give as stable gives them (0 to 1; 0: no quality guard).</summary>
    public double MinProbeAgreement { get; init; }

    /// <summary>
    /// Most the canary's perplexity on the probe text may exceed stable's, relative (0.1: 10 % higher); null: not
    /// checked. Needs <see cref="RolloutPlan.ProbeText"/> or <see cref="RolloutPlan.ProbeTokenIds"/>.
    /// </summary>
    public double? MaxPerplexityIncrease { get; init; }
}

/// <summary>
/// A canary rollout's plan (PLAN.json): the two variants, the canary's traffic share at each step, how long and how
/// many requests each step needs, how often canary and stable are compared, the thresholds, and when to roll back.
/// </summary>
public sealed record RolloutPlan
{
    public string Stable { get; init; } = "stable";

    public string Canary { get; init; } = "canary";

    /// <summary>The canary's share in percent at each step, rising; reaching 100 promotes it.</summary>
    public IReadOnlyList<double> Steps { get; init; } = [5, 25, 50, 100];

    /// <summary>Least canary requests served at a step before it may advance.</summary>
    public int StepMinRequests { get; init; } = 50;

    /// <summary>Least time at a step before it may advance.</summary>
    public TimeSpan StepMinDuration { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>How often canary and stable are compared.</summary>
    public TimeSpan AnalysisInterval { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Least requests of each variant in a window for a verdict; with fewer the rollout holds.</summary>
    public int MinSamples { get; init; } = 10;

    /// <summary>Consecutive failed checks that roll the canary back to 0 %.</summary>
    public int FailuresToRollback { get; init; } = 3;

    public RolloutThresholds Thresholds { get; init; } = new();

    /// <summary>Prompts both variants complete greedily for the quality guard.</summary>
    public IReadOnlyList<string> ProbePrompts { get; init; } = [];

    public int ProbeTokens { get; init; } = 16;

    /// <summary>A text both variants' perplexity is measured on for the quality guard (encoded by each variant's tokenizer).</summary>
    public string? ProbeText { get; init; }

    /// <summary>Token ids both variants' perplexity is measured on (instead of <see cref="ProbeText"/>).</summary>
    public IReadOnlyList<int>? ProbeTokenIds { get; init; }

    /// <summary>Whether the plan gives a probe text or probe token ids for the perplexity guard.</summary>
    public bool HasPerplexityProbe => ProbeText is not null || ProbeTokenIds is not null;

    /// <summary>The header whose value buckets a request when its body has no <c>user</c>.</summary>
    public string UserHeader { get; init; } = "x-minnow-user";

    /// <summary>Mixed into the bucketing hash: a new salt reshuffles which users are in the canary.</summary>
    public string Salt { get; init; } = "minnow-rollout";

    /// <summary>A plan with a fixed canary share and no schedule (<c>--canary 5%</c>): never analysed into a decision.</summary>
    public static RolloutPlan Fixed(string stable, string canary, double percent)
    {
        if (percent is < 0 or > 100 || double.IsNaN(percent))
        {
            throw new MinnowException($"--canary must be between 0% and 100% (got {percent.ToString(CultureInfo.InvariantCulture)}%).");
        }

        return new RolloutPlan { Stable = stable, Canary = canary, Steps = [percent], IsFixed = true };
    }

    /// <summary>A fixed split: the canary keeps <see cref="Steps"/>[0] until an operator promotes or rolls back.</summary>
    public bool IsFixed { get; init; }

    /// <summary>Reads a plan file; every field of the wrong type or out of range is a one-line error naming it.</summary>
    public static RolloutPlan Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: rollout plan not found.");
        }

        using var doc = JsonInput.ParseFile(path);
        return Parse(doc.RootElement, path);
    }

    public static RolloutPlan Parse(JsonElement root, string source)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new MinnowException($"{source}: a rollout plan is a JSON object.");
        }

        string Text(string name, string fallback) => root.TryGetProperty(name, out var v)
            ? v.ValueKind == JsonValueKind.String && v.GetString()!.Length > 0 ? v.GetString()! : throw Bad(name, "a non-empty string")
            : fallback;
        double Number(JsonElement parent, string name, double fallback, double min, double max) => parent.TryGetProperty(name, out var v)
            ? v.ValueKind == JsonValueKind.Number && v.GetDouble() is var d && d >= min && d <= max ? d : throw Bad(name, $"a number from {min.ToString(CultureInfo.InvariantCulture)} to {max.ToString(CultureInfo.InvariantCulture)}")
            : fallback;
        MinnowException Bad(string name, string what) => new($"{source}: '{name}' must be {what}.");

        var defaults = new RolloutPlan();
        var steps = defaults.Steps;
        if (root.TryGetProperty("steps", out var s))
        {
            if (s.ValueKind != JsonValueKind.Array || s.GetArrayLength() == 0 || s.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.Number))
            {
                throw Bad("steps", "a non-empty array of percentages");
            }

            steps = s.EnumerateArray().Select(e => e.GetDouble()).ToArray();
            for (int i = 0; i < steps.Count; i++)
            {
                if (steps[i] is <= 0 or > 100 || (i > 0 && steps[i] <= steps[i - 1]))
                {
                    throw Bad("steps", "rising percentages above 0 and at most 100");
                }
            }
        }

        var probes = defaults.ProbePrompts;
        if (root.TryGetProperty("probePrompts", out var p))
        {
            if (p.ValueKind != JsonValueKind.Array || p.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String || e.GetString()!.Length == 0))
            {
                throw Bad("probePrompts", "an array of non-empty strings");
            }

            probes = p.EnumerateArray().Select(e => e.GetString()!).ToArray();
        }

        var t = new RolloutThresholds();
        if (root.TryGetProperty("thresholds", out var th))
        {
            if (th.ValueKind != JsonValueKind.Object)
            {
                throw Bad("thresholds", "an object");
            }

            t = new RolloutThresholds
            {
                MaxErrorRateIncrease = Number(th, "maxErrorRateIncrease", t.MaxErrorRateIncrease, 0, 1),
                MaxTtftP95Ratio = Number(th, "maxTtftP95Ratio", t.MaxTtftP95Ratio, 1, 1000),
                TtftSlackMs = Number(th, "ttftSlackMs", t.TtftSlackMs, 0, 3.6e6),
                MaxInterTokenP95Ratio = Number(th, "maxInterTokenP95Ratio", t.MaxInterTokenP95Ratio, 1, 1000),
                InterTokenSlackMs = Number(th, "interTokenSlackMs", t.InterTokenSlackMs, 0, 3.6e6),
                MinProbeAgreement = Number(th, "minProbeAgreement", t.MinProbeAgreement, 0, 1),
                MaxPerplexityIncrease = th.TryGetProperty("maxPerplexityIncrease", out _) ? Number(th, "maxPerplexityIncrease", 0, 0, 1000) : null,
            };
        }

        string? probeText = null;
        if (root.TryGetProperty("probeText", out var pt))
        {
            probeText = pt.ValueKind == JsonValueKind.String && pt.GetString()!.Length > 0 ? pt.GetString() : throw Bad("probeText", "a non-empty string");
        }

        int[]? probeIds = null;
        if (root.TryGetProperty("probeTokenIds", out var pi))
        {
            if (pi.ValueKind != JsonValueKind.Array || pi.GetArrayLength() < 4
                || pi.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int id) || id < 0))
            {
                throw Bad("probeTokenIds", "an array of at least 4 non-negative token ids");
            }

            probeIds = pi.EnumerateArray().Select(e => e.GetInt32()).ToArray();
        }

        if (probeText is not null && probeIds is not null)
        {
            throw new MinnowException($"{source}: give 'probeText' or 'probeTokenIds', not both.");
        }

        var plan = new RolloutPlan
        {
            Stable = Text("stable", defaults.Stable),
            Canary = Text("canary", defaults.Canary),
            Steps = steps,
            StepMinRequests = (int)Number(root, "stepMinRequests", defaults.StepMinRequests, 0, int.MaxValue),
            StepMinDuration = TimeSpan.FromSeconds(Number(root, "stepMinSeconds", defaults.StepMinDuration.TotalSeconds, 0, 30 * 86400)),
            AnalysisInterval = TimeSpan.FromSeconds(Number(root, "intervalSeconds", defaults.AnalysisInterval.TotalSeconds, 0.05, 86400)),
            MinSamples = (int)Number(root, "minSamples", defaults.MinSamples, 1, int.MaxValue),
            FailuresToRollback = (int)Number(root, "failuresToRollback", defaults.FailuresToRollback, 1, 1000),
            Thresholds = t,
            ProbePrompts = probes,
            ProbeTokens = (int)Number(root, "probeTokens", defaults.ProbeTokens, 1, 4096),
            ProbeText = probeText,
            ProbeTokenIds = probeIds,
            UserHeader = Text("userHeader", defaults.UserHeader),
            Salt = Text("salt", defaults.Salt),
        };
        if (plan.Stable == plan.Canary)
        {
            throw new MinnowException($"{source}: 'stable' and 'canary' name the same variant ('{SafeText.Of(plan.Stable)}').");
        }

        if (plan.Thresholds.MinProbeAgreement > 0 && plan.ProbePrompts.Count == 0)
        {
            throw new MinnowException($"{source}: 'thresholds.minProbeAgreement' needs 'probePrompts'.");
        }

        if (plan.Thresholds.MaxPerplexityIncrease is not null && !plan.HasPerplexityProbe)
        {
            throw new MinnowException($"{source}: 'thresholds.maxPerplexityIncrease' needs 'probeText' or 'probeTokenIds'.");
        }

        return plan;
    }
}
