using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Minnow.Formats;
using Minnow.Formats.Safetensors;

namespace Minnow.Serving.Rollout;

/// <summary>Where a rollout is.</summary>
public enum RolloutPhase
{
    /// <summary>Following the plan's steps, analysed at each interval.</summary>
    Progressing,

    /// <summary>Held by an operator at its current weights; no automatic decision.</summary>
    Paused,

    /// <summary>The canary serves 100 %.</summary>
    Promoted,

    /// <summary>The canary serves 0 %.</summary>
    RolledBack,

    /// <summary>A fixed split (<c>--canary 5%</c>) with no schedule.</summary>
    Fixed,
}

/// <summary>One decision of a rollout, as the audit log records it.</summary>
public sealed record RolloutDecision(DateTimeOffset At, string Action, int Step, double CanaryPercent, string Reason);

/// <summary>
/// How one request a variant served went: whether it failed, its time to first token, and every gap between two of
/// its tokens in a row (the inter-token p95 is taken over all the gaps of a window, not over per-request means).
/// </summary>
public readonly record struct RequestOutcome(bool Failed, double? TtftSeconds, IReadOnlyList<double>? InterTokenGapsSeconds);

/// <summary>A variant's requests in the current analysis window.</summary>
public sealed record VariantWindow(int Requests, int Errors, double? TtftP95Ms, double? InterTokenP95Ms)
{
    public double ErrorRate => Requests == 0 ? 0 : (double)Errors / Requests;
}

/// <summary>
/// A canary rollout between two variants: sticky, deterministic bucketing of users, the plan's step schedule, and an
/// analysis at each interval that compares canary with stable over the same window (error rate, TTFT p95,
/// inter-token p95, probe agreement) — holding when there is too little data, advancing only after a step's minimum
/// time and requests, rolling back after the plan's number of consecutive failed checks. The state is saved after
/// every change (so a restart resumes at the same step) and every decision is appended to an audit log.
/// </summary>
public sealed class RolloutController
{
    private const int RecentDecisions = 100;
    private readonly Lock _lock = new();
    private readonly TimeProvider _time;
    private readonly List<Sample> _canaryWindow = [], _stableWindow = [];
    private readonly List<RolloutDecision> _decisions = [];
    private readonly Dictionary<string, (long Requests, long Errors)> _totals = new(StringComparer.Ordinal);
    private RolloutPhase _phase;
    private int _step;
    private double _percent;
    private int _failures;
    private DateTimeOffset _stepStarted;
    private long _stepRequests;
    private double? _agreement;
    private (double Stable, double Canary)? _perplexity;
    private DateTimeOffset _lastHoldLogged = DateTimeOffset.MinValue;
    private VariantWindow? _lastCanary, _lastStable;

    private RolloutController(RolloutPlan plan, string? statePath, TimeProvider time)
    {
        Plan = plan;
        StatePath = statePath;
        _time = time;
    }

    public RolloutPlan Plan { get; }

    /// <summary>Where the state is saved (null: kept in memory only); the audit log is beside it.</summary>
    public string? StatePath { get; }

    public string? AuditLogPath => StatePath is null ? null : StatePath + ".log";

    public RolloutPhase Phase
    {
        get
        {
            lock (_lock)
            {
                return _phase;
            }
        }
    }

    /// <summary>The canary's share of traffic in percent.</summary>
    public double CanaryPercent
    {
        get
        {
            lock (_lock)
            {
                return _percent;
            }
        }
    }

    public int Step
    {
        get
        {
            lock (_lock)
            {
                return _step;
            }
        }
    }

    /// <summary>Probe agreement of canary with stable (0 to 1), once measured.</summary>
    public double? ProbeAgreement
    {
        get
        {
            lock (_lock)
            {
                return _agreement;
            }
        }
    }

    /// <summary>Perplexity of stable and of canary on the plan's probe text, once measured.</summary>
    public (double Stable, double Canary)? ProbePerplexity
    {
        get
        {
            lock (_lock)
            {
                return _perplexity;
            }
        }
    }

