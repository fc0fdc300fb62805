using Minnow.Export;
using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tests.Models;
using Xunit.Abstractions;
using static Minnow.Tests.Quantization.QuantizationTestSupport;

namespace Minnow.Tests.Quantization;

/// <summary>
/// stories260K (real pretrained weights, no tokenizer): calibrate on sequences sampled from the F32 model, measure
/// on other sampled sequences. GPTQ Q4_0 must beat round-to-nearest Q4_0 in perplexity and KL divergence, and the
/// exported GGUF must compute what the in-memory quantized model computed.
/// </summary>
public class EndToEndTests(ITestOutputHelper output)
{
    private const int Bos = 1;

    private static float MaxOf(ReadOnlySpan<float> values)
    {
        float max = float.MinValue;
        foreach (float v in values)
        {
            max = MathF.Max(max, v);
        }

        return max;
    }

    [Fact]
    public void Stories260kGptqQ4BeatsRoundToNearestOnHeldOutSamples()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        using var pool = new WorkerPool(1);
        using var original = ModelLoader.LoadModel(golden.WeightsFile("f32"), pool);
        var calibration = Calibration.Sample(original, 8, 96, Bos, seed: 1);
        var heldOut = Calibration.Sample(original, 6, 128, Bos, seed: 2).SelectMany(s => s).ToArray();
        using var statistics = Calibration.Collect(original, calibration);

        ComparisonResult Measure(QuantizationMethod method, out QuantizedModel quantized)
        {
            quantized = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = DType.Q4_0, Method = method }, statistics, pool: pool);
            var result = ModelComparison.Compare(original, quantized.Model, heldOut, ctx: 128, bosToken: Bos);
            output.WriteLine($"{method}: ppl {result.Perplexity:0.0000} (F32 {result.ReferencePerplexity:0.0000}), KL {result.MeanKl:0.00000} ± {result.KlStandardError:0.00000}, " +
                $"top-1 {result.Top1Agreement:P2}, {quantized.BitsPerWeight:0.00} bpw, {quantized.Seconds:0.00} s");
            return result;
        }

        var rtn = Measure(QuantizationMethod.Rtn, out var rtnModel);
        var gptq = Measure(QuantizationMethod.Gptq, out var gptqModel);
        using (rtnModel)
        using (gptqModel)
        {
            Assert.True(gptq.MeanKl < rtn.MeanKl, $"KL: GPTQ {gptq.MeanKl} vs RTN {rtn.MeanKl}");
            Assert.True(gptq.Perplexity < rtn.Perplexity, $"perplexity: GPTQ {gptq.Perplexity} vs RTN {rtn.Perplexity}");
            Assert.Equal(rtnModel.Bytes, gptqModel.Bytes);

            // Per-layer calibration errors: GPTQ below round to nearest on every quantized layer.
            foreach (var layer in gptqModel.Tensors.Where(t => t.Method == "gptq"))
            {
                Assert.True(layer.RelativeOutputError < layer.RoundToNearestError, $"{layer.Name}: {layer.RelativeOutputError} vs {layer.RoundToNearestError}");
            }

            // The GGUF file holds exactly the evaluated weights.
            string path = Path.Combine(Path.GetTempPath(), $"minnow-gptq-{Guid.NewGuid():N}.gguf");
            try
            {
                GgufExporter.Export(gptqModel.Model, path, DType.Q4_0);
                using var reloaded = ModelLoader.LoadModel(path, pool);
                Assert.Equal(DType.Q4_0, reloaded.Weights.Get("model.layers.0.self_attn.q_proj.weight").Type);
                Assert.Equal(DType.Q8_0, reloaded.Weights.Get("model.embed_tokens.weight").Type);
                Assert.Equal(DType.F16, reloaded.Weights.Get("model.layers.0.mlp.down_proj.weight").Type);
                AssertSameBlocks(gptqModel.Model, reloaded);

                // And computes the same function: the same next token wherever the choice is clear.
                var ids = heldOut.Take(48).ToArray();
                var expected = Logits(gptqModel.Model, ids);
                var actual = Logits(reloaded, ids);
                int vocab = original.Config.VocabSize;
                for (int p = 0; p < ids.Length; p++)
                {
                    var row = expected.AsSpan(p * vocab, vocab);
                    int top = row.IndexOf(MaxOf(row));
                    float second = float.MinValue;
                    for (int v = 0; v < vocab; v++)
                    {
                        second = v != top ? MathF.Max(second, row[v]) : second;
                    }

                    if (row[top] - second > 0.5f)
                    {
                        var other = actual.AsSpan(p * vocab, vocab);
                        Assert.Equal(top, other.IndexOf(MaxOf(other)));
                    }
                }
            }
            finally
            {
                File.Delete(path);
            }
        }
    }
}
