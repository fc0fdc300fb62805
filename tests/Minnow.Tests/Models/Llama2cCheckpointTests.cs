using Minnow.Inference;
using Minnow.Loading;
using Minnow.Models;

namespace Minnow.Tests.Models;

public unsafe class Llama2cCheckpointTests
{
    private static string? Stories260K => SharedData.Root is null ? null : SharedData.Path("models", "stories260K", "stories260K.bin");

    [Fact]
    public void Stories260K_OriginalBinGivesTheSameLogitsAsItsHfCopy()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null || Stories260K is null)
        {
            return;
        }

        using var original = ModelLoader.LoadModel(Stories260K);
        using var hf = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        Assert.Equal(ModelFormat.Llama2c, ModelLoader.DetectFormat(Stories260K));
        Assert.Equal(hf.Config.VocabSize, original.Config.VocabSize);
        Assert.Equal(hf.Weights.ParameterCount, original.Weights.ParameterCount);
        int vocab = hf.Config.VocabSize, n = golden.InputIds.Length;
        var a = new float[n * vocab];
        var b = new float[n * vocab];
        using (var cacheA = new KvCache(original.Config, n))
        using (var cacheB = new KvCache(hf.Config, n))
        {
            fixed (float* pa = a, pb = b)
            {
                original.Forward(golden.InputIds, cacheA, pa, allLogits: true);
                hf.Forward(golden.InputIds, cacheB, pb, allLogits: true);
            }
        }

        float maxAbs = b.Max(MathF.Abs);
        for (int i = 0; i < a.Length; i++)
        {
            Assert.True(MathF.Abs(a[i] - b[i]) <= 1e-4f * MathF.Max(1, maxAbs), $"logit {i}: {a[i]} vs {b[i]}");
        }
    }

    [Fact]
    public void Stories260K_GreedyFromBosMatchesReference()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null || Stories260K is null)
        {
            return;
        }

        var expected = GoldenReference.Ints(golden.Root.GetProperty("greedy_from_bos_64"));
        using var model = ModelLoader.LoadModel(Stories260K);
        using var session = new Engine(model, EngineOptions.ForOneSequence(model.Config, 128));
        var result = Generator.Generate(session, [1], new GenerationOptions { MaxTokens = 64, Sampling = SamplingOptions.Greedy });
        Assert.Equal(expected, result.TokenIds);
    }

    [Fact]
    public void TruncatedCheckpointIsRefusedWithAClearMessage()
    {
        if (Stories260K is null)
        {
            return;
        }

        string path = Path.Combine(Path.GetTempPath(), $"minnow-truncated-{Guid.NewGuid():N}.bin");
        try
        {
            var bytes = File.ReadAllBytes(Stories260K);
            File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
            var error = Assert.Throws<MinnowException>(() => ModelLoader.LoadModel(path));
            Assert.Contains("truncated", error.Message);
            Assert.Contains(path, error.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
