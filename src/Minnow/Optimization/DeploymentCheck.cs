using System.Text.Json;
using Minnow.Benchmarking;
using Minnow.Formats;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Optimization;

/// <summary>One line of the checklist: PASS, FAIL or INFO, with its figure.</summary>
public sealed record CheckItem(string Name, string Status, string Figure);

/// <summary>
/// Where a process's peak memory went: the weights as loaded, the KV cache at the context, and the rest — the
/// runtime, activations and scratch (everything the process needs besides the first two).
/// </summary>
public sealed record MemoryFigures(long PeakRssBytes, long WeightBytes, long KvCacheBytes, int Context)
{
    public long OverheadBytes => PeakRssBytes - WeightBytes - KvCacheBytes;

    public string Describe() =>
        $"peak RSS {Units.MiB(PeakRssBytes)} = weights {Units.MiB(WeightBytes)} + KV cache {Units.MiB(KvCacheBytes)} at {Context} tokens + runtime and activations {Units.MiB(OverheadBytes)} " +
        "(one process: model loaded once, cache filled to the context, prefill and decode)";

    public void WriteProperties(Utf8JsonWriter w)
    {
        w.WriteNumber("peak_rss_bytes", PeakRssBytes);
        w.WriteNumber("weight_bytes", WeightBytes);
        w.WriteNumber("kv_cache_bytes", KvCacheBytes);
        w.WriteNumber("overhead_bytes", OverheadBytes);
        w.WriteNumber("context", Context);
    }

    public static MemoryFigures Read(JsonElement e) => new(
        e.GetProperty("peak_rss_bytes").GetInt64(), e.GetProperty("weight_bytes").GetInt64(), e.GetProperty("kv_cache_bytes").GetInt64(), e.GetProperty("context").GetInt32());
}

/// <summary>Whether the F32 fallback kernels predict what the quantized ones do.</summary>
public sealed record FallbackFigures(bool Agrees, string Figure)
{
    public void WriteProperties(Utf8JsonWriter w)
    {
        w.WriteBoolean("agrees", Agrees);
        w.WriteString("figure", Figure);
    }

    public static FallbackFigures Read(JsonElement e) => new(e.GetProperty("agrees").GetBoolean(), e.GetProperty("figure").GetString() ?? "");
}

/// <summary>What the measuring child process of <c>check</c> reports.</summary>
public sealed record DeploymentMeasurement(MemoryFigures Memory, SpeedFigures Batch1, SpeedFigures Batch4)
{
    public void WriteProperties(Utf8JsonWriter w)
    {
        w.WriteStartObject("memory");
        Memory.WriteProperties(w);
        w.WriteEndObject();
        w.WriteStartObject("batch1");
        Batch1.WriteProperties(w);
        w.WriteEndObject();
        w.WriteStartObject("batch4");
        Batch4.WriteProperties(w);
        w.WriteEndObject();
    }

    public static DeploymentMeasurement Read(JsonElement e) =>
        new(MemoryFigures.Read(e.GetProperty("memory")), SpeedFigures.Read(e.GetProperty("batch1")), SpeedFigures.Read(e.GetProperty("batch4")));
}

/// <summary>The deployment checklist of one model file.</summary>
public sealed record CheckResult(IReadOnlyList<CheckItem> Items, DeploymentMeasurement Measurement, FallbackFigures Fallback)
{
    public bool Passed => Items.All(i => i.Status != "FAIL");

    public long PeakRssBytes => Measurement.Memory.PeakRssBytes;

    public int Threads => Measurement.Batch1.Conditions.Threads;

    /// <summary>The result's fields inside an object the caller opened (what <c>minnow check --json</c> prints and report.json holds).</summary>
    public void WriteProperties(Utf8JsonWriter w)
    {
        w.WriteBoolean("passed", Passed);
        w.WriteNumber("peak_rss_bytes", PeakRssBytes);
        w.WriteNumber("threads", Threads);
        w.WriteNumber("decode_ms_per_token", Measurement.Batch1.DecodeMsPerStep);
        w.WriteNumber("batch4_ms_per_step", Measurement.Batch4.DecodeMsPerStep);
        w.WriteNumber("prefill_tok_s", Measurement.Batch1.PrefillTokensPerSecond);
        Measurement.WriteProperties(w);
        w.WriteStartObject("fallback");
        Fallback.WriteProperties(w);
        w.WriteEndObject();
        w.WriteStartArray("items");
        foreach (var item in Items)
        {
            w.WriteStartObject();
            w.WriteString("name", item.Name);
            w.WriteString("status", item.Status);
            w.WriteString("figure", item.Figure);
            w.WriteEndObject();
        }

        w.WriteEndArray();
    }

