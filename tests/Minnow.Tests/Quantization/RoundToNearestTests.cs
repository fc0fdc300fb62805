using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tests.Models;
using static Minnow.Tests.Quantization.QuantizationTestSupport;

namespace Minnow.Tests.Quantization;

/// <summary>Round to nearest is llama.cpp's reference quantizer (<see cref="Dequantize.FromFloats"/>) bit for bit.</summary>
public class RoundToNearestTests
{
    public static TheoryData<string> Schemes => new() { "q8_0", "q4_0" };

    [Theory]
    [MemberData(nameof(Schemes))]
    public void BlockCodecMatchesTheReferenceQuantizer(string scheme)
    {
        var type = QuantizationOptions.ParseScheme(scheme);
        var random = new Random(7);
        int rows = 37, cols = 96;
        var values = Gaussian(random, rows * cols, 0.05f);

        // Edge cases: an all-zero block, exact ties, a block whose extreme is positive, one with repeated extremes.
        values.AsSpan(0, 32).Clear();
        for (int j = 0; j < 32; j++)
        {
            values[32 + j] = (j - 16) * 0.25f;
            values[64 + j] = j * 0.5f;
            values[96 + j] = (j % 2 == 0 ? 1 : -1) * 3f;
        }

        var codec = BlockCodec.RoundToNearest(type, values, rows, cols);
        Assert.Equal(Dequantize.FromFloats(type, values), codec.ToBytes());

        // And the codec's own dequantization is Dequantize.Row's.
        var expected = new float[values.Length];
        unsafe
        {
            fixed (byte* p = codec.ToBytes())
            {
                Dequantize.Row(type, p, expected);
            }
        }

        Assert.Equal(expected, codec.ToFloats());
    }

    [Theory]
    [InlineData("llama", "q4_0")]
    [InlineData("llama", "q8_0")]
    [InlineData("gpt_neox", "q4_0")]
    [InlineData("gpt2", "q4_0")]
    [InlineData("stories260k-hf", "q4_0")]
    public void ModelRoundToNearestIsTheReferenceQuantizerAndKeepsLlamaCppsPolicy(string name, string scheme)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        var type = QuantizationOptions.ParseScheme(scheme);
        using var original = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        using var quantized = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = type, Method = QuantizationMethod.Rtn });
        var plan = LayerPlan.For(original.Config, original.Weights.Has);
        foreach (var report in quantized.Tensors)
        {
            var source = original.Weights.Get(report.Name);
            var result = quantized.Model.Weights.Get(report.Name);
            if (source.Rank < 2)
            {
                Assert.Equal(DType.F32, result.Type);
                Assert.Equal(source.ToFloatArray(), result.ToFloatArray());
                continue;
            }

            var layer = plan.Find(report.Name);
            float[] values = layer is null ? source.ToFloatArray() : ModelQuantizer.ReadMatrix(source, layer);
            bool head = report.Name.Contains("embed", StringComparison.Ordinal) || report.Name.Contains("wte", StringComparison.Ordinal) || report.Name.Contains("lm_head", StringComparison.Ordinal);
            if (report.Name.Contains("wpe", StringComparison.Ordinal))
            {
                Assert.Equal(DType.F32, result.Type);
            }
            else if (result.Columns % 32 != 0)
            {
                Assert.Equal(DType.F16, result.Type);
            }
            else
            {
                var expectedType = head && type == DType.Q4_0 ? DType.Q8_0 : type;
                Assert.Equal(expectedType, result.Type);
                unsafe
                {
                    Assert.Equal(Dequantize.FromFloats(expectedType, values), new ReadOnlySpan<byte>(result.Data, (int)result.ByteSize).ToArray());
                }
            }
        }
    }
}
