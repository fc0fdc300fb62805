using Minnow.Benchmarking;
using Minnow.Inference;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Optimization;

/// <summary>What the user's device allows: resident memory and per-token latency, and how much perplexity may be lost.</summary>
public sealed record Budget
{
    /// <summary>Resident memory of the process running the model, in bytes (null: no limit).</summary>
    public long? RamBytes { get; init; }

    /// <summary>Bytes of the weights (what the model takes on disk or flash; null: no limit).</summary>
    public long? MaxWeightBytes { get; init; }

    /// <summary>Decode latency of one token at batch 1, in milliseconds (null: no limit).</summary>
    public double? LatencyMs { get; init; }

    /// <summary>
    /// Without a RAM or latency budget, the search picks the smallest model whose perplexity is at most this much
    /// above the original's (a fraction: 0.02 is 2%).
    /// </summary>
    public double MaxPerplexityIncrease { get; init; } = 0.02;

    /// <summary>Memory is budgeted with this margin: a model fits when its peak RSS is at most (1 − margin) · RAM.</summary>
    public const double SafetyMargin = 0.10;

    public bool HasLimits => RamBytes is not null || LatencyMs is not null || MaxWeightBytes is not null;
}

/// <summary>The texts a search uses, as token ids: calibration sequences, and evaluation tokens scored in windows of <see cref="Context"/>.</summary>
public sealed record SearchTexts(IReadOnlyList<int[]> Calibration, IReadOnlyList<int> Evaluation, int Context, int? Bos, int? MaxChunks = null, int QuickChunks = 8);

/// <summary>The figures of one model: the original (baseline) or a candidate.</summary>
public sealed record Measurement
{
    public required string Name { get; init; }

    public required long WeightBytes { get; init; }

    public required long Parameters { get; init; }

    /// <summary>Perplexity on the first few evaluation windows (the cheap first look).</summary>
    public required double QuickPerplexity { get; init; }

    /// <summary>Perplexity on the whole evaluation text (null: not evaluated in full).</summary>
    public double? Perplexity { get; init; }

    public double? PerplexityStandardError { get; init; }

    public double? PrefillTokensPerSecond { get; init; }

    public double? DecodeMsPerToken { get; init; }

    public double? Batch4MsPerStep { get; init; }

    /// <summary>Estimated peak resident memory running it: weights + KV cache at the context + the runtime's own (measured on the baseline).</summary>
    public long? EstimatedRamBytes { get; init; }

    /// <summary>Peak resident memory measured in the process (the baseline only).</summary>
    public long? PeakRssBytes { get; init; }

    /// <summary>Why the recipe could not be built (null when it was).</summary>
    public string? Error { get; init; }

    /// <summary>The conditions of the speed figures (batch 4: the same with four sequences).</summary>
    public string? SpeedConditions { get; init; }

    public bool Full => Perplexity is not null && DecodeMsPerToken is not null;
}

/// <summary>A measured candidate and where it stands.</summary>
public sealed record Candidate(Recipe Recipe, Measurement Measurement, bool MeetsBudget, bool OnParetoFront, bool FromCache);

/// <summary>The outcome of a search.</summary>
public sealed record SearchResult(Measurement Baseline, IReadOnlyList<Candidate> Candidates, Candidate? Chosen, Candidate? Closest, string Verdict);

/// <summary>
/// The search behind <c>minnow optimize</c>: measure the original, build every recipe, look at each cheaply (size
/// without evaluation, perplexity on a short slice), evaluate the promising ones in full (whole evaluation text,
/// latency at batch 1 and 4), and choose the most accurate one within the budget — or the smallest within the
/// allowed perplexity increase when no RAM or latency budget is given.
/// </summary>
public sealed class Optimizer(TransformerModel source, SearchTexts texts, Budget budget, CandidateCache? cache = null, WorkerPool? pool = null)
{
    /// <summary>The calibration sequences as one token stream (BOS dropped), for the mixed-precision scan.</summary>
    private readonly List<int> _scanTokens = texts.Calibration.SelectMany(s => texts.Bos is null ? s : s.Skip(1)).ToList();

