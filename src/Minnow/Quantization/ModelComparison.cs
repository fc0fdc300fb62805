using System.Diagnostics;
using Minnow.Benchmarking;
using Minnow.Inference;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Quantization;

/// <summary>
/// A model measured against a reference on the same text, as llama.cpp's <c>perplexity --kl-divergence</c>
/// reports it: both perplexities, the mean KL divergence KL(P_ref ‖ P_model) of the next-token distributions
/// and how often both put the same token first, with standard errors.
/// </summary>
public sealed record ComparisonResult
{
    public required double ReferencePerplexity { get; init; }

    public required double ReferenceStandardError { get; init; }

    public required double Perplexity { get; init; }

    public required double StandardError { get; init; }

    public required double MeanKl { get; init; }

    public required double KlStandardError { get; init; }

    /// <summary>Fraction of positions where both models' most likely next token is the same ("same top p").</summary>
    public required double Top1Agreement { get; init; }

    public required double Top1StandardError { get; init; }

    public required int TokensScored { get; init; }

    public required int Context { get; init; }

    public required int Chunks { get; init; }

    public required double Seconds { get; init; }
}

public static unsafe class ModelComparison
{
    /// <summary>
    /// Runs both models over the same windows as <see cref="PerplexityEvaluator"/> (ctx tokens each, BOS first
    /// when given, second half scored).
    /// </summary>
    public static ComparisonResult Compare(TransformerModel reference, TransformerModel model, IReadOnlyList<int> tokens, int ctx, int? maxChunks = null,
        int? bosToken = null, IProgress<(int Done, int Total)>? progress = null, CancellationToken cancellation = default, LoraAdapter? adapter = null)
    {
        if (reference.Config.VocabSize != model.Config.VocabSize)
        {
            throw new MinnowException($"the models have different vocabularies ({reference.Config.VocabSize} and {model.Config.VocabSize} tokens); KL divergence needs the same one.");
        }

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
        int batch = Math.Min(ctx, 64);
        int first = ctx / 2;
        var watch = Stopwatch.StartNew();
        using var cacheA = new KvCache(reference.Config, ctx);
        using var cacheB = new KvCache(model.Config, ctx);
        using var logitsA = NativeBuffer.Floats((long)batch * vocab);
        using var logitsB = NativeBuffer.Floats((long)batch * vocab);
        var logA = new double[vocab];
        var logB = new double[vocab];
        var window = new int[ctx];
        double nllA = 0, nllA2 = 0, nllB = 0, nllB2 = 0, kl = 0, kl2 = 0;
        int same = 0, scored = 0;
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

            cacheA.Clear();
            cacheB.Clear();
            for (int start = 0; start < ctx; start += batch)
            {
                int count = Math.Min(batch, ctx - start);
                var slice = window.AsSpan(start, count);
                reference.Forward(slice, cacheA, logitsA.FloatPointer, allLogits: true);
                model.Forward(slice, cacheB, logitsB.FloatPointer, allLogits: true, adapter);
                for (int r = 0; r < count; r++)
                {
                    int j = start + r;
                    if (j < first || j >= ctx - 1)
                    {
                        continue;
                    }

                    int argA = LogSoftmax(new ReadOnlySpan<float>(logitsA.FloatPointer + ((long)r * vocab), vocab), logA);
                    int argB = LogSoftmax(new ReadOnlySpan<float>(logitsB.FloatPointer + ((long)r * vocab), vocab), logB);
                    int target = window[j + 1];
                    double a = -logA[target], b = -logB[target];
                    nllA += a;
                    nllA2 += a * a;
                    nllB += b;
                    nllB2 += b * b;
                    double d = 0;
                    for (int v = 0; v < vocab; v++)
                    {
                        d += Math.Exp(logA[v]) * (logA[v] - logB[v]);
                    }

                    d = Math.Max(0, d);
                    kl += d;
                    kl2 += d * d;
                    same += argA == argB ? 1 : 0;
                    scored++;
                }
            }

            progress?.Report((c + 1, chunks));
        }

        var (pplA, errA) = Perplexity(nllA, nllA2, scored);
        var (pplB, errB) = Perplexity(nllB, nllB2, scored);
        double meanKl = kl / scored;
        double agreement = (double)same / scored;
        return new ComparisonResult
        {
            ReferencePerplexity = pplA,
            ReferenceStandardError = errA,
            Perplexity = pplB,
            StandardError = errB,
            MeanKl = meanKl,
            KlStandardError = scored > 1 ? Math.Sqrt(Math.Max(0, (kl2 / scored) - (meanKl * meanKl)) / (scored - 1)) : 0,
            Top1Agreement = agreement,
            Top1StandardError = scored > 1 ? Math.Sqrt(agreement * (1 - agreement) / (scored - 1)) : 0,
            TokensScored = scored,
            Context = ctx,
            Chunks = chunks,
            Seconds = watch.Elapsed.TotalSeconds,
        };
    }

    /// <summary>
    /// Decode speed at batch 1: the quick look every command takes (<see cref="EngineSpeed.Quick"/>), after a warm-up
    /// so the figure is not that of code the JIT has not optimized yet; its conditions come with it.
    /// </summary>
    public static SpeedFigures DecodeSpeed(TransformerModel model, int threads) => EngineSpeed.Quick(model, threads).Batch1;

    private static (double Ppl, double StdErr) Perplexity(double sum, double sumSquares, int n)
    {
        double mean = sum / n;
        double variance = Math.Max(0, (sumSquares / n) - (mean * mean));
        double ppl = Math.Exp(mean);
        return (ppl, n > 1 ? ppl * Math.Sqrt(variance / (n - 1)) : 0);
    }

    /// <summary>log softmax in double into <paramref name="output"/>; returns the argmax.</summary>
    private static int LogSoftmax(ReadOnlySpan<float> logits, double[] output)
    {
        float max = float.NegativeInfinity;
        int arg = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            if (logits[i] > max)
            {
                max = logits[i];
                arg = i;
            }
        }

        double sum = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            sum += Math.Exp(logits[i] - max);
        }

        double log = Math.Log(sum) + max;
        for (int i = 0; i < logits.Length; i++)
        {
            output[i] = logits[i] - log;
        }

        return arg;
    }
}