    /// <summary>
    /// Least time between two holds written to the audit log (and the decisions list): a rollout with too little
    /// traffic would otherwise append one at every interval. A hold after another kind of decision is always written.
    /// </summary>
    public static TimeSpan HoldLogInterval { get; } = TimeSpan.FromMinutes(1);

    public IReadOnlyList<RolloutDecision> Decisions
    {
        get
        {
            lock (_lock)
            {
                return _decisions.ToArray();
            }
        }
    }

    /// <summary>
    /// Starts the rollout, or resumes it from <paramref name="statePath"/> when that holds the state of a rollout of
    /// the same two variants.
    /// </summary>
    public static RolloutController Open(RolloutPlan plan, string? statePath = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var c = new RolloutController(plan, statePath, time ?? TimeProvider.System);
        var now = c._time.GetUtcNow();
        if (statePath is not null && File.Exists(statePath) && c.TryResume(statePath, out string? why))
        {
            c.ReadRecentDecisions();
            c.Decide(now, "resume", $"restarted: resuming at step {c._step + 1} of {plan.Steps.Count} ({Pct(c._percent)} canary, {c._phase})");
            return c;
        }

        c._phase = plan.IsFixed ? RolloutPhase.Fixed : RolloutPhase.Progressing;
        c._step = 0;
        c._percent = plan.Steps[0];
        c._stepStarted = now;
        string start = plan.IsFixed ? $"fixed split: {Pct(c._percent)} to '{plan.Canary}'" : $"started: step 1 of {plan.Steps.Count}, {Pct(c._percent)} to '{plan.Canary}'";
        if (statePath is not null && File.Exists(statePath))
        {
            start += " (the saved state was for another rollout and was replaced)";
        }

        c.Decide(now, "start", start);
        return c;
    }

