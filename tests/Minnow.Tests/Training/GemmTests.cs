using Minnow.Tensors;
using Minnow.Training;

namespace Minnow.Tests.Training;

public unsafe class GemmTests
{
    private static float[] Random(int n, int seed)
    {
        var rng = new SplitMix64((ulong)seed);
        var a = new float[n];
        for (int i = 0; i < n; i++)
        {
            a[i] = (float)((rng.NextDouble() * 2) - 1);
        }

        return a;
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(7, 17, 5)]
    [InlineData(6, 16, 64)]
    [InlineData(47, 172, 64)]
    [InlineData(64, 256, 47)]
    [InlineData(130, 33, 300)]
    public void Multiply_MatchesNaiveProductForEveryTransposeAndAccumulate(int m, int n, int k)
    {
        foreach (bool transA in new[] { false, true })
        {
            foreach (bool transB in new[] { false, true })
            {
                foreach (bool accumulate in new[] { false, true })
                {
                    var a = Random(m * k, 1);
                    var b = Random(k * n, 2);
                    var c = Random(m * n, 3);
                    var expected = new double[m * n];
                    for (int i = 0; i < m; i++)
                    {
                        for (int j = 0; j < n; j++)
                        {
                            double sum = accumulate ? c[(i * n) + j] : 0;
                            for (int p = 0; p < k; p++)
                            {
                                float av = transA ? a[(p * m) + i] : a[(i * k) + p];
                                float bv = transB ? b[(j * k) + p] : b[(p * n) + j];
                                sum += (double)av * bv;
                            }

                            expected[(i * n) + j] = sum;
                        }
                    }

                    fixed (float* pa = a, pb = b, pc = c)
                    {
                        Gemm.Multiply(m, n, k, pa, transA ? m : k, transA, pb, transB ? k : n, transB, pc, n, accumulate);
                    }

                    for (int i = 0; i < m * n; i++)
                    {
                        Assert.True(Math.Abs(c[i] - expected[i]) <= 1e-4 * (1 + Math.Sqrt(k)), $"{transA}/{transB}/{accumulate} element {i}: {c[i]} vs {expected[i]}");
                    }
                }
            }
        }
    }

    [Fact]
    public void Multiply_IsBitIdenticalForAnyThreadCount()
    {
        int m = 100, n = 90, k = 333;
        var a = Random(m * k, 4);
        var b = Random(k * n, 5);
        float[]? first = null;
        foreach (int threads in new[] { 1, 2, 3 })
        {
            using var pool = new WorkerPool(threads);
            var c = new float[m * n];
            fixed (float* pa = a, pb = b, pc = c)
            {
                Gemm.Multiply(m, n, k, pa, k, false, pb, k, true, pc, n, false, pool);
            }

            first ??= c;
            Assert.Equal(first, c);
        }
    }
}
