using Minnow.Export;
using Minnow.Formats.Gguf;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Pruning;
using Minnow.Tensors;
using Minnow.Tests.Models;

namespace Minnow.Tests.Pruning;

/// <summary>
/// A pruned model exported with Minnow's sparse types stores its pruned matrices sparse, reloads, and gives the
/// logits of the same pruned model stored dense (F16 against sparse F16; each sparse 8-bit model against its own
/// values written out as F32). Reads ../shared in place.
/// </summary>
public class SparseExportTests
{
    public static TheoryData<PruningMethod> Methods() => new() { PruningMethod.Wanda, PruningMethod.TwoFour, PruningMethod.FourEight };

    private static string Temp(string what) => Path.Combine(Path.GetTempPath(), $"minnow-sparse-{what}-{Guid.NewGuid():N}.gguf");

    [Theory]
    [MemberData(nameof(Methods))]
    public void SparseModelGivesTheDenseModelsLogits(PruningMethod method)
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        using var source = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        var calibration = PruningTestSupport.Sample(source, 4, 64, seed: 5);
        using var pruned = ModelPruner.Prune(source, new PruningOptions { Method = method }, calibration).CreateModel();
        int[] ids = golden.InputIds;
        string f16 = Temp("f16"), sparseF16 = Temp("sf16"), sparseQ8 = Temp("sq8"), sparseI8 = Temp("si8"), q8Dense = Temp("sq8-as-f32");
        try
        {
            GgufExporter.Export(pruned, f16, DType.F16, GgufTokenizerMetadata.WriteNone);
            GgufExporter.Export(pruned, sparseF16, DType.SparseF16, GgufTokenizerMetadata.WriteNone);
            GgufExporter.Export(pruned, sparseQ8, DType.SparseQ8, GgufTokenizerMetadata.WriteNone);
            GgufExporter.Export(pruned, sparseI8, DType.SparseI8, GgufTokenizerMetadata.WriteNone);
            AssertPrunedMatricesSparse(sparseF16, DType.SparseF16);
            AssertPrunedMatricesSparse(sparseQ8, DType.SparseQ8);
            AssertPrunedMatricesSparse(sparseI8, DType.SparseI8);
            Assert.True(new FileInfo(sparseF16).Length < new FileInfo(f16).Length);
            Assert.True(new FileInfo(sparseI8).Length < new FileInfo(sparseQ8).Length);

            using (var dense = ModelLoader.LoadModel(f16))
            using (var sparse = ModelLoader.LoadModel(sparseF16))
            {
                PruningTestSupport.AssertClose(PruningTestSupport.Logits(dense, ids), PruningTestSupport.Logits(sparse, ids), 1e-5f);
            }

            foreach (string eightBit in new[] { sparseQ8, sparseI8 })
            {
                using var sparse = ModelLoader.LoadModel(eightBit);
                GgufExporter.Export(sparse, q8Dense, DType.F32, GgufTokenizerMetadata.WriteNone);
                using var dense = ModelLoader.LoadModel(q8Dense);
                PruningTestSupport.AssertClose(PruningTestSupport.Logits(dense, ids), PruningTestSupport.Logits(sparse, ids), 1e-5f);
            }
        }
        finally
        {
            foreach (string path in new[] { f16, sparseF16, sparseQ8, sparseI8, q8Dense })
            {
                File.Delete(path);
            }
        }
    }

    /// <summary>
    /// With the embedding pruned too (<see cref="PruningOptions.IncludeEmbeddings"/>), the embedding table (looked up
    /// row by row, and the tied head) is stored sparse as well and the model still gives the dense model's logits.
    /// </summary>
    [Fact]
    public void PrunedEmbeddingIsStoredSparseAndGivesTheDenseModelsLogits()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        using var source = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        var calibration = PruningTestSupport.Sample(source, 4, 64, seed: 5);
        using var pruned = ModelPruner.Prune(source, new PruningOptions { Method = PruningMethod.Wanda, IncludeEmbeddings = true }, calibration).CreateModel();
        int[] ids = golden.InputIds;
        string f16 = Temp("emb-f16"), sparseF16 = Temp("emb-sf16"), sparseI8 = Temp("emb-si8"), i8Dense = Temp("emb-si8-as-f32");
        try
        {
            GgufExporter.Export(pruned, f16, DType.F16, GgufTokenizerMetadata.WriteNone);
            GgufExporter.Export(pruned, sparseF16, DType.SparseF16, GgufTokenizerMetadata.WriteNone);
            GgufExporter.Export(pruned, sparseI8, DType.SparseI8, GgufTokenizerMetadata.WriteNone);
            foreach (var (path, type) in new[] { (sparseF16, DType.SparseF16), (sparseI8, DType.SparseI8) })
            {
                using var file = GgufFile.Open(path);
                Assert.Equal(type, file.Tensors.Single(t => t.Name == "token_embd.weight").Type);
            }

            using (var dense = ModelLoader.LoadModel(f16))
            using (var sparse = ModelLoader.LoadModel(sparseF16))
            {
                PruningTestSupport.AssertClose(PruningTestSupport.Logits(dense, ids), PruningTestSupport.Logits(sparse, ids), 1e-5f);
            }

            using (var sparse = ModelLoader.LoadModel(sparseI8))
            {
                GgufExporter.Export(sparse, i8Dense, DType.F32, GgufTokenizerMetadata.WriteNone);
                using var dense = ModelLoader.LoadModel(i8Dense);
                PruningTestSupport.AssertClose(PruningTestSupport.Logits(dense, ids), PruningTestSupport.Logits(sparse, ids), 1e-5f);
            }
        }
        finally
        {
            foreach (string path in new[] { f16, sparseF16, sparseI8, i8Dense })
            {
                File.Delete(path);
            }
        }
    }

    /// <summary>Every block matrix (attention and MLP) is stored sparse; embeddings and norms are not.</summary>
    private static void AssertPrunedMatricesSparse(string path, DType type)
    {
        using var file = GgufFile.Open(path);
        foreach (var t in file.Tensors)
        {
            bool blockMatrix = t.Name.StartsWith("blk.", StringComparison.Ordinal) && t.Rank == 2;
            Assert.True(blockMatrix == (t.Type == type), $"{t}");
        }
    }

    [Fact]
    public void UnprunedModelExportsDense()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        using var source = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        string path = Temp("unpruned");
        try
        {
            GgufExporter.Export(source, path, DType.SparseQ8, GgufTokenizerMetadata.WriteNone);
            using var file = GgufFile.Open(path);
            Assert.DoesNotContain(file.Tensors, t => t.Type.IsSparse());
            Assert.Contains(file.Tensors, t => t.Type == DType.Q8_0);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
