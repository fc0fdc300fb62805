using Minnow.Export;
using Minnow.Export.Onnx;
using Minnow.Kernels;
using Minnow.Loading;
using Minnow.Models;
using Minnow.OnnxRuntime;
using Minnow.Pruning;
using Minnow.Tensors;
using Minnow.Tests.Cli;
using Minnow.Tests.Models;
using Minnow.Tests.Pruning;

namespace Minnow.Tests.OnnxRuntime;

/// <summary>
/// The ONNX export of models loaded other ways than a golden F32 folder: a structurally pruned Llama (per-layer head
/// counts and MLP widths), llama2.c's checkpoint (interleaved RoPE), a GGUF file (q/k rows in llama.cpp's order; GPT-NeoX
/// with partial interleaved rotary and [q | k | v] fused rows), and F16 weights exported as F16. ONNX Runtime gives Minnow's logits at every position.
/// </summary>
public class OnnxModelVariantsTests
{
    private static void AssertOnnxRuntimeMatches(TransformerModel model, int[] ids, OnnxExportOptions options)
    {
        using var folder = new TempFolder();
        OnnxExporter.Export(model, folder.Path, options);
        using var ort = OrtDecoder.Open(folder.Path, threads: 1);
        int vocab = model.Config.VocabSize;
        var expected = OnnxGoldenTests.MinnowLogits(model, ids);
        const int prefill = 5;
        OnnxGoldenTests.AssertClose(expected.AsSpan(0, prefill * vocab), ort.Forward(ids.AsSpan(0, prefill), allLogits: true), "prefill");
        for (int t = prefill; t < ids.Length; t++)
        {
            OnnxGoldenTests.AssertClose(expected.AsSpan(t * vocab, vocab), ort.Forward(ids.AsSpan(t, 1), allLogits: false), $"position {t}");
        }
    }

    [Fact]
    public void StructurallyPrunedLlama_PerLayerShapes_RunsInOnnxRuntime()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        using var source = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        var calibration = PruningTestSupport.Sample(source, 4, 64, seed: 11);
        var pruned = ModelPruner.Prune(source, new PruningOptions
        {
            Method = PruningMethod.Heads,
            KeepHeads = 0.6,
            KeepFfn = 0.6,
            Allocation = StructuredAllocation.Global,
            FfnMultiple = 4,
        }, calibration);
        Assert.True(pruned.Config.HasPerLayerShapes);
        using var model = pruned.CreateModel();
        AssertOnnxRuntimeMatches(model, golden.InputIds, new OnnxExportOptions { Type = OnnxWeightType.F32 });
    }

    [Fact]
    public void Llama2cCheckpoint_InterleavedRope_RunsInOnnxRuntime()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(SharedData.Path("models", "stories260K", "stories260K.bin"));
        Assert.Equal(RopeStyle.Interleaved, model.Config.RopeStyle);
        AssertOnnxRuntimeMatches(model, [1, 403, 407, 261, 378, 429, 271, 280, 386, 270, 311, 259, 475, 282, 342, 46], new OnnxExportOptions());
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("gpt_neox")]
    public void GgufFile_QkRowsInLlamaCppOrder_RunInOnnxRuntime(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        string path = Path.Combine(Path.GetTempPath(), $"minnow-onnx-{Guid.NewGuid():N}.gguf");
        try
        {
            using (var source = ModelLoader.LoadModel(golden.WeightsFile("f32")))
            {
                GgufExporter.Export(source, path, DType.F32, GgufTokenizerMetadata.WriteNone);
            }

            using var model = ModelLoader.LoadModel(path);
            AssertOnnxRuntimeMatches(model, golden.InputIds, new OnnxExportOptions());
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("qwen2")]
    [InlineData("gpt2")]
    public void F16Weights_ExportedAsF16_RunInOnnxRuntime(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(golden.WeightsFile("f16"));
        AssertOnnxRuntimeMatches(model, golden.InputIds, new OnnxExportOptions { Type = OnnxWeightType.F16 });
    }

    [Fact]
    public void WeightsPastTheInlineLimit_GoToExternalData_AndRunInOnnxRuntime()
    {
        var golden = GoldenReference.Load("qwen2");
        if (golden is null)
        {
            return;
        }

        // The 2 GB protobuf cap, scaled down: past 16 KiB of inline initializers the weights go to model.onnx.data.
        using var model = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        using var folder = new TempFolder();
        var result = OnnxExporter.Export(model, folder.Path, new OnnxExportOptions { InlineLimit = 16 * 1024 });
        Assert.NotNull(result.ExternalDataFile);
        Assert.True(new FileInfo(result.ExternalDataFile!).Length > new FileInfo(result.ModelFile).Length);
        using var ort = OrtDecoder.Open(folder.Path, threads: 1);
        var ids = golden.InputIds;
        OnnxGoldenTests.AssertClose(OnnxGoldenTests.MinnowLogits(model, ids), ort.Forward(ids, allLogits: true), "external data");
    }
}
