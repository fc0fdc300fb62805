using System.Text.Json;
using Minnow.Tests.Cli;
using CliRunner = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.OnnxRuntime;

/// <summary><c>minnow bench --vs onnxruntime</c> end to end: the bench model exported to ONNX runs in its own child process and agrees with Minnow.</summary>
public sealed class OnnxBenchTests
{
    [Fact]
    public void BenchVsOnnxRuntime_F16_MeasuresBothAndAgrees()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("stories260k-hf");
        var result = CliRunner.Run("bench", model, "--vs", "onnxruntime", "--type", "f16", "--runs", "1", "--prompt", "16", "--gen", "8",
            "--agreement-tokens", "64", "--threads", "1", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        var ort = json.GetProperty("onnxruntime");
        foreach (string key in new[] { "prefill_tok_s", "decode_tok_s", "ttft_ms", "peak_rss_mb" })
        {
            Assert.True(json.GetProperty(key).GetDouble() > 0, $"minnow {key}");
            Assert.True(ort.GetProperty(key).GetDouble() > 0, $"onnxruntime {key}");
        }

        Assert.Equal(1, ort.GetProperty("runs").GetArrayLength());
        Assert.Equal(64, ort.GetProperty("agreement_tokens").GetInt32());
        Assert.Equal(1.0, ort.GetProperty("argmax_agreement_clear").GetDouble());
        Assert.True(ort.GetProperty("ppl_relative_difference").GetDouble() <= 0.01, ort.GetProperty("ppl_relative_difference").ToString());
        Assert.False(json.TryGetProperty("llama_cpp", out _));
    }

    [Fact]
    public void BenchVs_UnknownEngine_FailsWithOneClearLine()
    {
        using var temp = new TempFolder();
        CliRunner.AssertFails(["bench", Path.Combine(SharedData.RepositoryRoot, "models", "default"), "--vs", "llama.cpp,tensorrt"], "--vs must be llama.cpp, onnxruntime");
    }
}
