using Minnow.Formats.Gguf;
using Minnow.Inference;
using Minnow.Models;
using Minnow.Tokenizers;

namespace Minnow.Benchmarking;

/// <summary>The token ids a benchmark feeds: deterministic, the same for every engine, and never special tokens.</summary>
public static class BenchmarkInputs
{
    /// <summary>
    /// <paramref name="count"/> pseudo-random ids in [0, <paramref name="vocabSize"/>) from <paramref name="seed"/>,
    /// none of them in <paramref name="excluded"/>. The same arguments always give the same ids.
    /// </summary>
    public static int[] PseudoRandomIds(int count, int vocabSize, IReadOnlySet<int> excluded, ulong seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (vocabSize <= excluded.Count(id => id >= 0 && id < vocabSize))
        {
            throw new MinnowException($"no ordinary token ids to choose from (vocabulary of {vocabSize}, {excluded.Count} special).");
        }

        var ids = new int[count];
        ulong state = seed ^ 0x6A09E667F3BCC909UL;
        for (int i = 0; i < count;)
        {
            state += 0x9E3779B97F4A7C15UL;
            ulong z = state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            int id = (int)(z % (ulong)vocabSize);
            if (!excluded.Contains(id))
            {
                ids[i++] = id;
            }
        }

        return ids;
    }

    /// <summary>
    /// The ids a benchmark must not use: the tokenizer's special tokens (control, unknown, unused) when there is a
    /// tokenizer, the GGUF vocabulary's non-normal tokens for a GGUF file, and the config's BOS/EOS ids.
    /// </summary>
    public static HashSet<int> SpecialIds(ModelConfig config, ITextTokenizer? tokenizer, GgufMetadata? gguf = null)
    {
        var ids = new HashSet<int>();
        if (config.BosTokenId is int bos)
        {
            ids.Add(bos);
        }

        if (config.EosTokenId is int eos)
        {
            ids.Add(eos);
        }

        if (tokenizer != null)
        {
            for (int i = 0; i < Math.Min(tokenizer.VocabSize, config.VocabSize); i++)
            {
                if (tokenizer.IsSpecial(i))
                {
                    ids.Add(i);
                }
            }

            foreach (int id in tokenizer.EosIds)
            {
                ids.Add(id);
            }
        }

        if (gguf != null && gguf.TryGetArray<int>("tokenizer.ggml.token_type", out int[]? types))
        {
            for (int i = 0; i < types.Length; i++)
            {
                if (types[i] != (int)TokenKind.Normal && types[i] != (int)TokenKind.Byte)
                {
                    ids.Add(i);
                }
            }
        }

        return ids;
    }

    /// <summary>
    /// A sequence drawn from the model itself (softmax sampling at temperature 1, seeded), starting with
    /// <paramref name="first"/>: text the model finds plausible, for perplexity checks on models without a tokenizer.
    /// </summary>
    public static int[] SampleFromModel(TransformerModel model, int length, int first, ulong seed, IReadOnlySet<int>? excluded = null,
        CancellationToken cancellation = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 1);
        using var session = new InferenceSession(model, length, batchSize: 1);
        return Sample(length, first, seed, excluded, token =>
        {
            cancellation.ThrowIfCancellationRequested();
            session.Decode(token);
            return session.Logits.ToArray();
        });
    }

    /// <summary>
    /// Samples a sequence of <paramref name="length"/> ids starting with <paramref name="first"/> from any engine:
    /// <paramref name="next"/> feeds one id and returns the logits that follow it.
    /// </summary>
    public static int[] Sample(int length, int first, ulong seed, IReadOnlySet<int>? excluded, Func<int, float[]> next)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 1);
        var ids = new int[length];
        ids[0] = first;
        var random = new Random(unchecked((int)(seed ^ (seed >> 32))));
        double[]? probabilities = null;
        for (int i = 1; i < length; i++)
        {
            float[] logits = next(ids[i - 1]);
            probabilities ??= new double[logits.Length];
            ids[i] = SampleToken(logits, random, excluded, probabilities);
        }

        return ids;
    }

    /// <summary>Draws one id from softmax(<paramref name="logits"/>), never one in <paramref name="excluded"/>.</summary>
    public static int SampleToken(ReadOnlySpan<float> logits, Random random, IReadOnlySet<int>? excluded, double[] scratch)
    {
        float max = float.NegativeInfinity;
        foreach (float v in logits)
        {
            max = MathF.Max(max, v);
        }

        double sum = 0;
        for (int v = 0; v < logits.Length; v++)
        {
            scratch[v] = excluded?.Contains(v) == true ? 0 : Math.Exp(logits[v] - max);
            sum += scratch[v];
        }

        double target = random.NextDouble() * sum;
        int chosen = -1;
        for (int v = 0; v < logits.Length; v++)
        {
            if (scratch[v] <= 0)
            {
                continue;
            }

            chosen = v;
            target -= scratch[v];
            if (target <= 0)
            {
                break;
            }
        }

        return chosen >= 0 ? chosen : MinnowEngine.ArgMax(logits);
    }
}
