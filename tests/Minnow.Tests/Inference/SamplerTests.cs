using Minnow.Inference;

namespace Minnow.Tests.Inference;

public class SamplerTests
{
    private static float[] Logits(params float[] values) => values;

    [Fact]
    public void TemperatureZeroIsGreedy()
    {
        var sampler = new Sampler(SamplingOptions.Greedy, 5);
        Assert.Equal(3, sampler.Sample(Logits(0.1f, 2f, -1f, 2.5f, 0f), []));
    }

    [Fact]
    public void TopKOfOneIsGreedyAtAnyTemperature()
    {
        var sampler = new Sampler(new SamplingOptions { Temperature = 5, TopK = 1, TopP = 1, MinP = 0, Seed = 7 }, 5);
        for (int i = 0; i < 200; i++)
        {
            Assert.Equal(1, sampler.Sample(Logits(0.1f, 2f, -1f, 1.9f, 0f), []));
        }
    }

    [Fact]
    public void SameSeedGivesTheSameSequence()
    {
        var options = new SamplingOptions { Temperature = 1, TopK = 0, TopP = 1, MinP = 0, Seed = 42 };
        var a = new Sampler(options, 8);
        var b = new Sampler(options, 8);
        var logits = Logits(0, 0.5f, 1, 0.2f, -0.3f, 0.9f, 0.1f, 0.4f);
        var first = Enumerable.Range(0, 100).Select(_ => a.Sample((float[])logits.Clone(), [])).ToArray();
        var second = Enumerable.Range(0, 100).Select(_ => b.Sample((float[])logits.Clone(), [])).ToArray();
        Assert.Equal(first, second);
        Assert.True(first.Distinct().Count() > 3, "sampling at temperature 1 should visit several tokens");
    }

    [Fact]
    public void UnfilteredSamplingFollowsTheSoftmaxDistribution()
    {
        var logits = Logits(1f, 0f, -1f, 0.5f);
        var sampler = new Sampler(new SamplingOptions { Temperature = 1, TopK = 0, TopP = 1, MinP = 0, Seed = 1 }, 4);
        var counts = new int[4];
        const int n = 40000;
        for (int i = 0; i < n; i++)
        {
            counts[sampler.Sample((float[])logits.Clone(), [])]++;
        }

        double z = logits.Sum(v => Math.Exp(v));
        for (int i = 0; i < 4; i++)
        {
            double p = Math.Exp(logits[i]) / z;
            double sigma = Math.Sqrt(n * p * (1 - p));
            Assert.InRange(counts[i], (n * p) - (5 * sigma), (n * p) + (5 * sigma));
        }
    }

    [Fact]
    public void TopPKeepsOnlyTheSmallestSetReachingP()
    {
        // Softmax of (3, 1, 0, -1) ≈ (0.84, 0.11, 0.04, 0.02): top-p 0.9 keeps the first two.
        var sampler = new Sampler(new SamplingOptions { Temperature = 1, TopK = 0, TopP = 0.9f, MinP = 0, Seed = 3 }, 4);
        var seen = new HashSet<int>();
        for (int i = 0; i < 3000; i++)
        {
            seen.Add(sampler.Sample(Logits(3, 1, 0, -1), []));
        }

        Assert.Equal(new HashSet<int> { 0, 1 }, seen);
    }

    [Fact]
    public void MinPDropsTokensBelowTheFractionOfTheBest()
    {
        // p_i / p_max = exp(l_i - l_max): 1, e^-1 ≈ 0.37, e^-3 ≈ 0.05. min-p 0.1 keeps the first two.
        var sampler = new Sampler(new SamplingOptions { Temperature = 1, TopK = 0, TopP = 1, MinP = 0.1f, Seed = 5 }, 3);
        var seen = new HashSet<int>();
        for (int i = 0; i < 3000; i++)
        {
            seen.Add(sampler.Sample(Logits(2, 1, -1), []));
        }

        Assert.Equal(new HashSet<int> { 0, 1 }, seen);
    }

    [Fact]
    public void RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits()
    {
        var sampler = new Sampler(new SamplingOptions { Temperature = 0, RepetitionPenalty = 2f }, 3);
        var logits = Logits(4f, 3f, -1f);
        Assert.Equal(1, sampler.Sample(logits, [0, 2]));
        Assert.Equal(2f, logits[0]);
        Assert.Equal(-2f, logits[2]);
    }

    [Fact]
    public void InvalidOptionsAreRefused()
    {
        Assert.Throws<MinnowException>(() => new Sampler(new SamplingOptions { Temperature = -1 }, 3));
        Assert.Throws<MinnowException>(() => new Sampler(new SamplingOptions { TopP = 0 }, 3));
        Assert.Throws<MinnowException>(() => new Sampler(new SamplingOptions { MinP = 2 }, 3));
    }
}
