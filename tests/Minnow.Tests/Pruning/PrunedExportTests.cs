using Minnow.Export;
using Minnow.Inference;
using Minnow.LlamaCpp;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Pruning;
using Minnow.Tensors;
using Minnow.Tests.Models;

namespace Minnow.Tests.Pruning;

/// <summary>
/// A structurally pruned Llama (layers with different head counts and MLP widths) exports to GGUF as llama.cpp's
/// "deci" architecture, which reads those per layer: Minnow reloads it with the same logits, and llama.cpp runs it
/// and agrees. Models llama.cpp cannot describe that way are refused with a clear message. Reads ../shared in place.
/// </summary>
public class PrunedExportTests
{
    private static EditableWeights PruneNonUniform(TransformerModel model)
    {
        var calibration = PruningTestSupport.Sample(model, 4, 64, seed: 11);
        var options = new PruningOptions { Method = PruningMethod.Heads, KeepHeads = 0.6, KeepFfn = 0.6, Allocation = StructuredAllocation.Global, FfnMultiple = 4 };
        return ModelPruner.Prune(model, options, calibration);
    }

    [Fact]
    public void NonUniformLlama_ExportsAsDeci_ReloadsAndRunsInLlamaCpp()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        using var source = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        var pruned = PruneNonUniform(source);
        var c = pruned.Config;
        Assert.True(c.HasPerLayerShapes);
        Assert.True(Enumerable.Range(0, c.Layers).Select(c.HeadsOf).Distinct().Count() > 1 || Enumerable.Range(0, c.Layers).Select(c.IntermediateOf).Distinct().Count() > 1,
            "global allocation should give the layers different shapes here");

        using var model = pruned.CreateModel();
        string path = Path.Combine(Path.GetTempPath(), $"minnow-pruned-{Guid.NewGuid():N}.gguf");
        try
        {
            GgufExporter.Export(model, path, DType.F32, GgufTokenizerMetadata.WriteNone);
            using (var file = Minnow.Formats.Gguf.GgufFile.Open(path))
            {
                Assert.Equal("deci", file.Architecture);
            }

            int[] ids = golden.InputIds;
            int vocab = c.VocabSize;
            float[] expected = PruningTestSupport.Logits(model, ids);
            using (var reloaded = ModelLoader.LoadModel(path))
            {
                Assert.Equal(c.LayerHeads, reloaded.Config.LayerHeads);
                Assert.Equal(c.LayerKvHeads, reloaded.Config.LayerKvHeads);
                Assert.Equal(c.LayerIntermediate, reloaded.Config.LayerIntermediate);
                PruningTestSupport.AssertClose(expected, PruningTestSupport.Logits(reloaded, ids));
            }

            float[] llama;
            using (var peer = LlamaCppModel.Load(path, new LlamaCppOptions { Threads = 2, ContextSize = ids.Length, F32KvCache = true }))
            {
                llama = peer.EvaluateAllLogits(ids);
            }

            double nllMinnow = 0, nllLlama = 0;
            for (int p = 0; p + 1 < ids.Length; p++)
            {
                nllMinnow += PerplexityEvaluator.NegativeLogLikelihood(expected.AsSpan(p * vocab, vocab), ids[p + 1]);
                nllLlama += PerplexityEvaluator.NegativeLogLikelihood(llama.AsSpan(p * vocab, vocab), ids[p + 1]);
            }

            Assert.True(Math.Abs(nllLlama - nllMinnow) <= 1e-4 * nllMinnow, $"mean NLL llama.cpp {nllLlama / 47} vs Minnow {nllMinnow / 47}");
            PruningTestSupport.AssertClose(expected, llama, 1e-3f);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("qwen2")]
    [InlineData("gpt2")]
    public void NonUniformModelsLlamaCppCannotDescribe_AreRefused(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        using var source = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        using var model = PruneNonUniform(source).CreateModel();
        string path = Path.Combine(Path.GetTempPath(), $"minnow-pruned-{Guid.NewGuid():N}.gguf");
        var error = Assert.Throws<MinnowException>(() => GgufExporter.Export(model, path, DType.F32, GgufTokenizerMetadata.WriteNone));
        Assert.Contains("differ in head count or MLP width", error.Message);
        Assert.False(File.Exists(path));
    }
}
