using System.Diagnostics;
using Minnow.Inference;

namespace Minnow.OnnxRuntime;

/// <summary>
/// Perplexity of an exported model in ONNX Runtime, by the same windows and scoring as
/// <see cref="PerplexityEvaluator"/> (llama.cpp's method): non-overlapping windows of ctx tokens, each started afresh
/// (first token replaced by BOS when given), the second half of each scored.
/// </summary>
public static class OrtPerplexity
{
    public static PerplexityResult Evaluate(OrtDecoder decoder, IReadOnlyList<int> tokens, int ctx, int? maxChunks = null, int? bosToken = null,
        IProgress<(int Done, int Total)>? progress = null, CancellationToken cancellation = default)
    {
        if (ctx < 4)
        {
            throw new MinnowException($"--ctx must be at least 4 (got {ctx}).");
        }

        int chunks = tokens.Count / ctx;
        if (maxChunks is > 0)
        {
            chunks = Math.Min(chunks, maxChunks.Value);
        }

        if (chunks == 0)
        {
            throw new MinnowException($"the text has {tokens.Count} tokens, fewer than one window of --ctx {ctx}; use a longer text or a smaller --ctx.");
        }

        int vocab = decoder.VocabSize, first = ctx / 2, scored = 0;
        double nll = 0, nll2 = 0;
        var window = new int[ctx];
        var watch = Stopwatch.StartNew();
        for (int c = 0; c < chunks; c++)
        {
            cancellation.ThrowIfCancellationRequested();
            for (int i = 0; i < ctx; i++)
            {
                window[i] = tokens[(c * ctx) + i];
            }

            if (bosToken is int bos)
            {
                window[0] = bos;
            }

            decoder.Reset();
            var logits = decoder.Forward(window, allLogits: true);
            for (int j = first; j < ctx - 1; j++)
            {
                double value = PerplexityEvaluator.NegativeLogLikelihood(logits.AsSpan(j * vocab, vocab), window[j + 1]);
                nll += value;
                nll2 += value * value;
                scored++;
            }

            progress?.Report((c + 1, chunks));
        }

        watch.Stop();
        decoder.Reset();
        double mean = nll / scored;
        double variance = Math.Max(0, (nll2 / scored) - (mean * mean));
        double ppl = Math.Exp(mean);
        return new PerplexityResult
        {
            Perplexity = ppl,
            StandardError = scored > 1 ? ppl * Math.Sqrt(variance / (scored - 1)) : 0,
            MeanNll = mean,
            TokensScored = scored,
            Context = ctx,
            Chunks = chunks,
            Seconds = watch.Elapsed.TotalSeconds,
            TokensPerSecond = chunks * ctx / watch.Elapsed.TotalSeconds,
        };
    }
}
