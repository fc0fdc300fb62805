#pragma warning disable OPENAI001 // Seed is marked experimental in the SDK.
using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net;
using System.Text.Json.Nodes;
using Minnow.Server;
using OpenAI;
using OpenAI.Chat;

namespace Minnow.Tests.Serving;

/// <summary>One server (batch 4, queue 16) for the client tests of a class.</summary>
public sealed class ServerFixture : IAsyncLifetime
{
    public MinnowServer Server { get; private set; } = null!;

    public HttpClient Http { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Server = await ServerHarness.StartAsync();
        Http = ServerHarness.Http(Server);
    }

    public async Task DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
    }

    public ChatClient Chat(string model = "default", string key = "unused") => new(model, new ApiKeyCredential(key), new OpenAIClientOptions
    {
        Endpoint = new Uri(Server.Url + "/v1"),
        RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
        NetworkTimeout = TimeSpan.FromSeconds(90),
    });
}

/// <summary>The server driven by the official OpenAI .NET SDK (and, for the legacy completions endpoint, plain HTTP).</summary>
[Collection("server")]
public sealed class OpenAiSdkTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private static readonly ChatMessage[] Question = [new SystemChatMessage("Answer as the scripture would."), new UserChatMessage("Who made the heaven and the earth?")];

    private static ChatCompletionOptions Greedy(int max = 24) => new() { Temperature = 0, MaxOutputTokenCount = max };

    [Fact]
    public async Task Chat_AnswersWithTheChatTemplateAndCountsUsage()
    {
        ChatCompletion answer = (await fixture.Chat().CompleteChatAsync(Question, Greedy())).Value;
        Assert.Equal(ChatMessageRole.Assistant, answer.Role);
        Assert.False(string.IsNullOrWhiteSpace(answer.Content[0].Text));
        Assert.Equal(ChatFinishReason.Length, answer.FinishReason);
        Assert.Equal(24, answer.Usage.OutputTokenCount);

        // The prompt tokens are those of the conversation rendered with the model's chat template.
        var (status, tokens, _) = await ServerHarness.PostAsync(fixture.Http, "tokenize", new
        {
            messages = new object[] { new { role = "system", content = "Answer as the scripture would." }, new { role = "user", content = "Who made the heaven and the earth?" } },
        });
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal((int)tokens["count"]!, answer.Usage.InputTokenCount);
        Assert.Equal(answer.Usage.InputTokenCount + 24, answer.Usage.TotalTokenCount);
    }

    [Fact]
    public async Task ChatStreaming_OneChunkPerTokenSameTextAsWhole()
    {
        var client = fixture.Chat();
        string whole = (await client.CompleteChatAsync(Question, Greedy(20))).Value.Content[0].Text;
        var text = new System.Text.StringBuilder();
        int contentChunks = 0;
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        await foreach (var update in client.CompleteChatStreamingAsync(Question, Greedy(20)))
        {
            foreach (var part in update.ContentUpdate)
            {
                text.Append(part.Text);
                contentChunks++;
            }

            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }

        Assert.Equal(whole, text.ToString());
        Assert.Equal(ChatFinishReason.Length, finish);
        Assert.NotNull(usage); // the SDK asks for stream_options.include_usage
        Assert.Equal(20, usage.OutputTokenCount);
        Assert.Equal(1 + 20, contentChunks); // the role chunk (empty content), then one chunk per token
    }

    [Fact]
    public async Task StopSequence_EndsBeforeItWithFinishReasonStop()
    {
        var client = fixture.Chat();
        string free = (await client.CompleteChatAsync(Question, Greedy(40))).Value.Content[0].Text;
        Assert.True(free.Length > 12, free);
        string stop = free.Substring(free.Length / 2, 3);
        string expected = free[..free.IndexOf(stop, StringComparison.Ordinal)];

        var options = Greedy(40);
        options.StopSequences.Add(stop);
        ChatCompletion stopped = (await client.CompleteChatAsync(Question, options)).Value;
        Assert.Equal(expected, stopped.Content.Count == 0 ? "" : stopped.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);
        Assert.True(stopped.Usage.OutputTokenCount < 40);

        // Streaming holds back text that may start a stop string, and never sends the stop string itself.
        var streamed = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in client.CompleteChatStreamingAsync(Question, options))
        {
            streamed.Append(string.Concat(update.ContentUpdate.Select(p => p.Text)));
            finish ??= update.FinishReason;
        }

        Assert.Equal(expected, streamed.ToString());
        Assert.Equal(ChatFinishReason.Stop, finish);
    }

    [Fact]
    public async Task Seed_SameSeedSameSample()
    {
        var client = fixture.Chat();
        ChatCompletionOptions Sampled(long seed) => new() { Temperature = 1.0f, TopP = 0.95f, MaxOutputTokenCount = 24, Seed = seed };
        var texts = new List<string>();
        foreach (long seed in new long[] { 7, 7, 8, 9, 10 })
        {
            texts.Add((await client.CompleteChatAsync(Question, Sampled(seed))).Value.Content[0].Text);
        }

        Assert.Equal(texts[0], texts[1]);
        Assert.True(texts.Skip(1).Distinct().Count() > 1, "different seeds all gave the same sample");
    }

    [Fact]
    public async Task Logprobs_ChosenTokensWithAlternatives()
    {
        var options = Greedy(6);
        options.IncludeLogProbabilities = true;
        options.TopLogProbabilityCount = 3;
        ChatCompletion answer = (await fixture.Chat().CompleteChatAsync(Question, options)).Value;
        Assert.Equal(6, answer.ContentTokenLogProbabilities.Count);
        Assert.Equal(answer.Content[0].Text, string.Concat(answer.ContentTokenLogProbabilities.Select(t => t.Token)));
        foreach (var token in answer.ContentTokenLogProbabilities)
        {
            Assert.Equal(3, token.TopLogProbabilities.Count);
            Assert.True(token.LogProbability <= 0);
            // Greedy: the chosen token is the most likely one.
            Assert.Equal(token.TopLogProbabilities[0].Token, token.Token);
            Assert.Equal(token.TopLogProbabilities[0].LogProbability, token.LogProbability, 4);
        }
    }

    [Fact]
    public async Task Errors_InOpenAiShapeWithTheRightStatus()
    {
        async Task<int> Status(ChatClient client, ChatCompletionOptions options, IEnumerable<ChatMessage>? messages = null)
        {
            var e = await Assert.ThrowsAsync<ClientResultException>(() => client.CompleteChatAsync(messages ?? Question, options));
            return e.Status;
        }

        Assert.Equal(404, await Status(fixture.Chat("no-such-model"), Greedy()));
        Assert.Equal(400, await Status(fixture.Chat(), new ChatCompletionOptions { Temperature = 5 }));
        Assert.Equal(400, await Status(fixture.Chat(), new ChatCompletionOptions { TopP = 0 }));
        string longText = string.Concat(Enumerable.Repeat("And it came to pass. ", 100));
        Assert.Equal(400, await Status(fixture.Chat(), Greedy(), [new UserChatMessage(longText)]));

        // The shape, for each status a user's mistake gets, through plain HTTP.
        var http = fixture.Http;
        foreach (var (body, param) in new (object Body, string? Param)[]
        {
            (new { model = "default", messages = new[] { new { role = "user", content = "hi" } }, n = 2 }, "n"),
            (new { model = "default", messages = new[] { new { role = "user", content = "hi" } }, temperature = "hot" }, "temperature"),
            (new { model = "default", messages = new[] { new { role = "robot", content = "hi" } } }, "messages[0].role"),
            (new { model = "default", messages = Array.Empty<object>() }, "messages"),
            (new { model = "default", messages = new[] { new { role = "user", content = longText } } }, null),
        })
        {
            var (status, json, _) = await ServerHarness.PostAsync(http, "v1/chat/completions", body);
            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.Equal(param, (string?)ServerHarness.AssertError(json)["param"]);
        }

        var (s404, j404, _) = await ServerHarness.PostAsync(http, "v1/completions", new { model = "gpt-4", prompt = "hi" });
        Assert.Equal(HttpStatusCode.NotFound, s404);
        Assert.Equal("model_not_found", (string?)ServerHarness.AssertError(j404)["code"]);

        var broken = await http.PostAsync("v1/completions", new StringContent("{\"prompt\": ", System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, broken.StatusCode);
        ServerHarness.AssertError(JsonNode.Parse(await broken.Content.ReadAsStringAsync())!);

        var unknown = await http.GetAsync("v1/embeddings");
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        ServerHarness.AssertError(JsonNode.Parse(await unknown.Content.ReadAsStringAsync())!);
    }

    [Fact]
    public async Task Completions_WholeStreamedAndTokenIdPrompts()
    {
        var http = fixture.Http;
        var request = new { model = "default", prompt = "In the beginning God", max_tokens = 12, temperature = 0, logprobs = 2 };
        var (status, whole, _) = await ServerHarness.PostAsync(http, "v1/completions", request);
        Assert.Equal(HttpStatusCode.OK, status);
        var choice = whole["choices"]![0]!;
        string text = (string)choice["text"]!;
        Assert.Equal("length", (string?)choice["finish_reason"]);
        Assert.Equal(12, (int)whole["usage"]!["completion_tokens"]!);
        Assert.Equal(12, choice["logprobs"]!["tokens"]!.AsArray().Count);
        Assert.Equal(text, string.Concat(choice["logprobs"]!["tokens"]!.AsArray().Select(t => (string)t!)));

        var streamed = await ServerHarness.StreamAsync(http, "v1/completions", new
        {
            model = "default",
            prompt = "In the beginning God",
            max_tokens = 12,
            temperature = 0,
            stream = true,
            stream_options = new { include_usage = true },
        });
        Assert.True(streamed.Done);
        Assert.Equal(text, streamed.Text(chat: false));
        Assert.Equal(12, streamed.TokenChunks(chat: false));
        Assert.Equal("length", streamed.FinishReason);
        Assert.Equal(12, (int)streamed.Usage!["completion_tokens"]!);

        // The same prompt as token ids gives the same text.
        var (_, ids, _) = await ServerHarness.PostAsync(http, "tokenize", new { content = "In the beginning God", add_special = true });
        var (_, byIds, _) = await ServerHarness.PostAsync(http, "v1/completions", new { prompt = ids["tokens"], max_tokens = 12, temperature = 0 });
        Assert.Equal(text, (string)byIds["choices"]![0]!["text"]!);

        var (_, back, _) = await ServerHarness.PostAsync(http, "detokenize", new { tokens = ids["tokens"] });
        Assert.Equal("In the beginning God", (string)back["content"]!);
    }

    [Fact]
    public async Task ModelsHealthAndMetrics()
    {
        var http = fixture.Http;
        var models = JsonNode.Parse(await http.GetStringAsync("v1/models"))!;
        Assert.Equal("default", (string?)models["data"]![0]!["id"]);
        Assert.Equal("ok", (string?)JsonNode.Parse(await http.GetStringAsync("health"))!["status"]);

        await fixture.Chat().CompleteChatAsync(Question, Greedy(4));
        var metrics = await ServerHarness.SettledMetricsAsync(http);
        Assert.True(ServerHarness.Metric(metrics, "minnow_time_to_first_token_seconds_count") >= 1);
        Assert.True(ServerHarness.Metric(metrics, "minnow_generation_tokens_total") >= 4);
        Assert.True(ServerHarness.Metric(metrics, "minnow_kv_pages_total") > 0);
        Assert.True(ServerHarness.Metric(metrics, "minnow_http_requests_total", "model=\"default\",status=\"200\"") >= 1);
        Assert.True(ServerHarness.Metric(metrics, "minnow_requests_finished_total", "model=\"default\",finish_reason=\"length\"") >= 1);
    }
}
