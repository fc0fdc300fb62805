using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tests.Models;
using static Minnow.Tests.Quantization.QuantizationTestSupport;

namespace Minnow.Tests.Quantization;

/// <summary>AWQ's scaling is an exact reparametrisation, and its search never loses to round to nearest on calibration data.</summary>
public class AwqTests
{
    [Theory]
    [InlineData("llama")]
    [InlineData("qwen2")]
    [InlineData("gpt_neox")]
    [InlineData("gpt2")]
    [InlineData("stories260k-hf")]
    public void ScalingLeavesTheF32LogitsUnchanged(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        using var original = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        using var statistics = Calibration.Collect(original, [golden.InputIds]);
        var plan = statistics.Plan;
        var scales = plan.Groups.Values
            .Where(g => g.NormWeight != null)
            .Select(g => new AwqGroupScale(g.Key, 0.8, Awq.Scales(statistics.MeanAbs(g.Key), 0.8), 0, 0))
            .ToList();
        Assert.NotEmpty(scales);
        Assert.Contains(scales, s => s.Scales.Max() / s.Scales.Min() > 1.1);

        using var scaled = ModelQuantizer.ApplyScales(original, scales);
        var expected = Logits(original, golden.InputIds);
        var actual = Logits(scaled, golden.InputIds);
        float tolerance = 1e-4f * MathF.Max(1, expected.Max(MathF.Abs));
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(MathF.Abs(expected[i] - actual[i]) <= tolerance, $"{name} logit {i}: {actual[i]} vs {expected[i]}");
        }

        // The weights did change: the scaled norms are not the original ones.
        var norm = scales[0];
        var normName = plan.Groups[norm.Group].NormWeight!;
        Assert.NotEqual(original.Weights.Get(normName).ToFloatArray(), scaled.Weights.Get(normName).ToFloatArray());
    }

    [Fact]
    public void SearchNeverLosesToRoundToNearestOnCalibrationData()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        using var pool = new WorkerPool(1);
        using var original = ModelLoader.LoadModel(golden.WeightsFile("f32"), pool);
        var sequences = Calibration.Sample(original, 2, 64, 1, seed: 11);
        using var statistics = Calibration.Collect(original, sequences);
        using var awq = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = DType.Q4_0, Method = QuantizationMethod.Awq, AwqGridSteps = 5 }, statistics);
        Assert.NotEmpty(awq.AwqScales);
        foreach (var group in awq.AwqScales)
        {
            Assert.True(group.Error <= group.RoundToNearestError, $"{group.Group}: {group.Error} > {group.RoundToNearestError}");
        }

        Assert.Contains(awq.AwqScales, g => g.Alpha > 0);
        foreach (var report in awq.Tensors.Where(t => t.Method == "awq" && t.Type == DType.Q4_0))
        {
            Assert.NotNull(report.AwqAlpha);
            Assert.NotNull(report.RelativeOutputError);
        }
    }
}
