using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Minnow.Inference;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Benchmarking;

/// <summary>
/// The conditions a speed figure was measured under. Every command that prints a speed prints these beside it, so
/// two figures are compared only when their conditions match: decode latency grows with the context already filled
/// (attention reads every cached position), with fewer threads, and is lower in a best-of than in a median.
/// </summary>
public sealed record MeasureConditions
{
    /// <summary>Sequences decoded together in one step (1: one user).</summary>
    public int Batch { get; init; } = 1;

    /// <summary>Prompt tokens of each sequence, read before the first token.</summary>
    public required int PromptTokens { get; init; }

    /// <summary>Tokens generated after the prompt (the first comes from the prompt's step, the rest are decode steps).</summary>
    public required int GeneratedTokens { get; init; }

    /// <summary>Worker threads.</summary>
    public required int Threads { get; init; }

    /// <summary>KV cache element type.</summary>
    public DType KvType { get; init; } = DType.F32;

    /// <summary>Most prompt rows in one step (chunked prefill); the engine default is 64.</summary>
    public int StepTokens { get; init; } = 64;

    /// <summary>Untimed warm-up sequences before the measured ones (JIT, page faults of the mapped weights).</summary>
    public int WarmUpRuns { get; init; } = 1;

    /// <summary>Measured sequences; figures are their medians.</summary>
    public int Runs { get; init; } = 1;

    /// <summary>Positions in the cache when the last token is decoded.</summary>
    public int ContextFill => PromptTokens + GeneratedTokens;

    public void Validate()
    {
        if (Batch < 1 || PromptTokens < 1 || GeneratedTokens < 2 || Threads < 1 || Runs < 1 || WarmUpRuns < 0 || StepTokens < 1)
        {
            throw new MinnowException(
                $"a speed measurement needs a batch, a prompt token, two generated tokens, a thread and a run (got batch {Batch}, prompt {PromptTokens}, " +
                $"generated {GeneratedTokens}, threads {Threads}, runs {Runs}).");
        }
    }

    /// <summary>One line a user can read beside the figure, e.g. "batch 1, prompt 1984 + 64 generated (context filled to 2048), 2 threads, ...".</summary>
    public string Describe() =>
        $"batch {Batch}, prompt {PromptTokens} + {GeneratedTokens} generated (context filled to {ContextFill}), {Threads} thread{(Threads == 1 ? "" : "s")}, " +
        $"KV {KvType.Name().ToLowerInvariant()}, prefill chunks of {StepTokens}, {WarmUpRuns} warm-up, " +
        (Runs == 1 ? "1 run" : $"median of {Runs} runs");

    public void WriteProperties(Utf8JsonWriter w)
    {
        w.WriteNumber("batch", Batch);
        w.WriteNumber("prompt_tokens", PromptTokens);
        w.WriteNumber("generated_tokens", GeneratedTokens);
        w.WriteNumber("context_fill", ContextFill);
        w.WriteNumber("threads", Threads);
        w.WriteString("kv_cache", KvType.Name().ToLowerInvariant());
        w.WriteNumber("step_tokens", StepTokens);
        w.WriteNumber("warm_up_runs", WarmUpRuns);
        w.WriteNumber("runs", Runs);
    }

    public static MeasureConditions Read(JsonElement e) => new()
    {
        Batch = e.GetProperty("batch").GetInt32(),
        PromptTokens = e.GetProperty("prompt_tokens").GetInt32(),
        GeneratedTokens = e.GetProperty("generated_tokens").GetInt32(),
        Threads = e.GetProperty("threads").GetInt32(),
        KvType = e.GetProperty("kv_cache").GetString() == "f16" ? DType.F16 : DType.F32,
        StepTokens = e.GetProperty("step_tokens").GetInt32(),
        WarmUpRuns = e.GetProperty("warm_up_runs").GetInt32(),
        Runs = e.GetProperty("runs").GetInt32(),
    };
}

/// <summary>A median with the spread around it (10th and 90th percentiles).</summary>
public sealed record Spread(double Median, double Low, double High)
{
    public static Spread Of(IReadOnlyCollection<double> values)
    {
        var sorted = values.Where(v => !double.IsNaN(v)).OrderBy(v => v).ToArray();
        if (sorted.Length == 0)
        {
            return new Spread(double.NaN, double.NaN, double.NaN);
        }

        double At(double q) => sorted[(int)Math.Round(q * (sorted.Length - 1))];
        return new Spread(Statistics.Median(sorted), At(0.1), At(0.9));
    }

    public string Describe(string format) =>
        $"{Median.ToString(format, CultureInfo.InvariantCulture)} (p10–p90 {Low.ToString(format, CultureInfo.InvariantCulture)}–{High.ToString(format, CultureInfo.InvariantCulture)})";
}