    /// <summary>Reports each stage: a description, done, total.</summary>
    public Action<string, int, int>? Progress { get; init; }

    public SearchResult Run(IReadOnlyList<Recipe> recipes, CancellationToken cancellation = default)
    {
        // 1. Baseline, before anything is changed.
        Report("baseline", 0, 1);
        var baseline = MeasureBaseline(cancellation);
        Report("baseline", 1, 1);
        long kvBytes = KvCacheBytes(source.Config, texts.Context);
        long overhead = Math.Max(0, (baseline.PeakRssBytes ?? 0) - baseline.WeightBytes - kvBytes);

        // 2. A cheap look at every recipe: size (no evaluation needed) and perplexity on a short slice.
        var quick = new List<(Recipe Recipe, Measurement M, bool Cached)>();
        for (int i = 0; i < recipes.Count; i++)
        {
            cancellation.ThrowIfCancellationRequested();
            Report($"quick look: {recipes[i].Name}", i, recipes.Count);
            if (cache?.TryGet(recipes[i].Name) is Measurement cached)
            {
                quick.Add((recipes[i], cached, true));
                continue;
            }

            var m = Quick(recipes[i], kvBytes, overhead, cancellation);
            quick.Add((recipes[i], m, false));
            cache?.Put(m);
        }

        Report("quick look", recipes.Count, recipes.Count);

        // 3. In full: those that can fit and are not beaten on both size and quick perplexity by one that can fit too.
        var fits = quick.Where(q => q.M.Error is null && (budget.RamBytes is not long ram || q.M.EstimatedRamBytes <= RamLimit(ram)) &&
            (budget.MaxWeightBytes is not long size || q.M.WeightBytes <= size)).ToList();
        var promising = fits.Where(a => !fits.Any(b => Dominates(b.M.WeightBytes, b.M.QuickPerplexity, a.M.WeightBytes, a.M.QuickPerplexity))).ToList();
        if (budget.LatencyMs is not null || !budget.HasLimits)
        {
            // Latency is not known before running, and without limits size decides: look at everything that fits.
            promising = fits;
        }

        var measured = new Dictionary<string, Measurement>(StringComparer.Ordinal);
        for (int i = 0; i < promising.Count; i++)
        {
            cancellation.ThrowIfCancellationRequested();
            var (recipe, m, _) = promising[i];
            Report($"full evaluation: {recipe.Name}", i, promising.Count);
            if (!m.Full)
            {
                m = Full(recipe, m, cancellation);
                cache?.Put(m);
            }

            measured[recipe.Name] = m;
        }

        Report("full evaluation", promising.Count, promising.Count);

        // 4. The Pareto front (size, latency, perplexity) and the choice.
        var all = quick.Select(q => measured.TryGetValue(q.Recipe.Name, out var full) ? (q.Recipe, M: full, q.Cached) : (q.Recipe, q.M, q.Cached)).ToList();
        var evaluated = all.Where(a => a.M.Full).ToList();
        // Meeting the budget is a fact about the candidate's figures, whether or not it was evaluated in full; the choice
        // is made among those that were.
        var candidates = all.Select(a => new Candidate(a.Recipe, a.M, a.M.Error is null && Meets(a.M, baseline),
            a.M.Full && !evaluated.Any(b => Dominates(b.M, a.M)), a.Cached)).ToList();
        var meeting = candidates.Where(c => c.MeetsBudget && c.Measurement.Full).ToList();
        Candidate? chosen = budget.HasLimits
            ? meeting.MinBy(c => c.Measurement.Perplexity)
            : meeting.MinBy(c => (c.Measurement.WeightBytes, c.Measurement.Perplexity));
        if (chosen is not null)
        {
            return new SearchResult(baseline, candidates, chosen, null, Describe(chosen, baseline));
        }

        // The closest: among those evaluated in full, else (nothing could fit) among all that were built.
        var reachable = candidates.Any(c => c.Measurement.Full) ? candidates.Where(c => c.Measurement.Full) : candidates.Where(c => c.Measurement.Error is null);
        var closest = reachable.MinBy(c => Violation(c.Measurement, baseline));
        string verdict = closest is null
            ? "no recipe could be built and evaluated"
            : $"no recipe meets the budget; the closest is {closest.Recipe.Name} ({Shortfall(closest.Measurement, baseline)})";
        return new SearchResult(baseline, candidates, null, closest, verdict);
    }

