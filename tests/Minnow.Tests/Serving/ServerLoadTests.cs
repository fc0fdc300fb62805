using System.Net;
using System.Text.Json.Nodes;
using Minnow.Server;
using Minnow.Serving;

namespace Minnow.Tests.Serving;

/// <summary>The server under concurrency, overload, disconnects and shutdown, each against its own real server.</summary>
[Collection("server")]
public sealed class ServerLoadTests
{
    private static readonly string[] Prompts =
    [
        "In the beginning God created",
        "And the LORD spake unto Moses, saying",
        "Blessed are the meek",
        "The LORD is my shepherd",
        "And it came to pass",
        "Now the serpent was more subtil",
        "For God so loved the world",
        "Then Jesus said unto them",
    ];

    private static object Completion(string prompt, int maxTokens, bool stream = true) => new
    {
        model = "default",
        prompt,
        max_tokens = maxTokens,
        temperature = 0,
        ignore_eos = true,
        stream,
        stream_options = new { include_usage = true },
    };

    [Fact]
    public async Task Concurrent_GreedyStreamsEqualTheSameRequestAlone()
    {
        await using var server = await ServerHarness.StartAsync(maxBatch: 8, maxQueue: 64);
        using var http = ServerHarness.Http(server);
        var alone = new Dictionary<string, string>();
        foreach (string prompt in Prompts)
        {
            var one = await ServerHarness.StreamAsync(http, "v1/completions", Completion(prompt, 24));
            alone[prompt] = one.Text(chat: false);
        }

        foreach (int streams in new[] { 4, 16 })
        {
            var results = await Task.WhenAll(Enumerable.Range(0, streams).Select(i =>
                ServerHarness.StreamAsync(http, "v1/completions", Completion(Prompts[i % Prompts.Length], 24))));
            for (int i = 0; i < streams; i++)
            {
                Assert.Equal(HttpStatusCode.OK, results[i].Status);
                Assert.True(results[i].Done);
                Assert.Equal(alone[Prompts[i % Prompts.Length]], results[i].Text(chat: false));
                Assert.Equal(24, (int)results[i].Usage!["completion_tokens"]!);
            }
        }
    }

    [Fact]
    public async Task Overload_Only200And429_EveryAcceptedStreamComplete()
    {
        await using var server = await ServerHarness.StartAsync(maxBatch: 4, maxQueue: 16);
        using var http = ServerHarness.Http(server);
        var results = await Task.WhenAll(Enumerable.Range(0, 64).Select(i =>
            ServerHarness.StreamAsync(http, "v1/completions", Completion(Prompts[i % Prompts.Length], 16))));
        var accepted = results.Where(r => r.Status == HttpStatusCode.OK).ToList();
        var rejected = results.Where(r => r.Status == HttpStatusCode.TooManyRequests).ToList();
        Assert.Equal(64, accepted.Count + rejected.Count);
        Assert.InRange(accepted.Count, 16, 64); // at least a full queue (all 64 may arrive before the engine admits any)
        Assert.NotEmpty(rejected);
        foreach (var r in rejected)
        {
            Assert.Equal("1", r.RetryAfter);
            Assert.Equal("queue_full", (string?)ServerHarness.AssertError(JsonNode.Parse(r.ErrorBody!)!)["code"]);
        }

        foreach (var r in accepted)
        {
            Assert.True(r.Done, "a stream ended without [DONE]");
            Assert.Equal("length", r.FinishReason);
            Assert.Equal(16, r.TokenChunks(chat: false));
            Assert.Equal(16, (int)r.Usage!["completion_tokens"]!);
        }

        var metrics = await ServerHarness.SettledMetricsAsync(http);
        Assert.Equal(0, ServerHarness.Metric(metrics, "minnow_kv_pages_used"));
        Assert.Equal(rejected.Count, ServerHarness.Metric(metrics, "minnow_http_requests_total", "model=\"default\",status=\"429\""));
        Assert.Equal(0, ServerHarness.Metric(metrics, "minnow_http_requests_total", "model=\"default\",status=\"500\""));
    }

    [Fact]
    public async Task Disconnects_LeaveNoPagesAndNoRunningSequences()
    {
        await using var server = await ServerHarness.StartAsync(maxBatch: 8, maxQueue: 128);
        using var http = ServerHarness.Http(server);
        // Each client reads the role chunk and one token, then hangs up with up to 90 tokens still to come.
        var results = await Task.WhenAll(Enumerable.Range(0, 100).Select(i => ServerHarness.StreamAsync(http, "v1/chat/completions", new
        {
            model = "default",
            messages = new[] { new { role = "user", content = Prompts[i % Prompts.Length] + " " + i } },
            max_tokens = 90,
            temperature = 0,
            ignore_eos = true,
            stream = true,
        }, dropAfterEvents: 2)));
        Assert.All(results, r => Assert.Equal(HttpStatusCode.OK, r.Status));
        Assert.All(results, r => Assert.False(r.Done));

        const string cancelled = "model=\"default\",finish_reason=\"cancelled\"";
        var metrics = await ServerHarness.SettledMetricsAsync(http, m => ServerHarness.Metric(m, "minnow_requests_finished_total", cancelled) == 100);
        Assert.Equal(0, ServerHarness.Metric(metrics, "minnow_requests_running"));
        Assert.Equal(0, ServerHarness.Metric(metrics, "minnow_requests_waiting"));
        Assert.Equal(0, ServerHarness.Metric(metrics, "minnow_kv_pages_used"));
        Assert.Equal(100, ServerHarness.Metric(metrics, "minnow_requests_finished_total", cancelled));
        Assert.True(ServerHarness.Metric(metrics, "minnow_generation_tokens_total") < 100 * 90);

        // The server still serves.
        var after = await ServerHarness.StreamAsync(http, "v1/completions", Completion(Prompts[0], 8));
        Assert.True(after.Done);
    }