    public static CheckResult Read(JsonElement e) => new(
        e.GetProperty("items").EnumerateArray()
            .Select(i => new CheckItem(i.GetProperty("name").GetString()!, i.GetProperty("status").GetString()!, i.GetProperty("figure").GetString()!)).ToList(),
        DeploymentMeasurement.Read(e),
        FallbackFigures.Read(e.GetProperty("fallback")));
}

/// <summary>The two parts of the check that each run in a process of their own.</summary>
public enum CheckPart
{
    /// <summary>Memory and speed: the model loaded once, the cache filled to the context.</summary>
    Measure,

    /// <summary>The F32 fallback kernels against the quantized ones (its F32 copies never count in the memory figure).</summary>
    Fallback,
}

/// <summary>
/// <c>minnow check</c>: what a deployment of a model needs, measured on the process the user will run. The
/// measuring part runs in a clean child process that loads the model once, fills the KV cache to the context with
/// a prompt and generated tokens through the engine (the path <c>generate</c> and <c>serve</c> take) — its peak
/// RSS is the memory figure, split into weights, KV cache and the rest — then times four sequences decoding
/// together. The fallback comparison runs in another process, so its F32 copies never count.
/// </summary>
public static class DeploymentCheck
{
    /// <summary>Tokens generated at the end of the context: the decode steps whose latency is the batch-1 figure.</summary>
    public const int GeneratedTokens = 64;

    /// <summary>Positions compared by the fallback check (or the context, when shorter).</summary>
    public const int FallbackPositions = 256;

    /// <summary>
    /// The checklist. <paramref name="runPart"/> runs a part in a fresh process and returns the JSON object it printed
    /// (<see cref="RunPart"/> in that process); <see cref="InThisProcess"/> runs it here instead.
    /// </summary>
    public static CheckResult Run(Func<CheckPart, string> runPart, Budget budget, CancellationToken cancellation = default)
    {
        DeploymentMeasurement measured;
        FallbackFigures fallback;
        try
        {
            using (var doc = JsonDocument.Parse(runPart(CheckPart.Measure)))
            {
                measured = DeploymentMeasurement.Read(doc.RootElement);
            }

            cancellation.ThrowIfCancellationRequested();
            using (var doc = JsonDocument.Parse(runPart(CheckPart.Fallback)))
            {
                fallback = FallbackFigures.Read(doc.RootElement);
            }
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new MinnowException($"the check's measuring process printed no result ({e.Message}).");
        }

        return Assess(measured, fallback, budget);
    }

    /// <summary>The checklist items from the measurements and the budget.</summary>
    public static CheckResult Assess(DeploymentMeasurement measured, FallbackFigures fallback, Budget budget)
    {
        var items = new List<CheckItem>();
        var memory = measured.Memory;
        if (budget.RamBytes is long ram)
        {
            long limit = (long)(ram * (1 - Budget.SafetyMargin));
            items.Add(new CheckItem("fits in RAM with a 10% margin", memory.PeakRssBytes <= limit ? "PASS" : "FAIL",
                $"{memory.Describe()}; limit {Units.MiB(limit)} of {Units.MiB(ram)}"));
        }
        else
        {
            items.Add(new CheckItem("memory", "INFO", memory.Describe()));
        }

        var b1 = measured.Batch1;
        items.Add(budget.LatencyMs is double ms
            ? new CheckItem("latency at batch 1", b1.DecodeMsPerStep <= ms ? "PASS" : "FAIL", $"{b1.Describe()}; limit {ms:0.0} ms")
            : new CheckItem("latency at batch 1", "INFO", b1.Describe()));
        items.Add(new CheckItem("latency at batch 4", "INFO", measured.Batch4.Describe()));
        items.Add(new CheckItem("thread count", "INFO", $"{b1.Conditions.Threads} (--threads; default every core, {Environment.ProcessorCount} here)"));
        items.Add(new CheckItem("fallback to F32 kernels", fallback.Agrees ? "PASS" : "FAIL", fallback.Figure));
        return new CheckResult(items, measured, fallback);
    }

    /// <summary>Runs every part in this process (its memory then includes what ran before); for when no child can start.</summary>
    public static Func<CheckPart, string> InThisProcess(Func<WorkerPool, TransformerModel> load, int threads, int? context, CancellationToken cancellation) =>
        part =>
        {
            using var buffer = new MemoryStream();
            using (var w = new Utf8JsonWriter(buffer))
            {
                w.WriteStartObject();
                RunPart(part, load, threads, context, w, cancellation);
                w.WriteEndObject();
            }

            return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
        };

    /// <summary>One part, in the calling process: writes its result's properties into an object the caller opened.</summary>
    public static void RunPart(CheckPart part, Func<WorkerPool, TransformerModel> load, int threads, int? context, Utf8JsonWriter w, CancellationToken cancellation)
    {
        if (threads < 1)
        {
            throw new MinnowException($"--threads must be at least 1 (got {threads}).");
        }

        if (part == CheckPart.Measure)
        {
            Measure(load, threads, context, cancellation).WriteProperties(w);
        }
        else
        {
            using var pool = new WorkerPool(threads);
            using var model = load(pool);
            CheckFallback(model, pool, cancellation).WriteProperties(w);
        }
    }