    /// <summary>Bytes of the KV cache at <paramref name="context"/> positions (F32 keys and values for every layer).</summary>
    public static long KvCacheBytes(ModelConfig config, int context)
    {
        long perPosition = 0;
        for (int layer = 0; layer < config.Layers; layer++)
        {
            perPosition += 2L * config.KvDimOf(layer) * sizeof(float);
        }

        return perPosition * context;
    }

    private static long RamLimit(long ram) => (long)(ram * (1 - Budget.SafetyMargin));

    /// <summary>
    /// Whether a candidate's figures are within the budget: every limit set holds. A latency limit needs a measured
    /// latency (unknown is not within it); without limits, its perplexity (the quick look's when it was not evaluated in
    /// full) is within the allowed increase.
    /// </summary>
    public static bool MeetsBudget(Measurement m, Measurement baseline, Budget budget)
    {
        if (budget.RamBytes is long ram && (m.EstimatedRamBytes is not long estimated || estimated > RamLimit(ram)))
        {
            return false;
        }

        if (budget.LatencyMs is double latency && (m.DecodeMsPerToken is not double ms || ms > latency))
        {
            return false;
        }

        if (budget.MaxWeightBytes is long size && m.WeightBytes > size)
        {
            return false;
        }

        return budget.HasLimits || (m.Perplexity ?? m.QuickPerplexity) <= baseline.Perplexity * (1 + budget.MaxPerplexityIncrease);
    }

    private bool Meets(Measurement m, Measurement baseline) => MeetsBudget(m, baseline, budget);

    /// <summary>How far a candidate is from the budget: the worst ratio of figure to limit (1 or less meets it).</summary>
    private double Violation(Measurement m, Measurement baseline)
    {
        double worst = 0;
        if (budget.RamBytes is long ram)
        {
            worst = Math.Max(worst, (double)(m.EstimatedRamBytes ?? long.MaxValue) / RamLimit(ram));
        }

        if (budget.LatencyMs is double latency)
        {
            worst = Math.Max(worst, (m.DecodeMsPerToken ?? double.MaxValue) / latency);
        }

        if (budget.MaxWeightBytes is long size)
        {
            worst = Math.Max(worst, (double)m.WeightBytes / size);
        }

        if (!budget.HasLimits)
        {
            worst = Math.Max(worst, (m.Perplexity ?? m.QuickPerplexity) / (baseline.Perplexity!.Value * (1 + budget.MaxPerplexityIncrease)));
        }

        return worst;
    }

    private string Shortfall(Measurement m, Measurement baseline)
    {
        var parts = new List<string>();
        if (budget.RamBytes is long ram)
        {
            parts.Add($"{Mb(m.EstimatedRamBytes ?? 0)} of RAM against {Mb(RamLimit(ram))} allowed with the {Budget.SafetyMargin:P0} margin");
        }

        if (budget.LatencyMs is double latency)
        {
            parts.Add($"{m.DecodeMsPerToken:0.0} ms a token against {latency:0.0} ms");
        }

        if (budget.MaxWeightBytes is long size)
        {
            parts.Add($"{Mb(m.WeightBytes)} of weights against {Mb(size)}");
        }

        if (!budget.HasLimits)
        {
            parts.Add($"perplexity {m.Perplexity ?? m.QuickPerplexity:0.00} against at most {baseline.Perplexity * (1 + budget.MaxPerplexityIncrease):0.00}");
        }

        return string.Join("; ", parts);
    }

    private static string Describe(Candidate chosen, Measurement baseline)
    {
        var m = chosen.Measurement;
        return $"{chosen.Recipe.Name}: {Mb(m.WeightBytes)} of weights ({(double)m.WeightBytes / baseline.WeightBytes:P0} of the original), " +
            $"perplexity {m.Perplexity:0.00} (original {baseline.Perplexity:0.00}), {m.DecodeMsPerToken:0.00} ms a token";
    }

    private static string Mb(long bytes) => Units.MiB(bytes);

