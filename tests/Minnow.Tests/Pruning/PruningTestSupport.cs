using Minnow.Inference;
using Minnow.Models;

namespace Minnow.Tests.Pruning;

/// <summary>Helpers for pruning tests: sampled token sequences, logits, mean NLL.</summary>
internal static unsafe class PruningTestSupport
{
    public static string Golden(string name) => SharedData.Path("reference", "golden", name);

    /// <summary>Sequences the model itself samples (temperature 1, seeded), each starting at BOS (id 1).</summary>
    public static List<int[]> Sample(TransformerModel model, int count, int length, ulong seed)
    {
        var result = new List<int[]>();
        using var session = new InferenceSession(model, length);
        for (int s = 0; s < count; s++)
        {
            var sampler = new Sampler(new SamplingOptions { Temperature = 1, TopK = 0, TopP = 1, MinP = 0, Seed = seed + (ulong)s }, model.Config.VocabSize);
            var ids = new List<int> { model.Config.BosTokenId ?? 1 };
            session.Reset();
            session.Prefill(ids.ToArray());
            while (ids.Count < length)
            {
                int next = sampler.Sample(session.Logits, ids.ToArray());
                ids.Add(next);
                if (ids.Count < length)
                {
                    session.Decode(next);
                }
            }

            result.Add([.. ids]);
        }

        return result;
    }

    public static float[] Logits(TransformerModel model, int[] ids)
    {
        using var cache = new KvCache(model.Config, ids.Length);
        var logits = new float[ids.Length * model.Config.VocabSize];
        fixed (float* p = logits)
        {
            model.Forward(ids, cache, p, allLogits: true);
        }

        return logits;
    }

    /// <summary>Mean next-token NLL over all positions of all sequences.</summary>
    public static double MeanNll(TransformerModel model, IReadOnlyList<int[]> sequences)
    {
        int vocab = model.Config.VocabSize;
        double total = 0;
        int count = 0;
        foreach (var ids in sequences)
        {
            var logits = Logits(model, ids);
            for (int t = 0; t + 1 < ids.Length; t++)
            {
                total += PerplexityEvaluator.NegativeLogLikelihood(logits.AsSpan(t * vocab, vocab), ids[t + 1]);
                count++;
            }
        }

        return total / count;
    }

    public static void AssertClose(float[] expected, float[] actual, float relative = 1e-4f)
    {
        Assert.Equal(expected.Length, actual.Length);
        float scale = MathF.Max(1, expected.Max(MathF.Abs));
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(MathF.Abs(expected[i] - actual[i]) <= relative * scale, $"logit {i}: {actual[i]} vs {expected[i]}");
        }
    }
}
