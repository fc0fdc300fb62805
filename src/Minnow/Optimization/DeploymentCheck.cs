using Minnow.Benchmarking;
using Minnow.Formats;
using Minnow.Inference;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Quantization;
using Minnow.Tensors;

namespace Minnow.Optimization;

/// <summary>One line of the checklist: PASS, FAIL or INFO, with its figure.</summary>
public sealed record CheckItem(string Name, string Status, string Figure);

/// <summary>The deployment checklist of one model file.</summary>
public sealed record CheckResult(IReadOnlyList<CheckItem> Items, long PeakRssBytes, int Threads, Latency Latency)
{
    public bool Passed => Items.All(i => i.Status != "FAIL");

    /// <summary>The result's fields inside an object the caller opened (what <c>minnow check --json</c> prints and report.json holds).</summary>
    public void WriteProperties(System.Text.Json.Utf8JsonWriter w)
    {
        w.WriteBoolean("passed", Passed);
        w.WriteNumber("peak_rss_bytes", PeakRssBytes);
        w.WriteNumber("threads", Threads);
        w.WriteNumber("decode_ms_per_token", Latency.DecodeMsPerToken);
        w.WriteNumber("batch4_ms_per_step", Latency.Batch4MsPerStep);
        w.WriteNumber("prefill_tok_s", Latency.PrefillTokensPerSecond);
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
}

/// <summary>
/// <c>minnow check</c>: loads a model file as a deployment would and measures, in this process, what it needs —
/// peak resident memory with the KV cache at the context filled (weights + cache + runtime, measured from
/// /proc, the peak reset first where Linux allows it), decode latency at batch 1 and 4 for 1 thread and for every
/// core to choose the thread count, and the fallback path: the quantized tensors converted to F32 kernels give
/// the same next tokens.
/// </summary>
public static class DeploymentCheck
{
    public static CheckResult Run(string modelPath, Budget budget, int? context = null, CancellationToken cancellation = default) =>
        Run(pool => ModelLoader.LoadModel(modelPath, pool), ModelFileBytes(modelPath), budget, context, cancellation);

    /// <summary>As <see cref="Run(string, Budget, int?, CancellationToken)"/> for a model's files (a decrypted sealed package, for one).</summary>
    public static CheckResult Run(IModelFiles files, Budget budget, int? context = null, CancellationToken cancellation = default) =>
        Run(pool => ModelLoader.LoadModel(files, pool, null), files.Names.Sum(files.SizeOf), budget, context, cancellation);