    private static bool Dominates(long sizeA, double pplA, long sizeB, double pplB) =>
        sizeA <= sizeB && pplA <= pplB && (sizeA < sizeB || pplA < pplB);

    /// <summary>a is no worse than b on size, latency and perplexity, and better on one.</summary>
    private static bool Dominates(Measurement a, Measurement b)
    {
        double pa = a.Perplexity!.Value, pb = b.Perplexity!.Value, la = a.DecodeMsPerToken!.Value, lb = b.DecodeMsPerToken!.Value;
        return a.WeightBytes <= b.WeightBytes && la <= lb && pa <= pb && (a.WeightBytes < b.WeightBytes || la < lb || pa < pb);
    }

    private int Threads => pool?.ThreadCount ?? WorkerPool.Shared.ThreadCount;

    private Measurement MeasureBaseline(CancellationToken cancellation)
    {
        var quick = Evaluate(source, texts.QuickChunks, cancellation);
        var full = Evaluate(source, texts.MaxChunks, cancellation);
        var speed = EngineSpeed.Quick(source, Threads, cancellation);
        return new Measurement
        {
            Name = "original",
            WeightBytes = source.Weights.ByteSize,
            Parameters = source.Weights.ParameterCount,
            QuickPerplexity = quick.Perplexity,
            Perplexity = full.Perplexity,
            PerplexityStandardError = full.StandardError,
            PrefillTokensPerSecond = speed.PrefillTokensPerSecond,
            DecodeMsPerToken = speed.DecodeMsPerToken,
            Batch4MsPerStep = speed.Batch4MsPerStep,
            SpeedConditions = speed.Batch1.Conditions.Describe(),
            PeakRssBytes = ProcessMemory.PeakResidentBytes(),
            EstimatedRamBytes = ProcessMemory.PeakResidentBytes(),
        };
    }

    private Measurement Quick(Recipe recipe, long kvBytes, long overhead, CancellationToken cancellation)
    {
        TransformerModel model;
        try
        {
            model = Build(recipe, cancellation);
        }
        catch (MinnowException e)
        {
            return new Measurement { Name = recipe.Name, WeightBytes = 0, Parameters = 0, QuickPerplexity = double.NaN, Error = e.Message };
        }

        using (model)
        {
            var quick = Evaluate(model, texts.QuickChunks, cancellation);
            long kv = KvCacheBytes(model.Config, texts.Context);
            return new Measurement
            {
                Name = recipe.Name,
                WeightBytes = model.Weights.ByteSize,
                Parameters = model.Weights.ParameterCount,
                QuickPerplexity = quick.Perplexity,
                EstimatedRamBytes = model.Weights.ByteSize + kv + overhead,
            };
        }
    }

    private Measurement Full(Recipe recipe, Measurement quick, CancellationToken cancellation)
    {
        using var model = Build(recipe, cancellation);
        var full = Evaluate(model, texts.MaxChunks, cancellation);
        var speed = EngineSpeed.Quick(model, Threads, cancellation);
        return quick with
        {
            Perplexity = full.Perplexity,
            PerplexityStandardError = full.StandardError,
            PrefillTokensPerSecond = speed.PrefillTokensPerSecond,
            DecodeMsPerToken = speed.DecodeMsPerToken,
            Batch4MsPerStep = speed.Batch4MsPerStep,
        };
    }

    /// <summary>Builds a recipe's model in memory (also used to write the chosen one).</summary>
    public TransformerModel Build(Recipe recipe, CancellationToken cancellation = default)
    {
        int scanContext = Math.Min(texts.Context, texts.Calibration.Count > 0 ? texts.Calibration[0].Length : texts.Context);
        return recipe.Build(source, texts.Calibration, _scanTokens, scanContext, texts.Bos, pool, cancellation);
    }

    private PerplexityResult Evaluate(TransformerModel model, int? chunks, CancellationToken cancellation) =>
        PerplexityEvaluator.Evaluate(model, texts.Evaluation, texts.Context, chunks, texts.Bos, null, cancellation);

    private void Report(string stage, int done, int total) => Progress?.Invoke(stage, done, total);
}
