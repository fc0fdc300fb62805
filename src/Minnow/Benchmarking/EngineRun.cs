using System.Diagnostics;
using Minnow.Inference;
using Minnow.Models;

namespace Minnow.Benchmarking;

/// <summary>One measured prefill + decode run of an engine.</summary>
public sealed record EngineRun
{
    public required int PromptTokens { get; init; }

    public required int DecodedTokens { get; init; }

    public required double PrefillSeconds { get; init; }

    public required double DecodeSeconds { get; init; }

    /// <summary>From the start of the prefill until the first token is chosen.</summary>
    public required double TimeToFirstTokenMs { get; init; }

    public double PrefillTokensPerSecond => PromptTokens / PrefillSeconds;

    public double DecodeTokensPerSecond => DecodedTokens / DecodeSeconds;
}

/// <summary>
/// Runs Minnow the way the benchmark measures every engine: from an empty cache, the prompt in one batch (logits of
/// its last token), the first token chosen (argmax), then the given ids fed one at a time, each followed by an
/// argmax over the logits as a greedy generator would do.
/// </summary>
public static class MinnowEngine
{
    public static EngineRun Run(InferenceSession session, ReadOnlySpan<int> prompt, ReadOnlySpan<int> decode, CancellationToken cancellation = default)
    {
        if (prompt.IsEmpty)
        {
            throw new MinnowException("the prompt is empty.");
        }

        session.Reset();
        var watch = Stopwatch.StartNew();
        session.Prefill(prompt, cancellation);
        int first = ArgMax(session.Logits);
        double prefill = watch.Elapsed.TotalSeconds;
        double ttft = watch.Elapsed.TotalMilliseconds;
        watch.Restart();
        int sink = first;
        foreach (int id in decode)
        {
            cancellation.ThrowIfCancellationRequested();
            session.Decode(id);
            sink ^= ArgMax(session.Logits);
        }

        double decodeSeconds = watch.Elapsed.TotalSeconds;
        GC.KeepAlive(sink);
        return new EngineRun
        {
            PromptTokens = prompt.Length,
            DecodedTokens = decode.Length,
            PrefillSeconds = prefill,
            DecodeSeconds = decodeSeconds,
            TimeToFirstTokenMs = ttft,
        };
    }

    /// <summary>
    /// The logits of every position of <paramref name="ids"/> from an empty cache, [ids.Length, vocab] row-major.
    /// </summary>
    public static float[] AllLogits(TransformerModel model, ReadOnlySpan<int> ids, int batchSize = 64, CancellationToken cancellation = default)
    {
        int vocab = model.Config.VocabSize;
        var logits = new float[(long)ids.Length * vocab];
        using var session = new InferenceSession(model, Math.Max(1, ids.Length), Math.Min(batchSize, Math.Max(1, ids.Length)));
        session.Evaluate(ids, (start, count, rows) => rows.CopyTo(logits.AsSpan(start * vocab, count * vocab)), cancellation);
        return logits;
    }

    public static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }

        return best;
    }

    /// <summary>
    /// Bytes of weights a decode step reads: every matrix the token passes through, i.e. all weights except the
    /// embedding table (one row is read) and learned positions — but a tied embedding is read whole as the head.
    /// </summary>
    public static long DecodeWeightBytes(TransformerModel model)
    {
        var c = model.Config;
        long total = 0;
        foreach (var (name, tensor) in model.Weights.All)
        {
            bool embedding = name is "model.embed_tokens.weight" or "gpt_neox.embed_in.weight" or "wte.weight" or "transformer.wte.weight";
            bool positions = name is "wpe.weight" or "transformer.wpe.weight";
            if (positions || (embedding && !c.TieEmbeddings))
            {
                continue;
            }

            total += tensor.ByteSize;
        }

        return total;
    }
}

/// <summary>How two engines' logits over the same ids compare.</summary>
public sealed record LogitAgreement
{
    /// <summary>Positions compared.</summary>
    public required int Positions { get; init; }

    /// <summary>Fraction of positions where both engines' argmax is the same.</summary>
    public required double ArgmaxAgreement { get; init; }

    /// <summary>exp(mean NLL of the next id) from the first engine's logits, over positions 0..n-2.</summary>
    public required double PerplexityA { get; init; }

    public required double PerplexityB { get; init; }

    /// <summary>|pplA − pplB| / pplB.</summary>
    public double PerplexityRelativeDifference => Math.Abs(PerplexityA - PerplexityB) / PerplexityB;

    /// <summary>Largest |a − b| over all logits.</summary>
    public required double MaxAbsDifference { get; init; }

    /// <summary>
    /// Positions where the first engine's top two logits are more than <c>clearGap</c> apart. Randomly initialised
    /// models have nearly flat logits (near-ties everywhere), so their raw argmax agreement says little; this one does.
    /// </summary>
    public required int ClearPositions { get; init; }

    /// <summary>Fraction of <see cref="ClearPositions"/> where both engines' argmax is the same (1 when there are none).</summary>
    public required double ClearArgmaxAgreement { get; init; }

    public static LogitAgreement Compare(ReadOnlySpan<float> a, ReadOnlySpan<float> b, int vocab, ReadOnlySpan<int> ids, float clearGap = 0.1f)
    {
        if (a.Length != b.Length || a.Length != (long)ids.Length * vocab)
        {
            throw new ArgumentException($"logits of {a.Length} and {b.Length} values do not match {ids.Length} positions × {vocab}.");
        }

        int same = 0, clear = 0, clearSame = 0;
        double nllA = 0, nllB = 0, maxDiff = 0;
        for (int p = 0; p < ids.Length; p++)
        {
            var rowA = a.Slice(p * vocab, vocab);
            var rowB = b.Slice(p * vocab, vocab);
            bool agree = MinnowEngine.ArgMax(rowA) == MinnowEngine.ArgMax(rowB);
            same += agree ? 1 : 0;
            if (TopGap(rowA) > clearGap)
            {
                clear++;
                clearSame += agree ? 1 : 0;
            }

            for (int v = 0; v < vocab; v++)
            {
                maxDiff = Math.Max(maxDiff, Math.Abs(rowA[v] - rowB[v]));
            }

            if (p < ids.Length - 1)
            {
                nllA += PerplexityEvaluator.NegativeLogLikelihood(rowA, ids[p + 1]);
                nllB += PerplexityEvaluator.NegativeLogLikelihood(rowB, ids[p + 1]);
            }
        }

        int scored = Math.Max(1, ids.Length - 1);
        return new LogitAgreement
        {
            Positions = ids.Length,
            ArgmaxAgreement = ids.Length == 0 ? 1 : (double)same / ids.Length,
            PerplexityA = Math.Exp(nllA / scored),
            PerplexityB = Math.Exp(nllB / scored),
            MaxAbsDifference = maxDiff,
            ClearPositions = clear,
            ClearArgmaxAgreement = clear == 0 ? 1 : (double)clearSame / clear,
        };
    }

    /// <summary>The difference between the largest and the second largest value.</summary>
    public static float TopGap(ReadOnlySpan<float> row)
    {
        float first = float.NegativeInfinity, second = float.NegativeInfinity;
        foreach (float v in row)
        {
            if (v > first)
            {
                second = first;
                first = v;
            }
            else if (v > second)
            {
                second = v;
            }
        }

        return first - second;
    }
}

public static class Statistics
{
    /// <summary>The median (mean of the two middle values for an even count); NaN for none.</summary>
    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Where(v => !double.IsNaN(v)).OrderBy(v => v).ToArray();
        if (sorted.Length == 0)
        {
            return double.NaN;
        }

        int mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }
}