    [Fact]
    public async Task Shutdown_UnderLoad_LosesNoAcceptedRequest()
    {
        var server = await ServerHarness.StartAsync(maxBatch: 4, maxQueue: 16);
        using var http = ServerHarness.Http(server);
        var running = Enumerable.Range(0, 12).Select(i =>
            ServerHarness.StreamAsync(http, "v1/completions", Completion(Prompts[i % Prompts.Length], 48))).ToList();
        // Wait until all twelve are in the engine (running or queued).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (server.Engine!.Running + server.Engine.Waiting < 12 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(5);
        }

        var stopping = server.StopAsync(TimeSpan.FromSeconds(60));
        // While draining: not ready, and new requests are turned away with 503.
        var health = await http.GetAsync("health");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        var (status, body, _) = await ServerHarness.PostAsync(http, "v1/completions", Completion(Prompts[0], 4, stream: false));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        ServerHarness.AssertError(body);

        var results = await Task.WhenAll(running);
        await stopping;
        Assert.All(results, r =>
        {
            Assert.Equal(HttpStatusCode.OK, r.Status);
            Assert.True(r.Done);
            Assert.Equal("length", r.FinishReason);
            Assert.Equal(48, (int)r.Usage!["completion_tokens"]!);
        });
        await server.DisposeAsync();
    }

    [Fact]
    public async Task ApiKey_401WithoutIt_HealthAndMetricsOpen()
    {
        await using var server = await ServerHarness.StartAsync(apiKey: "s3cret");
        using var anonymous = ServerHarness.Http(server);
        using var wrong = ServerHarness.Http(server, "wrong");
        using var right = ServerHarness.Http(server, "s3cret");
        var request = Completion(Prompts[0], 4, stream: false);
        var (s1, b1, _) = await ServerHarness.PostAsync(anonymous, "v1/completions", request);
        Assert.Equal(HttpStatusCode.Unauthorized, s1);
        Assert.Equal("invalid_api_key", (string?)ServerHarness.AssertError(b1)["code"]);
        Assert.Equal(HttpStatusCode.Unauthorized, (await wrong.GetAsync("v1/models")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await ServerHarness.PostAsync(right, "v1/completions", request)).Status);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("health")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("metrics")).StatusCode);

        var sdk = new OpenAI.Chat.ChatClient("default", new System.ClientModel.ApiKeyCredential("wrong"), new OpenAI.OpenAIClientOptions
        {
            Endpoint = new Uri(server.Url + "/v1"),
            RetryPolicy = new System.ClientModel.Primitives.ClientRetryPolicy(0),
        });
        var e = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() => sdk.CompleteChatAsync("hello"));
        Assert.Equal(401, e.Status);
    }

    [Fact]
    public async Task ModelThatFailsToLoad_Health503AndRequests503()
    {
        using var temp = new Minnow.Tests.Cli.TempFolder();
        string broken = temp.File("broken.gguf");
        File.WriteAllText(broken, "not a model");
        await using var server = await MinnowServer.StartAsync(new ServerOptions { ModelPath = broken, Port = 0 });
        await Assert.ThrowsAnyAsync<Exception>(() => server.Ready);
        using var http = ServerHarness.Http(server);
        var health = await http.GetAsync("health");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        var (status, body, _) = await ServerHarness.PostAsync(http, "v1/completions", new { prompt = "hi" });
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        ServerHarness.AssertError(body);
    }

    [Fact]
    public async Task ServeCommand_BadFlagsAndABusyPort_OneLineErrors()
    {
        await using var server = await ServerHarness.StartAsync();
        string port = new Uri(server.Url).Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        Minnow.Tests.Cli.Cli.AssertCleanError(Minnow.Tests.Cli.Cli.Run("serve", ServerHarness.ModelPath, "--port", port), port);
        Minnow.Tests.Cli.Cli.AssertCleanError(Minnow.Tests.Cli.Cli.Run("serve", ServerHarness.ModelPath, "--port", "0", "--max-batch", "0"), "--max-batch");
        Minnow.Tests.Cli.Cli.AssertCleanError(Minnow.Tests.Cli.Cli.Run("serve", ServerHarness.ModelPath, "--port", "0", "--kv-budget", "lots"), "--kv-budget");
        Minnow.Tests.Cli.Cli.AssertCleanError(Minnow.Tests.Cli.Cli.Run("loadtest", server.Url, "--concurrency", "4"), "--requests");
    }

    [Fact]
    public async Task LoadTester_MeasuresAStreamingLoad()
    {
        await using var server = await ServerHarness.StartAsync(maxBatch: 4, maxQueue: 16);
        var result = await LoadTester.RunAsync(new LoadTestOptions
        {
            Url = new Uri(server.Url + "/"),
            Concurrency = 4,
            Requests = 12,
            MaxTokens = 16,
        });
        Assert.Equal(12, result.Completed);
        Assert.Equal(0, result.Errors);
        Assert.Equal(0, result.Rejected);
        Assert.Equal(12 * 16, result.OutputTokens);
        Assert.True(result.TtftP50 > 0 && result.TtftP99 >= result.TtftP50);
        Assert.True(result.InterTokenP50 > 0 && result.InterTokenP99 >= result.InterTokenP50);
        Assert.True(result.OutputTokensPerSecond > 0);
    }
}
