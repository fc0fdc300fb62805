using Minnow.Pruning;

namespace Minnow.Tests.Pruning;

/// <summary>Magnitude, Wanda and N:M pruning of single matrices: exact counts, the right weights removed, the pattern held.</summary>
public class UnstructuredPrunerTests
{
    private static float[] RandomMatrix(int rows, int cols, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, rows * cols).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray();
    }

    [Theory]
    [InlineData(0.1)]
    [InlineData(0.25)]
    [InlineData(0.5)]
    [InlineData(0.7)]
    [InlineData(0.9)]
    public void Magnitude_ZeroesExactlyTheSmallestFraction(double sparsity)
    {
        var original = RandomMatrix(37, 53, 1);
        var w = (float[])original.Clone();
        UnstructuredPruner.Magnitude(w, sparsity);

        int expected = (int)Math.Round(sparsity * w.Length, MidpointRounding.ToEven);
        Assert.Equal(expected, w.Count(v => v == 0));
        float largestRemoved = original.Where((_, i) => w[i] == 0).Max(MathF.Abs);
        float smallestKept = original.Where((_, i) => w[i] != 0).Min(MathF.Abs);
        Assert.True(largestRemoved <= smallestKept);
        Assert.All(Enumerable.Range(0, w.Length).Where(i => w[i] != 0), i => Assert.Equal(original[i], w[i]));
    }

    /// <summary>What each method must remove: the k first entries in ascending (score, index) order.</summary>
    private static HashSet<int> FirstByScoreThenIndex(IReadOnlyList<float> scores, int k) =>
        [.. Enumerable.Range(0, scores.Count).OrderBy(i => scores[i]).ThenBy(i => i).Take(k)];

    [Fact]
    public void TiedScoresArePrunedLowestIndexFirst()
    {
        // Few distinct magnitudes, so the k-th smallest score is shared by many weights on either side of the cut.
        var random = new Random(5);
        float[] levels = [0.25f, 0.5f, 1f, 2f];
        float[] original = Enumerable.Range(0, 24 * 40).Select(_ => levels[random.Next(4)] * (random.Next(2) == 0 ? -1 : 1)).ToArray();

        var magnitude = (float[])original.Clone();
        UnstructuredPruner.Magnitude(magnitude, 0.45);
        var expected = FirstByScoreThenIndex(original.Select(MathF.Abs).ToArray(), UnstructuredPruner.PruneCount(0.45, original.Length));
        Assert.Equal(expected, Enumerable.Range(0, original.Length).Where(i => magnitude[i] == 0).ToHashSet());

        int rows = 24, cols = 40;
        double[] norms = Enumerable.Range(0, cols).Select(j => (double)(1 + (j % 3))).ToArray();
        var wanda = (float[])original.Clone();
        UnstructuredPruner.Wanda(wanda, rows, cols, norms, 0.5);
        var twoFour = (float[])original.Clone();
        UnstructuredPruner.NOfM(twoFour, rows, cols, 2, 4, norms);
        for (int r = 0; r < rows; r++)
        {
            float[] scores = Enumerable.Range(0, cols).Select(j => (float)(MathF.Abs(original[(r * cols) + j]) * norms[j])).ToArray();
            Assert.Equal(FirstByScoreThenIndex(scores, cols / 2), Enumerable.Range(0, cols).Where(j => wanda[(r * cols) + j] == 0).ToHashSet());
            for (int g = 0; g < cols; g += 4)
            {
                var inGroup = FirstByScoreThenIndex(scores[g..(g + 4)], 2).Select(j => g + j).ToHashSet();
                Assert.Equal(inGroup, Enumerable.Range(g, 4).Where(j => twoFour[(r * cols) + j] == 0).ToHashSet());
            }
        }
    }

    [Fact]
    public void PruneCount_RoundsHalfToEvenAsTorchDoes()
    {
        Assert.Equal(2, UnstructuredPruner.PruneCount(0.5, 5));
        Assert.Equal(4, UnstructuredPruner.PruneCount(0.5, 7));
        Assert.Equal(1, UnstructuredPruner.PruneCount(0.1, 10));
    }

    [Theory]
    [InlineData(0.3)]
    [InlineData(0.5)]
    [InlineData(0.8)]
    public void Wanda_ZeroesTheLowestScoresOfEveryRow(double sparsity)
    {
        int rows = 12, cols = 40;
        var original = RandomMatrix(rows, cols, 2);
        var random = new Random(3);
        var norms = Enumerable.Range(0, cols).Select(_ => random.NextDouble() * 10).ToArray();
        var w = (float[])original.Clone();
        UnstructuredPruner.Wanda(w, rows, cols, norms, sparsity);

        int perRow = (int)Math.Round(sparsity * cols, MidpointRounding.ToEven);
        for (int r = 0; r < rows; r++)
        {
            var removed = Enumerable.Range(0, cols).Where(j => w[(r * cols) + j] == 0).ToList();
            Assert.Equal(perRow, removed.Count);
            double worstRemoved = removed.Max(j => MathF.Abs(original[(r * cols) + j]) * norms[j]);
            double bestKept = Enumerable.Range(0, cols).Except(removed).Min(j => MathF.Abs(original[(r * cols) + j]) * norms[j]);
            Assert.True(worstRemoved <= bestKept);
        }
    }

    [Fact]
    public void Wanda_DiffersFromMagnitudeWhenActivationsDiffer()
    {
        // One input feature with a huge activation norm keeps its (small) weights under Wanda.
        int rows = 4, cols = 8;
        var w = RandomMatrix(rows, cols, 4);
        for (int r = 0; r < rows; r++)
        {
            w[r * cols] = 0.001f * (r + 1);
        }

        var norms = Enumerable.Repeat(1.0, cols).ToArray();
        norms[0] = 1e6;
        var wanda = (float[])w.Clone();
        UnstructuredPruner.Wanda(wanda, rows, cols, norms, 0.5);
        for (int r = 0; r < rows; r++)
        {
            Assert.NotEqual(0, wanda[r * cols]);
        }
    }

    [Theory]
    [InlineData(2, 4, 64)]
    [InlineData(4, 8, 64)]
    [InlineData(2, 4, 70)]
    [InlineData(4, 8, 172)]
    public void NOfM_KeepsExactlyNOfEveryMConsecutiveInputs(int n, int m, int cols)
    {
        int rows = 9;
        var original = RandomMatrix(rows, cols, 5);
        foreach (bool wanda in new[] { false, true })
        {
            var w = (float[])original.Clone();
            var random = new Random(6);
            var norms = wanda ? Enumerable.Range(0, cols).Select(_ => random.NextDouble()).ToArray() : null;
            UnstructuredPruner.NOfM(w, rows, cols, n, m, norms);
            Assert.True(UnstructuredPruner.SatisfiesNOfM(w, rows, cols, n, m));
            for (int r = 0; r < rows; r++)
            {
                for (int start = 0; start + m <= cols; start += m)
                {
                    var group = Enumerable.Range(start, m).ToList();
                    var kept = group.Where(j => w[(r * cols) + j] != 0).ToList();
                    Assert.Equal(n, kept.Count);
                    double Score(int j) => MathF.Abs(original[(r * cols) + j]) * (norms?[j] ?? 1);
                    Assert.True(group.Except(kept).Max(Score) <= kept.Min(Score));
                }
            }

            Assert.Equal(0.5, w.Count(v => v == 0) / (double)w.Length, 2);
        }
    }

    [Fact]
    public void SatisfiesNOfM_DetectsAViolation()
    {
        var w = new float[] { 1, 2, 0, 0, 1, 1, 1, 0 };
        Assert.False(UnstructuredPruner.SatisfiesNOfM(w, 1, 8, 2, 4));
        w[6] = 0;
        Assert.True(UnstructuredPruner.SatisfiesNOfM(w, 1, 8, 2, 4));
    }
}
