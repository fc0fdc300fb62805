using Minnow.Inference;
using Minnow.Loading;
using Minnow.Tensors;
using Minnow.Tests.Models;

namespace Minnow.Tests.Inference;

public class HalfPrecisionKvCacheTests
{
    [Theory]
    [MemberData(nameof(GoldenReference.Names), MemberType = typeof(GoldenReference))]
    public void AnF16CacheHalvesTheMemoryAndKeepsThePredictions(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        int[] ids = golden.InputIds;
        var (full, fullBytes) = Logits(model, ids, DType.F32);
        var (half, halfBytes) = Logits(model, ids, DType.F16);
        Assert.Equal(fullBytes, 2 * halfBytes);

        int vocab = model.Config.VocabSize;
        double nllFull = 0, nllHalf = 0;
        int clear = 0, same = 0;
        for (int p = 0; p + 1 < ids.Length; p++)
        {
            var a = full.AsSpan(p * vocab, vocab);
            var b = half.AsSpan(p * vocab, vocab);
            nllFull += Nll(a, ids[p + 1]);
            nllHalf += Nll(b, ids[p + 1]);
            int top = ArgMax(a);
            if (Gap(a, top) > 1e-2)
            {
                clear++;
                same += ArgMax(b) == top ? 1 : 0;
            }
        }

        Assert.True(clear > 0, $"{name}: no position with a clear top token");
        Assert.Equal(clear, same);
        Assert.True(Math.Abs(nllHalf - nllFull) <= 1e-3 * Math.Abs(nllFull), $"{name}: NLL {nllHalf} with an F16 cache vs {nllFull}");
    }

    private static (float[] Logits, long CacheBytes) Logits(Minnow.Models.TransformerModel model, int[] ids, DType cacheType)
    {
        int vocab = model.Config.VocabSize;
        var logits = new float[ids.Length * vocab];
        using var session = new InferenceSession(model, ids.Length, batchSize: 5, kvCacheType: cacheType);
        session.Evaluate(ids, (start, count, values) => values.CopyTo(logits.AsSpan(start * vocab)));
        return (logits, session.KvCacheBytes);
    }

    private static double Nll(ReadOnlySpan<float> logits, int target)
    {
        double max = double.NegativeInfinity;
        foreach (float v in logits)
        {
            max = Math.Max(max, v);
        }

        double sum = 0;
        foreach (float v in logits)
        {
            sum += Math.Exp(v - max);
        }

        return Math.Log(sum) + max - logits[target];
    }

    private static int ArgMax(ReadOnlySpan<float> values)
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

    private static double Gap(ReadOnlySpan<float> values, int top)
    {
        double second = double.NegativeInfinity;
        for (int i = 0; i < values.Length; i++)
        {
            if (i != top)
            {
                second = Math.Max(second, values[i]);
            }
        }

        return values[top] - second;
    }
}