    private static CheckResult Run(Func<WorkerPool, TransformerModel> load, long weights, Budget budget, int? context, CancellationToken cancellation)
    {
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        ResetPeak();
        long before = ProcessMemory.CurrentResidentBytes();

        int cores = Math.Max(1, Environment.ProcessorCount);
        var threadCounts = cores > 1 ? new[] { 1, cores } : [1];
        Latency? best = null;
        int bestThreads = 1;
        int ctx = 0;
        long kv = 0;
        bool fallbackAgrees = false;
        string fallbackFigure = "";
        foreach (int threads in threadCounts)
        {
            cancellation.ThrowIfCancellationRequested();
            using var pool = new WorkerPool(threads);
            using var model = load(pool);
            ctx = Math.Clamp(context ?? model.Config.MaxPositions, 2, model.Config.MaxPositions);
            kv = Optimizer.KvCacheBytes(model.Config, ctx);

            // The cache at the full context, filled: the memory a long conversation needs.
            using (var session = new InferenceSession(model, ctx))
            {
                var ids = Enumerable.Range(0, ctx).Select(i => ((i * 7) + 3) % model.Config.VocabSize).ToArray();
                session.Prefill(ids, cancellation);
            }

            var latency = SpeedMeasurement.Measure(model, cancellation: cancellation);
            if (best is null || latency.DecodeMsPerToken < best.DecodeMsPerToken)
            {
                best = latency;
                bestThreads = threads;
            }

            if (threads == threadCounts[^1])
            {
                (fallbackAgrees, fallbackFigure) = CheckFallback(model, pool, cancellation);
            }
        }

        long peak = ProcessMemory.PeakResidentBytes();
        var items = new List<CheckItem>();
        string memory = $"peak RSS {Mb(peak)} (model files {Mb(weights)}, KV cache {Mb(kv)} at {ctx} tokens, process before loading {Mb(before)})";
        if (budget.RamBytes is long ram)
        {
            long limit = (long)(ram * (1 - Budget.SafetyMargin));
            items.Add(new CheckItem("fits in RAM with a 10% margin", peak <= limit ? "PASS" : "FAIL", $"{memory}; limit {Mb(limit)} of {Mb(ram)}"));
        }
        else
        {
            items.Add(new CheckItem("memory", "INFO", memory));
        }

        string b1 = $"{best!.DecodeMsPerToken:0.00} ms a token ({1000 / best.DecodeMsPerToken:0.0} tokens/s), prefill {best.PrefillTokensPerSecond:0} tokens/s";
        items.Add(budget.LatencyMs is double ms
            ? new CheckItem("latency at batch 1", best.DecodeMsPerToken <= ms ? "PASS" : "FAIL", $"{b1}; limit {ms:0.0} ms")
            : new CheckItem("latency at batch 1", "INFO", b1));
        items.Add(new CheckItem("latency at batch 4", "INFO", $"{best.Batch4MsPerStep:0.00} ms a step for 4 sequences ({best.Batch4TokensPerSecond:0.0} tokens/s in all)"));
        items.Add(new CheckItem("thread count", "INFO", $"{bestThreads} (fastest decode of {string.Join(", ", threadCounts)} on {cores} cores)"));
        items.Add(new CheckItem("fallback to F32 kernels", fallbackAgrees ? "PASS" : "FAIL", fallbackFigure));
        return new CheckResult(items, peak, bestThreads, best);
    }

    /// <summary>
    /// The model with its quantized tensors converted to F32 (what a device without the quantized kernels runs) must
    /// predict the same next token as the model itself wherever the choice is clear.
    /// </summary>
    private static (bool Agrees, string Figure) CheckFallback(TransformerModel model, WorkerPool pool, CancellationToken cancellation)
    {
        var quantized = model.Weights.All.Values.Count(t => t.Type is DType.Q8_0 or DType.Q4_0);
        if (quantized == 0)
        {
            return (true, "no quantized tensors: the model runs on the F32/F16 kernels already");
        }

        using var fallback = ModelConversion.Convert(model, t => t.Type is DType.Q8_0 or DType.Q4_0 ? DType.F32 : t.Type, shareUnchanged: true, pool);
        int n = Math.Min(32, model.Config.MaxPositions);
        var ids = Enumerable.Range(0, n).Select(i => ((i * 11) + 5) % model.Config.VocabSize).ToArray();
        var a = MinnowEngine.AllLogits(model, ids, cancellation: cancellation);
        var b = MinnowEngine.AllLogits(fallback, ids, cancellation: cancellation);
        int vocab = model.Config.VocabSize, clear = 0, same = 0;
        for (int p = 0; p < n; p++)
        {
            var row = a.AsSpan(p * vocab, vocab);
            int top = MinnowEngine.ArgMax(row);
            float second = float.MinValue;
            for (int v = 0; v < vocab; v++)
            {
                second = v != top ? Math.Max(second, row[v]) : second;
            }

            if (row[top] - second > 0.25f)
            {
                clear++;
                same += MinnowEngine.ArgMax(b.AsSpan(p * vocab, vocab)) == top ? 1 : 0;
            }
        }

        return (same == clear, $"{quantized} quantized tensors run as F32: same next token at {same} of {clear} positions with a clear choice");
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

    private static long ModelFileBytes(string modelPath) => new FileInfo(modelPath).Exists ? new FileInfo(modelPath).Length : DirectorySize(modelPath);

    private static long DirectorySize(string path) =>
        Directory.Exists(path) ? new DirectoryInfo(path).EnumerateFiles("*.safetensors").Sum(f => f.Length) : 0;

    private static string Mb(long bytes) => $"{bytes / 1e6:0.0} MB";
}
