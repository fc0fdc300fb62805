using Minnow.Loading;
using Minnow.Models;

namespace Minnow.Tests.Models;

/// <summary>
/// Every golden checkpoint in ../shared/reference/golden must reproduce the logits, argmax, mean NLL and greedy
/// continuation that an independent PyTorch implementation of transformers' code recorded.
/// </summary>
public unsafe class GoldenModelTests
{
    private static float[] AllLogits(TransformerModel model, int[] ids)
    {
        using var cache = new KvCache(model.Config, ids.Length);
        var logits = new float[ids.Length * model.Config.VocabSize];
        fixed (float* p = logits)
        {
            model.Forward(ids, cache, p, allLogits: true);
        }

        return logits;
    }

    private static double MeanNll(float[] logits, int[] ids, int vocab)
    {
        double total = 0;
        for (int t = 0; t < ids.Length - 1; t++)
        {
            var row = logits.AsSpan(t * vocab, vocab);
            float max = float.NegativeInfinity;
            foreach (float v in row)
            {
                max = MathF.Max(max, v);
            }

            double sum = 0;
            foreach (float v in row)
            {
                sum += Math.Exp(v - max);
            }

            total += Math.Log(sum) + max - row[ids[t + 1]];
        }

        return total / (ids.Length - 1);
    }

    private static int ArgMax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++)
        {
            if (row[i] > row[best])
            {
                best = i;
            }
        }

        return best;
    }

    [Theory]
    [MemberData(nameof(GoldenReference.NamesAndDtypes), MemberType = typeof(GoldenReference))]
    public void Golden_ReproducesReferenceLogitsArgmaxAndNll(string name, string dtype)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(golden.WeightsFile(dtype));
        int vocab = model.Config.VocabSize;
        var logits = AllLogits(model, golden.InputIds);
        var reference = golden.For(dtype);

        double nll = MeanNll(logits, golden.InputIds, vocab);
        double expectedNll = reference.GetProperty("mean_nll_next_token").GetDouble();
        Assert.True(Math.Abs(nll - expectedNll) <= 1e-5 * Math.Abs(expectedNll), $"mean NLL {nll} vs reference {expectedNll}");

        var argmax = GoldenReference.Ints(reference.GetProperty("argmax"));
        var gaps = GoldenReference.Floats(reference.GetProperty("top1_top2_gap"));
        for (int t = 0; t < golden.InputIds.Length; t++)
        {
            if (gaps[t] > 1e-3)
            {
                Assert.Equal(argmax[t], ArgMax(logits.AsSpan(t * vocab, vocab)));
            }
        }

        if (reference.TryGetProperty("last4_logits", out var last4))
        {
            var positions = GoldenReference.Ints(reference.GetProperty("last4_positions"));
            int k = 0;
            foreach (var row in last4.EnumerateArray())
            {
                var expected = GoldenReference.Floats(row);
                float maxAbs = expected.Max(MathF.Abs);
                float tolerance = 1e-4f * MathF.Max(1, maxAbs);
                var actual = logits.AsSpan(positions[k] * vocab, vocab);
                for (int i = 0; i < vocab; i++)
                {
                    Assert.True(MathF.Abs(actual[i] - expected[i]) <= tolerance, $"position {positions[k]} logit {i}: {actual[i]} vs {expected[i]}");
                }

                k++;
            }
        }
    }

    [Theory]
    [MemberData(nameof(GoldenReference.NamesAndDtypes), MemberType = typeof(GoldenReference))]
    public void Golden_GreedyContinuationWithKvCacheMatchesReference(string name, string dtype)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(golden.WeightsFile(dtype));
        var reference = golden.For(dtype);
        var prompt = GoldenReference.Ints(reference.GetProperty("greedy_prompt"));
        var expected = GoldenReference.Ints(reference.GetProperty("greedy_16"));
        int vocab = model.Config.VocabSize;
        using var cache = new KvCache(model.Config, prompt.Length + expected.Length);
        var logits = new float[vocab];
        var produced = new List<int>();
        fixed (float* p = logits)
        {
            model.Forward(prompt, cache, p, allLogits: false);
            for (int i = 0; i < expected.Length; i++)
            {
                int next = ArgMax(logits);
                produced.Add(next);
                model.Forward([next], cache, p, allLogits: false);
            }
        }

        Assert.Equal(expected, produced);
    }

    [Theory]
    [MemberData(nameof(GoldenReference.Names), MemberType = typeof(GoldenReference))]
    public void Golden_DecodingWithKvCacheEqualsFullRecompute(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        int vocab = model.Config.VocabSize;
        var full = AllLogits(model, golden.InputIds);
        using var cache = new KvCache(model.Config, golden.InputIds.Length);
        var step = new float[vocab];
        fixed (float* p = step)
        {
            model.Forward(golden.InputIds.AsSpan(0, 5), cache, p, allLogits: false);
            for (int t = 5; t < golden.InputIds.Length; t++)
            {
                model.Forward(golden.InputIds.AsSpan(t, 1), cache, p, allLogits: false);
                var expected = full.AsSpan(t * vocab, vocab);
                float maxAbs = 0;
                foreach (float v in expected)
                {
                    maxAbs = MathF.Max(maxAbs, MathF.Abs(v));
                }

                for (int i = 0; i < vocab; i++)
                {
                    Assert.True(MathF.Abs(step[i] - expected[i]) <= 1e-5f * MathF.Max(1, maxAbs), $"position {t} logit {i}");
                }
            }
        }
    }
}
