using System.Diagnostics;
using Minnow.Models;

namespace Minnow.Inference;

public sealed record PerplexityResult
{
    public required double Perplexity { get; init; }

    /// <summary>Standard error of the perplexity (llama.cpp's "±").</summary>
    public required double StandardError { get; init; }

    public required double MeanNll { get; init; }

    public required int TokensScored { get; init; }

    public required int Context { get; init; }

    public required int Chunks { get; init; }

    public required double TokensPerSecond { get; init; }

    public required double Seconds { get; init; }
}

/// <summary>
/// Perplexity as llama.cpp's perplexity tool computes it: the token stream is cut into non-overlapping windows
/// of <c>ctx</c> tokens; each window starts afresh (its first token replaced by BOS when the model uses one) and
/// only its second half is scored, so every scored token sees at least ctx/2 tokens of context.
/// </summary>
public static class PerplexityEvaluator
{
    public static PerplexityResult Evaluate(TransformerModel model, IReadOnlyList<int> tokens, int ctx, int? maxChunks = null,
        int? bosToken = null, IProgress<(int Done, int Total)>? progress = null, CancellationToken cancellation = default, LoraAdapter? adapter = null)
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

        int vocab = model.Config.VocabSize;
        int first = ctx / 2;
        double nll = 0, nll2 = 0;
        int scored = 0;
        var window = new int[ctx];
        var watch = Stopwatch.StartNew();
        using var session = new InferenceSession(model, ctx, batchSize: Math.Min(ctx, 64), adapter: adapter);
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

            session.Reset();
            session.Evaluate(window, (start, count, logits) =>
            {
                for (int r = 0; r < count; r++)
                {
                    int j = start + r;
                    if (j < first || j >= ctx - 1)
                    {
                        continue;
                    }

                    double value = NegativeLogLikelihood(logits.Slice(r * vocab, vocab), window[j + 1]);
                    nll += value;
                    nll2 += value * value;
                    scored++;
                }
            }, cancellation);
            progress?.Report((c + 1, chunks));
        }

        watch.Stop();
        double mean = nll / scored;
        double variance = Math.Max(0, (nll2 / scored) - (mean * mean));
        double ppl = Math.Exp(mean);
        double stderr = scored > 1 ? ppl * Math.Sqrt(variance / (scored - 1)) : 0;
        return new PerplexityResult
        {
            Perplexity = ppl,
            StandardError = stderr,
            MeanNll = mean,
            TokensScored = scored,
            Context = ctx,
            Chunks = chunks,
            Seconds = watch.Elapsed.TotalSeconds,
            TokensPerSecond = chunks * ctx / watch.Elapsed.TotalSeconds,
        };
    }

    /// <summary>−log softmax(logits)[target], computed stably in double.</summary>
    public static double NegativeLogLikelihood(ReadOnlySpan<float> logits, int target)
    {
        float max = float.NegativeInfinity;
        foreach (float v in logits)
        {
            max = MathF.Max(max, v);
        }

        double sum = 0;
        foreach (float v in logits)
        {
            sum += Math.Exp(v - max);
        }

        return Math.Log(sum) + max - logits[target];
    }
}
