using System.Diagnostics;
using Minnow.Inference;
using Minnow.Models;

namespace Minnow.Pruning;

/// <summary>Prefill and decode speed of a model in tokens per second.</summary>
public sealed record SpeedResult(double PrefillTokensPerSecond, double DecodeTokensPerSecond, int PrefillTokens, int DecodeTokens);

/// <summary>
/// A short speed measurement: a prompt of up to 128 tokens fed in batches (prefill), then up to 64 tokens fed
/// one at a time (decode), repeated; the best run counts (the least disturbed by other work on the machine).
/// </summary>
public static class SpeedProbe
{
    public static SpeedResult Measure(TransformerModel model, int repeats = 3, CancellationToken cancellation = default)
    {
        int max = model.Config.MaxPositions;
        int prefill = Math.Max(1, Math.Min(128, max / 2));
        int decode = Math.Max(1, Math.Min(64, max - prefill));
        int vocab = model.Config.VocabSize;
        var prompt = Enumerable.Range(0, prefill).Select(i => ((i * 7) + 3) % vocab).ToArray();
        using var session = new InferenceSession(model, prefill + decode);
        double bestPrefill = 0, bestDecode = 0;
        for (int run = 0; run < Math.Max(1, repeats); run++)
        {
            cancellation.ThrowIfCancellationRequested();
            session.Reset();
            var watch = Stopwatch.StartNew();
            session.Prefill(prompt, cancellation);
            double prefillSeconds = watch.Elapsed.TotalSeconds;
            int token = Sampler.ArgMax(session.Logits);
            watch.Restart();
            for (int i = 0; i < decode; i++)
            {
                session.Decode(token);
                token = Sampler.ArgMax(session.Logits);
            }

            double decodeSeconds = watch.Elapsed.TotalSeconds;
            bestPrefill = Math.Max(bestPrefill, prefill / Math.Max(prefillSeconds, 1e-9));
            bestDecode = Math.Max(bestDecode, decode / Math.Max(decodeSeconds, 1e-9));
        }

        return new SpeedResult(bestPrefill, bestDecode, prefill, decode);
    }
}
