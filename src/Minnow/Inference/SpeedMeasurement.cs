using System.Diagnostics;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Inference;

/// <summary>Per-token latency of one model: prefill, decode of one sequence, and decode of four sequences side by side.</summary>
public sealed record Latency(double PrefillTokensPerSecond, double DecodeMsPerToken, double Batch4MsPerStep)
{
    /// <summary>Tokens per second decoding one sequence.</summary>
    public double DecodeTokensPerSecond => 1000 / DecodeMsPerToken;

    /// <summary>Tokens per second over the four sequences.</summary>
    public double Batch4TokensPerSecond => 4000 / Batch4MsPerStep;
}

/// <summary>
/// Measures <see cref="Latency"/>: a prompt of up to 64 tokens, then decode steps; the best of a few runs (the least
/// disturbed by other work on the machine). Batch 4 is four independent sequences, each advanced by one token per
/// step through the engine's batched forward pass (one pass over the weights for the four rows, attention per
/// sequence) — the time a step takes is the latency each of four concurrent users sees.
/// </summary>
public static unsafe class SpeedMeasurement
{
    /// <summary>
    /// Runs at least <paramref name="repeats"/> times, and more (up to 30) until about half a second has been spent,
    /// so that a small model's sub-millisecond tokens are timed over enough of them.
    /// </summary>
    public static Latency Measure(TransformerModel model, int repeats = 2, CancellationToken cancellation = default)
    {
        int max = model.Config.MaxPositions;
        int prompt = Math.Max(1, Math.Min(64, max / 2));
        int steps = Math.Max(1, Math.Min(32, max - prompt));
        int vocab = model.Config.VocabSize;
        var ids = Enumerable.Range(0, prompt).Select(i => ((i * 7) + 3) % vocab).ToArray();
        using var session = new InferenceSession(model, prompt + steps);
        using var pool = new KvPagePool(model.Config, 4 * ((prompt + steps + KvPagePool.DefaultPageSize - 1) / KvPagePool.DefaultPageSize), DType.F32);
        var caches = Enumerable.Range(0, 4).Select(_ => new KvCache(pool, prompt + steps)).ToArray();
        var batch = new ForwardBatch(4, 4);
        using var workspace = new ForwardWorkspace();
        workspace.EnsureCapacity(model.Config, 4, 4);
        try
        {
            double bestPrefill = 0, bestDecode = double.MaxValue, bestBatch = double.MaxValue;
            var total = Stopwatch.StartNew();
            for (int run = 0; run < Math.Max(1, repeats) || (run < 30 && total.Elapsed.TotalSeconds < 0.5); run++)
            {
                cancellation.ThrowIfCancellationRequested();
                session.Reset();
                var watch = Stopwatch.StartNew();
                session.Prefill(ids, cancellation);
                bestPrefill = Math.Max(bestPrefill, prompt / Math.Max(watch.Elapsed.TotalSeconds, 1e-9));

                // One sequence: half the steps.
                int next = Sampler.ArgMax(session.Logits);
                int single = Math.Max(1, steps / 2);
                watch.Restart();
                for (int i = 0; i < single; i++)
                {
                    session.Decode(next);
                    next = Sampler.ArgMax(session.Logits);
                }

                bestDecode = Math.Min(bestDecode, watch.Elapsed.TotalMilliseconds / single);

                // Four sequences (their prompts read untimed): the other half, one token each per step, in one batched step.
                var tokens = new int[caches.Length];
                for (int s = 0; s < caches.Length; s++)
                {
                    caches[s].Clear();
                    model.Forward(ids, caches[s], workspace.Logits, allLogits: false);
                    tokens[s] = Sampler.ArgMax(new ReadOnlySpan<float>(workspace.Logits, vocab));
                }

                int batched = Math.Max(1, steps - single);
                watch.Restart();
                for (int i = 0; i < batched; i++)
                {
                    batch.Clear();
                    for (int s = 0; s < caches.Length; s++)
                    {
                        if (caches[s].Length < prompt + steps)
                        {
                            batch.Add(caches[s], new ReadOnlySpan<int>(in tokens[s]), LogitRows.Last);
                        }
                    }

                    model.Forward(batch, workspace);
                    for (int s = 0; s < batch.SegmentCount; s++)
                    {
                        tokens[s] = Sampler.ArgMax(new ReadOnlySpan<float>(workspace.Logits + ((long)s * vocab), vocab));
                    }
                }

                bestBatch = Math.Min(bestBatch, watch.Elapsed.TotalMilliseconds / batched);
            }

            return new Latency(bestPrefill, bestDecode, bestBatch);
        }
        finally
        {
            foreach (var cache in caches)
            {
                cache.Dispose();
            }
        }
    }
}
