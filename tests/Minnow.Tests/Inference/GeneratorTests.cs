using Minnow.Inference;
using Minnow.Loading;
using Minnow.Tests.Models;

namespace Minnow.Tests.Inference;

public class GeneratorTests
{
    private static string Letter(int id) => ((char)('a' + (id % 26))).ToString();

    [Fact]
    public void StreamedTextEqualsTheResultAndStopsBeforeAStopString()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        using var session = new Engine(model, EngineOptions.ForOneSequence(model.Config, 64));
        var free = Generator.Generate(session, golden.InputIds[..8], new GenerationOptions { MaxTokens = 16, Sampling = SamplingOptions.Greedy }, Letter);
        Assert.Equal(16, free.TokenIds.Length);
        Assert.Equal(string.Concat(free.TokenIds.Select(Letter)), free.Text);

        // Stop at the text of tokens 5..6 of the free run: the output must end right before it.
        string stop = free.Text.Substring(5, 2);
        int expectedLength = free.Text.IndexOf(stop, StringComparison.Ordinal);
        var streamed = new System.Text.StringBuilder();
        var stopped = Generator.Generate(session, golden.InputIds[..8],
            new GenerationOptions { MaxTokens = 16, Sampling = SamplingOptions.Greedy, StopStrings = [stop] }, Letter, s => streamed.Append(s));
        Assert.Equal("stop_string", stopped.StopReason);
        Assert.Equal(free.Text[..expectedLength], stopped.Text);
        Assert.Equal(stopped.Text, streamed.ToString());
    }

    [Fact]
    public void StopTokenEndsGenerationWithoutBeingEmitted()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        using var session = new Engine(model, EngineOptions.ForOneSequence(model.Config, 64));
        var free = Generator.Generate(session, golden.InputIds[..8], new GenerationOptions { MaxTokens = 10, Sampling = SamplingOptions.Greedy });
        int stopToken = free.TokenIds[4];
        int firstAt = Array.IndexOf(free.TokenIds, stopToken);
        var stopped = Generator.Generate(session, golden.InputIds[..8],
            new GenerationOptions { MaxTokens = 10, Sampling = SamplingOptions.Greedy, StopTokens = [stopToken] });
        Assert.Equal("stop_token", stopped.StopReason);
        Assert.Equal(free.TokenIds[..firstAt], stopped.TokenIds);
    }

    [Fact]
    public void APromptLongerThanTheContextIsAClearError()
    {
        var golden = GoldenReference.Load("llama");
        if (golden is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        using var session = new Engine(model, EngineOptions.ForOneSequence(model.Config, 16));
        var error = Assert.Throws<MinnowException>(() =>
            Generator.Generate(session, golden.InputIds, new GenerationOptions { MaxTokens = 4, Sampling = SamplingOptions.Greedy }));
        Assert.Contains("context holds 16", error.Message);
    }

    [Fact]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        var golden = GoldenReference.Load("qwen2");
        if (golden is null)
        {
            return;
        }

        float[] Run(int threads)
        {
            using var pool = new Minnow.Tensors.WorkerPool(threads);
            using var model = ModelLoader.LoadModel(golden.WeightsFile("f32"), pool);
            using var session = new InferenceSession(model, 64, batchSize: 7);
            var all = new List<float>();
            session.Evaluate(golden.InputIds, (_, _, logits) => all.AddRange(logits.ToArray()));
            return all.ToArray();
        }

        Assert.Equal(Run(1), Run(2));
    }
}
