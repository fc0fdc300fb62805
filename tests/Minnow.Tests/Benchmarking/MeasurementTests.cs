using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Minnow.Benchmarking;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;
using Minnow.Tests.Cli;
using CliRunner = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Benchmarking;

/// <summary>
/// The one speed and memory measurement (<see cref="EngineSpeed"/>, <c>check</c>): the conditions travel with every
/// figure, the engine really runs them, and check's memory is that of a process like the one generate runs.
/// </summary>
public sealed class MeasurementTests
{
    private static string DefaultModel => Path.Combine(SharedData.RepositoryRoot!, "models", "default");

    [Fact]
    public void Spread_IsTheMedianAndThe10thAnd90thPercentiles()
    {
        var spread = Spread.Of(Enumerable.Range(1, 11).Select(i => (double)i).Reverse().ToArray());
        Assert.Equal(new Spread(6, 2, 10), spread);
        Assert.Equal("6.0 (p10–p90 2.0–10.0)", spread.Describe("0.0"));
    }

    [Fact]
    public void EngineSpeed_StatesItsConditions_AndRunsThemThroughTheEngine()
    {
        using var pool = new WorkerPool(1);
        using var model = ModelLoader.LoadModel(DefaultModel, pool);
        var ids = EngineSpeed.Ids(model.Config, 40);
        var conditions = new MeasureConditions { Batch = 4, PromptTokens = 40, GeneratedTokens = 9, Threads = 1, Runs = 2, StepTokens = 16 };
        var figures = EngineSpeed.Measure(model, conditions, ids);

        Assert.Same(conditions, figures.Conditions);
        Assert.True(figures.DecodeMsPerStep > 0 && figures.PrefillTokensPerSecond > 0 && figures.TimeToFirstTokenMs > 0);
        Assert.InRange(figures.StepMs.Median, figures.StepMs.Low, figures.StepMs.High);
        Assert.Equal(4 * figures.DecodeTokensPerSecond, figures.AggregateTokensPerSecond, 6);
        string text = figures.Describe();
        foreach (string part in new[] { "batch 4", "prompt 40 + 9 generated", "context filled to 49", "1 thread,", "KV f32", "chunks of 16", "1 warm-up", "median of 2 runs" })
        {
            Assert.Contains(part, text, StringComparison.Ordinal);
        }

        // What is written is what is read back (the check's child hands its figures over as JSON).
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            figures.WriteProperties(w);
            w.WriteEndObject();
        }

        using var doc = JsonDocument.Parse(buffer.ToArray());
        Assert.Equal(figures, SpeedFigures.Read(doc.RootElement));

        // A context the model does not have is refused before anything runs.
        var tooLong = conditions with { Batch = 1, PromptTokens = model.Config.MaxPositions };
        Assert.Contains("exceed the model's context", Assert.Throws<MinnowException>(() => EngineSpeed.Measure(model, tooLong, EngineSpeed.Ids(model.Config, model.Config.MaxPositions))).Message);
    }

    /// <summary>
    /// check's peak RSS is that of a process that loads the model once and fills the cache to the context — the same
    /// as a generate process filling the same context — and splits into weights, KV cache and the rest.
    /// </summary>
    [Fact]
    public async Task Check_PeakMemoryMatchesAGenerateProcessFillingTheSameContext()
    {
        using var temp = new TempFolder();
        string gguf = temp.File("q4.gguf");
        Assert.Equal(0, CliRunner.Run("export", DefaultModel, "--format", "gguf", "--type", "q4_0", "-o", gguf).ExitCode);
        const int context = 128;
        var check = CliRunner.Run("check", gguf, "--ctx", context.ToString(CultureInfo.InvariantCulture), "-t", "1", "--json");
        Assert.True(check.ExitCode == 0, check.ToString());
        var json = check.Json();
        var memory = json.GetProperty("memory");
        long peak = memory.GetProperty("peak_rss_bytes").GetInt64();
        long weights = memory.GetProperty("weight_bytes").GetInt64();
        long kv = memory.GetProperty("kv_cache_bytes").GetInt64();
        Assert.Equal(peak, weights + kv + memory.GetProperty("overhead_bytes").GetInt64());
        Assert.InRange(weights, new FileInfo(gguf).Length / 2, new FileInfo(gguf).Length);
        var config = ModelLoader.LoadModel(gguf).Config;
        Assert.Equal(KvPagePool.BytesPerPage(config, DType.F32) * ((context + KvPagePool.DefaultPageSize - 1) / KvPagePool.DefaultPageSize), kv);
        var batch1 = json.GetProperty("batch1").GetProperty("conditions");
        Assert.Equal(context, batch1.GetProperty("context_fill").GetInt32());
        Assert.Equal(1, batch1.GetProperty("threads").GetInt32());
        Assert.Equal(4, json.GetProperty("batch4").GetProperty("conditions").GetProperty("batch").GetInt32());

        // The fallback ran in a process of its own, over many positions (its F32 copy is not in the peak above).
        string fallback = json.GetProperty("fallback").GetProperty("figure").GetString()!;
        Assert.Contains($"over {Math.Min(DeploymentCheckPositions, config.MaxPositions)} positions", fallback, StringComparison.Ordinal);

        // generate in its own process, the same prompt length and generated tokens, one thread.
        int generated = batch1.GetProperty("generated_tokens").GetInt32();
        string ids = string.Join(',', EngineSpeed.Ids(config, context - generated));
        using var process = Process.Start(ProcessTests.StartInfo(["generate", gguf, "--prompt-ids", ids, "-n", generated.ToString(CultureInfo.InvariantCulture),
            "--temperature", "0", "--ignore-eos", "-c", context.ToString(CultureInfo.InvariantCulture), "-t", "1", "--json"]))!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await process.WaitForExitAsync(timeout.Token);
        Assert.True(process.ExitCode == 0, await stderr);
        using var generate = JsonDocument.Parse(await stdout);
        long generatePeak = generate.RootElement.GetProperty("peak_memory_bytes").GetInt64();
        Assert.Equal(generated, generate.RootElement.GetProperty("generated_tokens").GetInt32());
        Assert.InRange(peak, generatePeak * 0.85, generatePeak * 1.15);
    }

    private const int DeploymentCheckPositions = Minnow.Optimization.DeploymentCheck.FallbackPositions;
}