/// <summary>
/// Speed of one model under <see cref="Conditions"/>. Decode latency is the mean time of a decode step over the
/// generated tokens after the first (as bench, generate and llama-bench's tg report it), at a context fill going
/// from the prompt length to <see cref="MeasureConditions.ContextFill"/>; <see cref="StepMs"/> is the spread of
/// single steps.
/// </summary>
public sealed record SpeedFigures
{
    public required MeasureConditions Conditions { get; init; }

    /// <summary>Prompt tokens of all sequences read per second.</summary>
    public required double PrefillTokensPerSecond { get; init; }

    /// <summary>From submitting until the first token was chosen.</summary>
    public required double TimeToFirstTokenMs { get; init; }

    /// <summary>Mean milliseconds of one decode step (one token for each sequence of the batch).</summary>
    public required double DecodeMsPerStep { get; init; }

    /// <summary>Single decode steps: median and spread (over every measured run).</summary>
    public required Spread StepMs { get; init; }

    /// <summary>Tokens of one sequence per second.</summary>
    public double DecodeTokensPerSecond => 1000 / DecodeMsPerStep;

    /// <summary>Tokens of all sequences per second.</summary>
    public double AggregateTokensPerSecond => Conditions.Batch * 1000 / DecodeMsPerStep;

    /// <summary>"1.55 ms a token (645.2 tokens/s; steps 1.52 (p10–p90 1.50–1.70) ms), prefill 812 tokens/s — batch 1, prompt ...".</summary>
    public string Describe()
    {
        string per = Conditions.Batch == 1 ? "a token" : $"a step for {Conditions.Batch} sequences";
        string rate = Conditions.Batch == 1 ? $"{DecodeTokensPerSecond:0.0} tokens/s" : $"{AggregateTokensPerSecond:0.0} tokens/s in all";
        return string.Create(CultureInfo.InvariantCulture,
            $"{DecodeMsPerStep:0.00} ms {per} ({rate}; single steps {StepMs.Describe("0.00")} ms), prefill {PrefillTokensPerSecond:0} tokens/s — {Conditions.Describe()}");
    }

    public void WriteProperties(Utf8JsonWriter w)
    {
        w.WriteStartObject("conditions");
        Conditions.WriteProperties(w);
        w.WriteEndObject();
        w.WriteNumber("decode_ms_per_step", DecodeMsPerStep);
        w.WriteNumber("step_ms_median", StepMs.Median);
        w.WriteNumber("step_ms_p10", StepMs.Low);
        w.WriteNumber("step_ms_p90", StepMs.High);
        w.WriteNumber("prefill_tok_s", PrefillTokensPerSecond);
        w.WriteNumber("ttft_ms", TimeToFirstTokenMs);
    }

    public static SpeedFigures Read(JsonElement e) => new()
    {
        Conditions = MeasureConditions.Read(e.GetProperty("conditions")),
        DecodeMsPerStep = e.GetProperty("decode_ms_per_step").GetDouble(),
        StepMs = new Spread(e.GetProperty("step_ms_median").GetDouble(), e.GetProperty("step_ms_p10").GetDouble(), e.GetProperty("step_ms_p90").GetDouble()),
        PrefillTokensPerSecond = e.GetProperty("prefill_tok_s").GetDouble(),
        TimeToFirstTokenMs = e.GetProperty("ttft_ms").GetDouble(),
    };
}

/// <summary>
/// The one speed measurement of Minnow: sequences run through the <see cref="Engine"/> — the path <c>generate</c> and
/// <c>serve</c> take — greedy, with a stated prompt, generated tokens, threads, batch, warm-up and runs. Every decode
/// step is timed where the engine hands over its logits, so the figures carry their spread.
/// </summary>
public static class EngineSpeed
{
    /// <summary>
    /// Measures <paramref name="conditions"/>: <see cref="MeasureConditions.Batch"/> sequences of distinct prompts
    /// (rotations of <paramref name="ids"/>, no shared prefix), submitted together, generating in lockstep. The
    /// threads are the model's worker pool; the conditions only state them.
    /// </summary>
    public static SpeedFigures Measure(TransformerModel model, MeasureConditions conditions, IReadOnlyList<int> ids, CancellationToken cancellation = default)
    {
        conditions.Validate();
        if (conditions.ContextFill > model.Config.MaxPositions)
        {
            throw new MinnowException($"prompt {conditions.PromptTokens} + {conditions.GeneratedTokens} generated tokens exceed the model's context of {model.Config.MaxPositions}.");
        }

        if (ids.Count < conditions.PromptTokens)
        {
            throw new MinnowException($"{ids.Count} prompt ids, fewer than the {conditions.PromptTokens} the measurement needs.");
        }

        int context = conditions.ContextFill;
        int pages = conditions.Batch * ((context + KvPagePool.DefaultPageSize - 1) / KvPagePool.DefaultPageSize);
        var options = new EngineOptions
        {
            MaxSequences = conditions.Batch,
            MaxStepTokens = Math.Max(conditions.Batch, conditions.StepTokens),
            ContextSize = context,
            KvType = conditions.KvType,
            KvBudgetBytes = KvPagePool.BytesPerPage(model.Config, conditions.KvType) * pages,
            PrefixCaching = false,
        };
        using var engine = new Engine(model, options);
        var warmUp = conditions with { PromptTokens = Math.Min(conditions.PromptTokens, 16), GeneratedTokens = Math.Min(conditions.GeneratedTokens, 8) };
        for (int i = 0; i < conditions.WarmUpRuns; i++)
        {
            RunOnce(engine, warmUp, ids, cancellation);
        }

        var runs = new List<(double Prefill, double Ttft, double Decode, double[] Steps)>();
        for (int i = 0; i < conditions.Runs; i++)
        {
            runs.Add(RunOnce(engine, conditions, ids, cancellation));
        }

        return new SpeedFigures
        {
            Conditions = conditions,
            PrefillTokensPerSecond = Statistics.Median(runs.Select(r => r.Prefill)),
            TimeToFirstTokenMs = Statistics.Median(runs.Select(r => r.Ttft)),
            DecodeMsPerStep = Statistics.Median(runs.Select(r => r.Decode)),
            StepMs = Spread.Of(runs.SelectMany(r => r.Steps).ToArray()),
        };
    }