    /// <summary>Where a key falls in [0, 1): the first 8 bytes of SHA-256(salt, key), as feature-flag services bucket users.</summary>
    public static double Bucket(string salt, string key)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(salt + "\n" + key), hash);
        return (BinaryPrimitives.ReadUInt64BigEndian(hash) >> 11) * (1.0 / (1UL << 53));
    }

    /// <summary>
    /// The variant that serves <paramref name="key"/> (a user id; null draws a random one): the canary when its
    /// bucket is below the canary's share. A user stays on a variant as the share grows, and moves only when a
    /// decision (a rollback, or a step that now covers its bucket) moves it.
    /// </summary>
    public string Choose(string? key)
    {
        double bucket = Bucket(Plan.Salt, key ?? Guid.NewGuid().ToString("N"));
        return bucket * 100 < CanaryPercent ? Plan.Canary : Plan.Stable;
    }

    /// <summary>Counts a request a variant served into the current window.</summary>
    public void Record(string variant, RequestOutcome outcome)
    {
        lock (_lock)
        {
            var total = _totals.GetValueOrDefault(variant);
            _totals[variant] = (total.Requests + 1, total.Errors + (outcome.Failed ? 1 : 0));
            var sample = new Sample(outcome.Failed, outcome.TtftSeconds, outcome.InterTokenGapsSeconds);
            if (variant == Plan.Canary)
            {
                _canaryWindow.Add(sample);
                if (_phase == RolloutPhase.Progressing)
                {
                    _stepRequests++;
                }
            }
            else if (variant == Plan.Stable)
            {
                _stableWindow.Add(sample);
            }
        }
    }

    /// <summary>The quality guard's measure: the share of probe tokens the canary gives as stable does.</summary>
    public void SetProbeAgreement(double agreement)
    {
        lock (_lock)
        {
            _agreement = agreement;
            Decide(_time.GetUtcNow(), "probe", $"probe agreement with stable: {agreement:P1} over {Plan.ProbePrompts.Count} prompts");
        }
    }

    /// <summary>The quality guard's second measure: the perplexity of stable and of canary on the plan's probe text.</summary>
    public void SetProbePerplexity(double stable, double canary)
    {
        if (!double.IsFinite(stable) || !double.IsFinite(canary) || stable <= 0 || canary <= 0)
        {
            throw new MinnowException($"probe perplexities must be positive and finite (stable {stable}, canary {canary}).");
        }

        lock (_lock)
        {
            _perplexity = (stable, canary);
            Decide(_time.GetUtcNow(), "probe", $"probe perplexity: canary {canary:0.###} against stable {stable:0.###} ({(canary / stable) - 1:+0.0%;-0.0%})");
        }
    }

    /// <summary>
    /// One analysis (the server calls it every <see cref="RolloutPlan.AnalysisInterval"/>): compares canary with
    /// stable over the window and decides hold, pass, advance, promote, fail or rollback. Null when the rollout is not
    /// progressing.
    /// </summary>
    public RolloutDecision? Analyze()
    {
        lock (_lock)
        {
            if (_phase != RolloutPhase.Progressing)
            {
                return null;
            }

            var now = _time.GetUtcNow();
            var canary = Summarize(_canaryWindow);
            var stable = Summarize(_stableWindow);
            _lastCanary = canary;
            _lastStable = stable;
            var t = Plan.Thresholds;
            if (canary.Requests < Plan.MinSamples || stable.Requests < Plan.MinSamples)
            {
                // The window stays open: the next analysis sees these requests and the ones after them.
                return Hold(now, $"too little data: {canary.Requests} canary and {stable.Requests} stable requests in the window (need {Plan.MinSamples} each)");
            }

            bool probes = t.MinProbeAgreement > 0;
            if (probes && _agreement is null)
            {
                return Hold(now, "the quality probe has not been measured yet");
            }

            bool perplexity = t.MaxPerplexityIncrease is not null;
            if (perplexity && _perplexity is null)
            {
                return Hold(now, "the probe perplexity has not been measured yet");
            }

            var failed = new List<string>();
            if (canary.ErrorRate > stable.ErrorRate + t.MaxErrorRateIncrease)
            {
                failed.Add($"error rate {canary.ErrorRate:P1} > stable {stable.ErrorRate:P1} + {t.MaxErrorRateIncrease:P1}");
            }

            Compare("TTFT p95", canary.TtftP95Ms, stable.TtftP95Ms, t.MaxTtftP95Ratio, t.TtftSlackMs, failed);
            Compare("inter-token p95", canary.InterTokenP95Ms, stable.InterTokenP95Ms, t.MaxInterTokenP95Ratio, t.InterTokenSlackMs, failed);
            if (probes && _agreement < t.MinProbeAgreement)
            {
                failed.Add($"probe agreement {_agreement:P1} < {t.MinProbeAgreement:P1}");
            }

            if (perplexity && _perplexity is (double ps, double pc) && pc > ps * (1 + t.MaxPerplexityIncrease!.Value))
            {
                failed.Add($"probe perplexity {pc:0.###} > stable {ps:0.###} × (1 + {t.MaxPerplexityIncrease.Value:0.###})");
            }

            string measured = $"canary {Describe(canary)}; stable {Describe(stable)}";
            _canaryWindow.Clear();
            _stableWindow.Clear();
            if (failed.Count > 0)
            {
                _failures++;
                string why = string.Join("; ", failed);
                if (_failures >= Plan.FailuresToRollback)
                {
                    _phase = RolloutPhase.RolledBack;
                    _percent = 0;
                    return Decide(now, "rollback", $"{_failures} consecutive failed checks, the last: {why} ({measured})");
                }

                return Decide(now, "fail", $"check {_failures} of {Plan.FailuresToRollback} failed: {why} ({measured})");
            }

            _failures = 0;
            var atStep = now - _stepStarted;
            if (_stepRequests < Plan.StepMinRequests || atStep < Plan.StepMinDuration)
            {
                return Decide(now, "pass", $"checks passed ({measured}); at this step {atStep.TotalSeconds:0.#} s of {Plan.StepMinDuration.TotalSeconds:0.#} s, {_stepRequests} of {Plan.StepMinRequests} canary requests");
            }

            return Advance(now, $"checks passed ({measured}) after {atStep.TotalSeconds:0.#} s and {_stepRequests} canary requests at {Pct(_percent)}");
        }
    }

    /// <summary>An operator's override: the canary to 100 % at once.</summary>
    public RolloutDecision Promote(string reason = "operator")
    {
        lock (_lock)
        {
            _phase = RolloutPhase.Promoted;
            _step = Plan.Steps.Count - 1;
            _percent = 100;
            return Decide(_time.GetUtcNow(), "promote", $"promoted by {reason}");
        }
    }

    /// <summary>An operator's override: the canary to 0 %.</summary>
    public RolloutDecision Rollback(string reason = "operator")
    {
        lock (_lock)
        {
            _phase = RolloutPhase.RolledBack;
            _percent = 0;
            return Decide(_time.GetUtcNow(), "rollback", $"rolled back by {reason}");
        }
    }

    /// <summary>An operator's override: holds the current weights; no automatic decision until <see cref="Resume"/>.</summary>
    public RolloutDecision Pause(string reason = "operator")
    {
        lock (_lock)
        {
            if (_phase is not (RolloutPhase.Progressing or RolloutPhase.Paused))
            {
                throw new MinnowException($"the rollout is {_phase.ToString().ToLowerInvariant()}; only a progressing rollout can be paused.");
            }

            _phase = RolloutPhase.Paused;
            return Decide(_time.GetUtcNow(), "pause", $"paused by {reason} at {Pct(_percent)}");
        }
    }

    public RolloutDecision Resume(string reason = "operator")
    {
        lock (_lock)
        {
            if (_phase != RolloutPhase.Paused)
            {
                throw new MinnowException($"the rollout is {_phase.ToString().ToLowerInvariant()}, not paused.");
            }

            _phase = RolloutPhase.Progressing;
            _canaryWindow.Clear();
            _stableWindow.Clear();
            return Decide(_time.GetUtcNow(), "resume", $"resumed by {reason} at {Pct(_percent)}");
        }
    }

    /// <summary>The rollout as <c>GET /admin/rollout</c> shows it.</summary>
    public void WriteJson(Utf8JsonWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        lock (_lock)
        {
            w.WriteStartObject();
            w.WriteString("stable", Plan.Stable);
            w.WriteString("canary", Plan.Canary);
            w.WriteString("phase", _phase.ToString().ToLowerInvariant());
            w.WriteNumber("step", _step + 1);
            w.WriteNumber("steps_total", Plan.Steps.Count);
            w.WriteStartArray("steps");
            foreach (double s in Plan.Steps)
            {
                w.WriteNumberValue(s);
            }

            w.WriteEndArray();
            w.WriteStartObject("weights");
            w.WriteNumber(Plan.Stable, 100 - _percent);
            w.WriteNumber(Plan.Canary, _percent);
            w.WriteEndObject();
            w.WriteNumber("consecutive_failures", _failures);
            w.WriteNumber("failures_to_rollback", Plan.FailuresToRollback);
            w.WriteNumber("step_requests", _stepRequests);
            w.WriteString("step_started_at", _stepStarted);
            if (_agreement is double a)
            {
                w.WriteNumber("probe_agreement", a);
            }
            else
            {
                w.WriteNull("probe_agreement");
            }

            if (_perplexity is (double ps, double pc))
            {
                w.WriteStartObject("probe_perplexity");
                w.WriteNumber(Plan.Stable, Math.Round(ps, 4));
                w.WriteNumber(Plan.Canary, Math.Round(pc, 4));
                w.WriteEndObject();
            }
            else
            {
                w.WriteNull("probe_perplexity");
            }

            w.WriteStartObject("variants");
            foreach (string v in new[] { Plan.Stable, Plan.Canary })
            {
                var total = _totals.GetValueOrDefault(v);
                var last = v == Plan.Canary ? _lastCanary : _lastStable;
                w.WriteStartObject(v);
                w.WriteNumber("requests", total.Requests);
                w.WriteNumber("errors", total.Errors);
                WriteNullable(w, "last_window_ttft_p95_ms", last?.TtftP95Ms);
                WriteNullable(w, "last_window_inter_token_p95_ms", last?.InterTokenP95Ms);
                WriteNullable(w, "last_window_error_rate", last?.ErrorRate);
                w.WriteEndObject();
            }

            w.WriteEndObject();
            if (AuditLogPath is not null)
            {
                w.WriteString("audit_log", AuditLogPath);
            }

            w.WriteStartArray("decisions");
            foreach (var d in _decisions)
            {
                WriteDecision(w, d);
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }
    }

    private static void WriteNullable(Utf8JsonWriter w, string name, double? value)
    {
        if (value is double v)
        {
            w.WriteNumber(name, Math.Round(v, 3));
        }
        else
        {
            w.WriteNull(name);
        }
    }

    private static void WriteDecision(Utf8JsonWriter w, RolloutDecision d)
    {
        w.WriteStartObject();
        w.WriteString("at", d.At);
        w.WriteString("action", d.Action);
        w.WriteNumber("step", d.Step);
        w.WriteNumber("canary_percent", d.CanaryPercent);
        w.WriteString("reason", d.Reason);
        w.WriteEndObject();
    }

    private RolloutDecision Advance(DateTimeOffset now, string why)
    {
        if (_step + 1 >= Plan.Steps.Count || Plan.Steps[_step + 1] >= 100)
        {
            _step = Plan.Steps.Count - 1;
            _phase = RolloutPhase.Promoted;
            _percent = 100;
            return Decide(now, "promote", why + ": promoted to 100 %");
        }

        _step++;
        _percent = Plan.Steps[_step];
        _stepStarted = now;
        _stepRequests = 0;
        return Decide(now, "advance", why + $": step {_step + 1} of {Plan.Steps.Count}, {Pct(_percent)} canary");
    }

    private static void Compare(string what, double? canary, double? stable, double ratio, double slack, List<string> failed)
    {
        if (canary is double c && stable is double s && c > (s * ratio) + slack)
        {
            failed.Add($"{what} {c:0.#} ms > stable {s:0.#} ms × {ratio:0.##} + {slack:0.#} ms");
        }
    }

    private static string Describe(VariantWindow v) =>
        $"{v.Requests} requests, {v.Errors} errors, TTFT p95 {Ms(v.TtftP95Ms)}, inter-token p95 {Ms(v.InterTokenP95Ms)}";

    private static string Ms(double? ms) => ms is double v ? $"{v:0.#} ms" : "n/a";

    private static string Pct(double percent) => $"{percent.ToString("0.##", CultureInfo.InvariantCulture)} %";

    private static VariantWindow Summarize(List<Sample> window) => new(
        window.Count,
        window.Count(s => s.Failed),
        P95(window.Where(s => !s.Failed && s.Ttft is not null).Select(s => s.Ttft!.Value)),
        P95(window.Where(s => !s.Failed && s.InterTokenGaps is not null).SelectMany(s => s.InterTokenGaps!)));

    /// <summary>The nearest-rank 95th percentile, in milliseconds.</summary>
    private static double? P95(IEnumerable<double> seconds)
    {
        var sorted = seconds.Order().ToArray();
        return sorted.Length == 0 ? null : sorted[Math.Max(0, (int)Math.Ceiling(0.95 * sorted.Length) - 1)] * 1000;
    }

    /// <summary>A hold: written when the last decision was not a hold, or at most once per <see cref="HoldLogInterval"/>.</summary>
    private RolloutDecision Hold(DateTimeOffset now, string reason)
    {
        bool afterHold = _decisions.Count > 0 && _decisions[^1].Action == "hold";
        if (afterHold && now - _lastHoldLogged < HoldLogInterval)
        {
            return new RolloutDecision(now, "hold", _step + 1, _percent, reason);
        }

        _lastHoldLogged = now;
        return Decide(now, "hold", reason);
    }

    private RolloutDecision Decide(DateTimeOffset now, string action, string reason)
    {
        var d = new RolloutDecision(now, action, _step + 1, _percent, reason);
        _decisions.Add(d);
        if (_decisions.Count > RecentDecisions)
        {
            _decisions.RemoveAt(0);
        }

        if (StatePath is not null)
        {
            SaveState();
            using var buffer = new MemoryStream();
            using (var w = new Utf8JsonWriter(buffer))
            {
                WriteDecision(w, d);
            }

            buffer.WriteByte((byte)'\n');
            // Appended and flushed before the decision takes effect for requests: the log never misses one.
            using var log = new FileStream(AuditLogPath!, FileMode.Append, FileAccess.Write, FileShare.Read);
            log.Write(buffer.GetBuffer(), 0, (int)buffer.Length);
            log.Flush(flushToDisk: true);
        }

        return d;
    }

    private void SaveState()
    {
        AtomicFile.Write(StatePath!, s =>
        {
            using var w = new Utf8JsonWriter(s, new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            w.WriteString("stable", Plan.Stable);
            w.WriteString("canary", Plan.Canary);
            w.WriteString("phase", _phase.ToString());
            w.WriteNumber("step", _step);
            w.WriteNumber("canaryPercent", _percent);
            w.WriteNumber("consecutiveFailures", _failures);
            w.WriteString("stepStartedAt", _stepStarted);
            w.WriteNumber("stepRequests", _stepRequests);
            if (_agreement is double a)
            {
                w.WriteNumber("probeAgreement", a);
            }

            if (_perplexity is (double ps, double pc))
            {
                w.WriteNumber("probePerplexityStable", ps);
                w.WriteNumber("probePerplexityCanary", pc);
            }

            w.WriteEndObject();
        });
    }

    private bool TryResume(string path, out string? why)
    {
        why = null;
        using var doc = JsonInput.ParseFile(path);
        var r = doc.RootElement;
        string? Text(string name) => r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        double Number(string name) => r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number
            ? v.GetDouble()
            : throw new MinnowException($"{path}: the rollout state has no number '{name}'.");
        if (Text("stable") != Plan.Stable || Text("canary") != Plan.Canary)
        {
            why = "another rollout";
            return false;
        }

        if (!Enum.TryParse(Text("phase"), out RolloutPhase phase) || phase == RolloutPhase.Fixed != Plan.IsFixed)
        {
            why = "another kind of rollout";
            return false;
        }

        int step = (int)Number("step");
        double percent = Number("canaryPercent");
        if (step < 0 || step >= Plan.Steps.Count || percent is < 0 or > 100)
        {
            throw new MinnowException($"{path}: the rollout state's step {step} or weight {percent} does not fit the plan's {Plan.Steps.Count} steps.");
        }

        _phase = phase;
        _step = step;
        _percent = percent;
        _failures = (int)Number("consecutiveFailures");
        _stepRequests = (long)Number("stepRequests");
        _stepStarted = DateTimeOffset.TryParse(Text("stepStartedAt"), CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var started) ? started : _time.GetUtcNow();
        _agreement = r.TryGetProperty("probeAgreement", out var a) && a.ValueKind == JsonValueKind.Number ? a.GetDouble() : null;
        if (r.TryGetProperty("probePerplexityStable", out var ps) && ps.ValueKind == JsonValueKind.Number
            && r.TryGetProperty("probePerplexityCanary", out var pc) && pc.ValueKind == JsonValueKind.Number)
        {
            _perplexity = (ps.GetDouble(), pc.GetDouble());
        }
        return true;
    }

    private void ReadRecentDecisions()
    {
        if (AuditLogPath is null || !File.Exists(AuditLogPath))
        {
            return;
        }

        foreach (string line in File.ReadLines(AuditLogPath).TakeLast(RecentDecisions - 1))
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                var e = doc.RootElement;
                _decisions.Add(new RolloutDecision(e.GetProperty("at").GetDateTimeOffset(), e.GetProperty("action").GetString()!,
                    e.GetProperty("step").GetInt32(), e.GetProperty("canary_percent").GetDouble(), e.GetProperty("reason").GetString()!));
            }
            catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
            {
                // A line cut short by a crash: the log is for reading; the state file is what resumes.
            }
        }
    }

    private readonly record struct Sample(bool Failed, double? Ttft, IReadOnlyList<double>? InterTokenGaps);
}
