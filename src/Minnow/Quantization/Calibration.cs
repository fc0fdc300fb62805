using Minnow.Inference;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Quantization;

/// <summary>Calibration sequences (token ids) and the pass that turns them into <see cref="ActivationStatistics"/>.</summary>
public static class Calibration
{
    /// <summary>
    /// Consecutive sequences of <paramref name="length"/> tokens cut from the start of a token stream, at most
    /// <paramref name="maxTokens"/> tokens in all. With a BOS id, each sequence starts with it (then length − 1 text tokens).
    /// </summary>
    public static List<int[]> FromTokens(IReadOnlyList<int> tokens, int length, long maxTokens, int? bos)
    {
        if (length < 2)
        {
            throw new MinnowException($"calibration sequences need at least 2 tokens (got {length}).");
        }

        var sequences = new List<int[]>();
        int start = 0, body = bos is null ? length : length - 1;
        long used = 0;
        while (start + body <= tokens.Count && used + length <= maxTokens)
        {
            var seq = new int[length];
            int offset = 0;
            if (bos is int b)
            {
                seq[0] = b;
                offset = 1;
            }

            for (int i = 0; i < body; i++)
            {
                seq[offset + i] = tokens[start + i];
            }

            sequences.Add(seq);
            start += body;
            used += length;
        }

        return sequences;
    }

    /// <summary>How many tokens of a stream <see cref="FromTokens"/> consumes (where held-out text can start).</summary>
    public static int TokensConsumed(IReadOnlyList<int[]> sequences, int? bos) => sequences.Sum(s => s.Length - (bos is null ? 0 : 1));

    /// <summary>
    /// Sequences sampled from the model itself (for models without a tokenizer): each starts with
    /// <paramref name="bos"/> and continues with tokens drawn at temperature 1 from the full distribution.
    /// </summary>
    public static List<int[]> Sample(TransformerModel model, int count, int length, int bos, ulong seed, CancellationToken cancellation = default)
    {
        var options = new SamplingOptions { Temperature = 1, TopK = 0, TopP = 1, MinP = 0, RepetitionPenalty = 1, Seed = seed };
        var sampler = new Sampler(options, model.Config.VocabSize);
        using var session = new InferenceSession(model, length, batchSize: 1);
        var result = new List<int[]>(count);
        for (int s = 0; s < count; s++)
        {
            cancellation.ThrowIfCancellationRequested();
            var seq = new int[length];
            seq[0] = bos;
            session.Reset();
            session.Prefill(seq.AsSpan(0, 1));
            for (int i = 1; i < length; i++)
            {
                seq[i] = sampler.Sample(session.Logits, seq.AsSpan(0, i));
                if (i + 1 < length)
                {
                    session.Decode(seq[i]);
                }
            }

            result.Add(seq);
        }

        return result;
    }

    /// <summary>Runs the sequences through the model once and gathers the statistics of every linear layer's input.</summary>
    public static unsafe ActivationStatistics Collect(TransformerModel model, IReadOnlyList<int[]> sequences, IProgress<(int Done, int Total)>? progress = null,
        CancellationToken cancellation = default)
    {
        if (sequences.Count == 0)
        {
            throw new MinnowException("no calibration sequences (the calibration text is too short).");
        }

        var statistics = new ActivationStatistics(LayerPlan.For(model.Config, model.Weights.Has));
        int longest = sequences.Max(s => s.Length);
        try
        {
            using var cache = new KvCache(model.Config, longest);
            using var logits = NativeBuffer.Floats(model.Config.VocabSize);
            for (int i = 0; i < sequences.Count; i++)
            {
                cancellation.ThrowIfCancellationRequested();
                cache.Clear();
                model.Forward(sequences[i], cache, logits.FloatPointer, allLogits: false, observer: statistics);
                progress?.Report((i + 1, sequences.Count));
            }
        }
        catch
        {
            statistics.Dispose();
            throw;
        }

        return statistics;
    }
}