    /// <summary>
    /// Loads the model once and generates, greedily through the engine, the last <see cref="GeneratedTokens"/> tokens
    /// of the context after a prompt that fills the rest (the memory a long conversation needs, and decode latency at
    /// that fill); reads the peak; then times four sequences of a 64-token prompt decoding 32 tokens together.
    /// </summary>
    public static DeploymentMeasurement Measure(Func<WorkerPool, TransformerModel> load, int threads, int? context, CancellationToken cancellation)
    {
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        ResetPeak();
        using var pool = new WorkerPool(threads);
        using var model = load(pool);
        int ctx = Math.Clamp(context ?? model.Config.MaxPositions, 2, model.Config.MaxPositions);
        int generated = Math.Clamp(ctx / 4, 2, GeneratedTokens);
        var ids = EngineSpeed.Ids(model.Config, ctx);
        var single = new MeasureConditions { PromptTokens = ctx - generated, GeneratedTokens = generated, Threads = threads, KvType = DType.F32 };
        var batch1 = EngineSpeed.Measure(model, single, ids, cancellation);
        long peak = ProcessMemory.PeakResidentBytes();
        long weights = model.Weights.All.Values.Sum(t => t.ByteSize);
        long kv = KvPagePool.BytesPerPage(model.Config, DType.F32) * ((ctx + KvPagePool.DefaultPageSize - 1) / KvPagePool.DefaultPageSize);

        int prompt4 = Math.Max(1, Math.Min(64, ctx / 2));
        var four = new MeasureConditions { Batch = 4, PromptTokens = prompt4, GeneratedTokens = Math.Clamp(ctx - prompt4, 2, 32), Threads = threads, KvType = DType.F32 };
        var batch4 = EngineSpeed.Measure(model, four, ids, cancellation);
        return new DeploymentMeasurement(new MemoryFigures(peak, weights, kv, ctx), batch1, batch4);
    }

    /// <summary>
    /// The model with its quantized tensors converted to F32 (what a device without the quantized kernels runs) must
    /// predict the same next token as the model itself wherever the choice is clear (top two logits more than 0.25
    /// apart), over <see cref="FallbackPositions"/> positions.
    /// </summary>
    public static FallbackFigures CheckFallback(TransformerModel model, WorkerPool pool, CancellationToken cancellation)
    {
        var quantized = model.Weights.All.Values.Count(t => t.Type is DType.Q8_0 or DType.Q4_0);
        if (quantized == 0)
        {
            return new FallbackFigures(true, "no quantized tensors: the model runs on the F32/F16 kernels already");
        }

        using var fallback = ModelConversion.Convert(model, t => t.Type is DType.Q8_0 or DType.Q4_0 ? DType.F32 : t.Type, shareUnchanged: true, pool);
        int n = Math.Min(FallbackPositions, model.Config.MaxPositions);
        var ids = EngineSpeed.Ids(model.Config, n);
        var a = MinnowEngine.AllLogits(model, ids, cancellation: cancellation);
        var b = MinnowEngine.AllLogits(fallback, ids, cancellation: cancellation);
        var agreement = LogitAgreement.Compare(a, b, model.Config.VocabSize, ids, clearGap: 0.25f);
        int clearSame = (int)Math.Round(agreement.ClearArgmaxAgreement * agreement.ClearPositions);
        bool agrees = agreement.ClearArgmaxAgreement >= 0.99 && agreement.PerplexityRelativeDifference <= 0.01;
        return new FallbackFigures(agrees,
            $"{quantized} quantized tensors run as F32 over {n} positions: same next token at {clearSame} of {agreement.ClearPositions} positions with a clear choice " +
            $"(top two > 0.25 apart), {agreement.ArgmaxAgreement:P1} of all; perplexity {agreement.PerplexityA:0.000} vs {agreement.PerplexityB:0.000} " +
            $"({agreement.PerplexityRelativeDifference:P2} apart; pass: ≥ 99% and ≤ 1%)");
    }

    /// <summary>Resets the kernel's peak-RSS counter of this process (Linux: "5" into /proc/self/clear_refs).</summary>
    private static void ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Not Linux, or not allowed: the peak then includes what ran before the check.
        }
    }

    /// <summary>A loader for a model path or files (a decrypted sealed package, for one).</summary>
    public static Func<WorkerPool, TransformerModel> Loader(string modelPath) => pool => ModelLoader.LoadModel(modelPath, pool);

    public static Func<WorkerPool, TransformerModel> Loader(IModelFiles files) => pool => ModelLoader.LoadModel(files, pool, null);
}