    private static (double Prefill, double Ttft, double Decode, double[] Steps) RunOnce(Engine engine, MeasureConditions c, IReadOnlyList<int> ids,
        CancellationToken cancellation)
    {
        var prompts = BatchedDecode.Prompts(ids, c.Batch, c.PromptTokens);

        // The step loop hands every sequence its logits once a step; the last sequence's stamps time the steps.
        var stamps = new long[c.GeneratedTokens];
        var sequences = new EngineSequence[c.Batch];
        for (int s = 0; s < c.Batch; s++)
        {
            bool timed = s == c.Batch - 1;
            var request = new GenerationRequest
            {
                Prompt = prompts[s],
                MaxTokens = c.GeneratedTokens,
                OnLogits = timed ? (index, _) => stamps[Math.Min(index, stamps.Length - 1)] = Stopwatch.GetTimestamp() : null,
            };
            sequences[s] = engine.Submit(request, cancellation);
        }

        Task.WaitAll(sequences.Select(q => q.Completion).ToArray(), cancellation);
        if (sequences.Any(q => q.FinishReason != FinishReason.Length || q.GeneratedTokens != c.GeneratedTokens))
        {
            throw new MinnowException($"a measured sequence ended early ({string.Join(", ", sequences.Select(q => q.FinishReason))}).");
        }

        long submitted = sequences.Min(q => q.SubmittedAt);
        long lastFirst = sequences.Max(q => q.FirstTokenAt);
        long end = sequences.Max(q => q.FinishedAt);
        var steps = new double[c.GeneratedTokens - 1];
        for (int i = 1; i < c.GeneratedTokens; i++)
        {
            steps[i - 1] = Stopwatch.GetElapsedTime(stamps[i - 1], stamps[i]).TotalMilliseconds;
        }

        double prefillSeconds = Stopwatch.GetElapsedTime(submitted, lastFirst).TotalSeconds;
        return (
            c.Batch * c.PromptTokens / Math.Max(prefillSeconds, 1e-9),
            prefillSeconds * 1000,
            Stopwatch.GetElapsedTime(lastFirst, end).TotalMilliseconds / (c.GeneratedTokens - 1),
            steps);
    }

    /// <summary>
    /// The quick look every command that compares models takes (optimize's candidates, quantize, prune): a prompt of
    /// up to 64 tokens and 33 generated (32 decode steps), batch 1 and batch 4, one warm-up, the median of three runs.
    /// </summary>
    public static QuickSpeed Quick(TransformerModel model, int threads, CancellationToken cancellation = default)
    {
        int max = model.Config.MaxPositions;
        int prompt = Math.Max(1, Math.Min(64, max / 2));
        int generated = Math.Clamp(max - prompt, 2, 33);
        var ids = Ids(model.Config, prompt);
        var single = new MeasureConditions { PromptTokens = prompt, GeneratedTokens = generated, Threads = threads, Runs = 3 };
        return new QuickSpeed(Measure(model, single, ids, cancellation), Measure(model, single with { Batch = 4 }, ids, cancellation));
    }

    /// <summary>Deterministic prompt ids for a measurement: pseudo-random, never the model's BOS/EOS ids.</summary>
    public static int[] Ids(ModelConfig config, int count) =>
        BenchmarkInputs.PseudoRandomIds(count, config.VocabSize, BenchmarkInputs.SpecialIds(config, null), seed: 0);
}

/// <summary>A quick look at a model's speed: one sequence, and four decoding together.</summary>
public sealed record QuickSpeed(SpeedFigures Batch1, SpeedFigures Batch4)
{
    public double DecodeMsPerToken => Batch1.DecodeMsPerStep;

    public double Batch4MsPerStep => Batch4.DecodeMsPerStep;

    public double PrefillTokensPerSecond => Batch1.PrefillTokensPerSecond;

    public double DecodeTokensPerSecond => Batch1.DecodeTokensPerSecond;
}
