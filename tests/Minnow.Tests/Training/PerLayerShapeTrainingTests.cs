using Minnow.Inference;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Training;

namespace Minnow.Tests.Training;

/// <summary>
/// Training a model whose layers have their own head counts and MLP widths (what structured pruning writes), so that
/// a pruned model can be fine-tuned to recover: gradients against finite differences, and the saved checkpoint
/// against the inference engine.
/// </summary>
public class PerLayerShapeTrainingTests
{
    private static ModelConfig PrunedConfig() =>
        LlamaTrainingModel.CreateConfig(vocab: 19, hidden: 16, layers: 2, heads: 4, kvHeads: 2, ffn: 24, maxPositions: 16, tieEmbeddings: false) with
        {
            LayerHeads = [4, 2],
            LayerKvHeads = [2, 1],
            LayerIntermediate = [24, 10],
        };

    private static LlamaTrainingModel PrunedModel()
    {
        var model = LlamaTrainingModel.CreateRandom(PrunedConfig(), seed: 3);
        var rng = new SplitMix64(17);
        foreach (var p in model.Parameters.All)
        {
            var v = model.Parameters.ValueSpan(p);
            for (int i = 0; i < v.Length; i++)
            {
                v[i] = p.Shape.Length == 1 ? v[i] + (float)(rng.NextGaussian() * 0.3) : (float)(rng.NextGaussian() * 0.4);
            }
        }

        return model;
    }

    private static int[] Tokens(int count, int seed)
    {
        var rng = new SplitMix64((ulong)seed);
        var tokens = new int[count];
        for (int i = 0; i < count; i++)
        {
            tokens[i] = rng.NextInt(19);
        }

        return tokens;
    }

    [Fact]
    public void ParametersHaveEachLayersOwnShape()
    {
        using var model = PrunedModel();
        Assert.Equal([4L * 4, 16], model.Parameters["model.layers.0.self_attn.q_proj.weight"].Shape);
        Assert.Equal([2L * 4, 16], model.Parameters["model.layers.1.self_attn.q_proj.weight"].Shape);
        Assert.Equal([1L * 4, 16], model.Parameters["model.layers.1.self_attn.v_proj.weight"].Shape);
        Assert.Equal([16L, 10], model.Parameters["model.layers.1.mlp.down_proj.weight"].Shape);
    }

    [Fact]
    public void Gradients_MatchCentralFiniteDifferences()
    {
        using var model = PrunedModel();
        int[] inputs = Tokens(2 * 9, 5), targets = Tokens(2 * 9, 6);
        model.Parameters.ZeroGrads();
        model.ForwardBackward(inputs, targets, 2, 9);
        double Loss()
        {
            var (total, count) = model.Evaluate(inputs, targets, 2, 9);
            return total / count;
        }

        Assert.True(GradientTests.AssertRandomEntriesMatchCentralDifferences(model.Parameters, Loss, entriesPerTensor: 5, seed: 11) > 60);
    }

    [Fact]
    public void SavedCheckpoint_RecordsLayerShapesAndScoresLikeTheInferenceEngine()
    {
        using var model = PrunedModel();
        string folder = Path.Combine(Path.GetTempPath(), "minnow-perlayer-" + Guid.NewGuid().ToString("N"));
        try
        {
            model.SaveHuggingFace(folder);
            using var loaded = ModelLoader.LoadModel(folder);
            Assert.Equal([4, 2], loaded.Config.LayerHeads ?? []);
            Assert.Equal([2, 1], loaded.Config.LayerKvHeads ?? []);
            Assert.Equal([24, 10], loaded.Config.LayerIntermediate ?? []);

            // The evaluator scores the second half of one 16-token window: positions 8..14 predict tokens 9..15.
            int[] tokens = Tokens(16, 9);
            var engine = PerplexityEvaluator.Evaluate(loaded, tokens, ctx: 16);
            var targets = new int[15];
            for (int i = 0; i < 15; i++)
            {
                targets[i] = i >= 8 ? tokens[i + 1] : -1;
            }

            var (total, count) = model.Evaluate(tokens.AsSpan(0, 15), targets, 1, 15);
            Assert.Equal(engine.TokensScored, count);
            Assert.True(Math.Abs((total / count) - engine.MeanNll) <= 1e-5 * Math.Max(1, engine.MeanNll), $"training {total / count} vs engine {engine.MeanNll}");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
