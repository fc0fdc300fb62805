using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net;
using System.Text.Json.Nodes;
using Minnow.Server;
using Minnow.Tests.Cli;
using Minnow.Tests.Training;
using OpenAI;
using OpenAI.Chat;
using Xunit.Abstractions;
using CliHarness = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Serving;

/// <summary>Two real adapters trained by <c>minnow finetune</c> on the default model, shared by the adapter tests.</summary>
public sealed class TrainedAdaptersFixture : IDisposable
{
    public TrainedAdaptersFixture()
    {
        File.WriteAllText(Folder.File("log.txt"), LoraFinetuneTests.ShipsLog());
        // A second domain: the same log with its words reversed, so the two adapters pull the base different ways.
        File.WriteAllText(Folder.File("reversed.txt"), string.Join('\n', LoraFinetuneTests.ShipsLog(60).Split('\n').Select(l => string.Join(' ', l.Split(' ').Reverse()))));
        Train("log.txt", ShipsLog, "q_proj,v_proj", "1");
        Train("reversed.txt", Reversed, "q_proj,k_proj,v_proj,o_proj", "2");
    }

    public TempFolder Folder { get; } = new();

    public string ShipsLog => Folder.File("ships-log");

    public string Reversed => Folder.File("reversed");

    public void Dispose() => Folder.Dispose();

    private static void Train(string data, string output, string targets, string seed)
    {
        var result = CliHarness.Run("finetune", ServerHarness.ModelPath, "--data", Path.Combine(Path.GetDirectoryName(output)!, data), "--out", output,
            "--targets", targets, "--steps", "30", "--batch", "4", "--ctx", "64", "--lr", "0.003", "--seed", seed);
        Assert.True(result.ExitCode == 0, result.ToString());
    }
}

/// <summary>
/// Adapters in <c>minnow serve</c>: loaded at start or at run time (POST /v1/adapters), picked per request with
/// <c>model: "BASE:NAME"</c>, unloaded (DELETE) or evicted within a memory budget, and batched with base requests.
/// </summary>
[Collection("server")]
public sealed class AdapterServingTests(TrainedAdaptersFixture adapters, ITestOutputHelper output) : IClassFixture<TrainedAdaptersFixture>
{
    private static readonly string[] Prompts = ["In the beginning", "And the LORD said unto Moses", "Day 12. Wind", "Blessed are they that"];

    private static object Completion(string model, string prompt, int max, bool stream = true) =>
        new { model, prompt, max_tokens = max, temperature = 0, ignore_eos = true, stream };

    private static async Task<MinnowServer> Start(Dictionary<string, string>? startAdapters = null, long budget = 64L << 20, int maxBatch = 8) =>
        await StartServer(new ServerOptions
        {
            ModelPath = ServerHarness.ModelPath,
            Port = 0,
            MaxBatch = maxBatch,
            KvBudgetBytes = 64L << 20,
            Adapters = startAdapters ?? [],
            AdapterBudgetBytes = budget,
        });

    internal static async Task<MinnowServer> StartServer(ServerOptions options)
    {
        var server = await MinnowServer.StartAsync(options);
        await server.Ready.WaitAsync(TimeSpan.FromSeconds(90));
        return server;
    }

    private static ChatClient Chat(MinnowServer server, string model) => new(model, new ApiKeyCredential("unused"), new OpenAIClientOptions
    {
        Endpoint = new Uri(server.Url + "/v1"),
        RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
        NetworkTimeout = TimeSpan.FromSeconds(90),
    });

    private static async Task<string> Alone(HttpClient http, string model, string prompt, int max)
    {
        var r = await ServerHarness.StreamAsync(http, "v1/completions", Completion(model, prompt, max));
        Assert.Equal(HttpStatusCode.OK, r.Status);
        Assert.True(r.Done);
        return r.Text(chat: false);
    }

    [Fact]
    public async Task AFinetunedAdapter_LoadedIntoARunningServer_ServesTheNextRequest_WhileFourBaseStreamsRunOnUnchanged()
    {
        long adapterBytes = new FileInfo(Path.Combine(adapters.ShipsLog, "adapter_model.safetensors")).Length;
        Assert.True(adapterBytes < 2_000_000, $"adapter is {adapterBytes} bytes");
        await using var server = await Start();
        using var http = ServerHarness.Http(server);
        const int Long = 64;
        var solo = new List<string>();
        foreach (string p in Prompts)
        {
            solo.Add(await Alone(http, "default", p, Long));
        }

        // Four long base streams; the adapter is loaded once each has produced tokens.
        var started = new CountdownEvent(Prompts.Length);
        var streams = Prompts.Select(p => Task.Run(async () =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = ServerHarness.Json(Completion("default", p, Long)) };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            var text = new System.Text.StringBuilder();
            bool signalled = false, done = false;
            while (await reader.ReadLineAsync() is { } line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal))
                {
                    continue;
                }

                if (line == "data: [DONE]")
                {
                    done = true;
                    break;
                }

                var e = JsonNode.Parse(line[6..])!;
                Assert.Null(e["error"]);
                text.Append((string?)e["choices"]![0]!["text"]);
                if (!signalled)
                {
                    signalled = true;
                    started.Signal();
                }
            }

            Assert.True(done, "the stream ended without [DONE]");
            return text.ToString();
        })).ToArray();

        Assert.True(started.Wait(TimeSpan.FromSeconds(60)), "the base streams did not start");
        var (status, loaded, _) = await ServerHarness.PostAsync(http, "v1/adapters", new { name = "log", path = adapters.ShipsLog });
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("default:log", (string?)loaded["id"]);
        int runningWhenLoaded = streams.Count(s => !s.IsCompleted);

        // The next request, through the official SDK, is served with the adapter: the ship's-log style, not the base's.
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 24 };
        ChatMessage[] ask = [new UserChatMessage("Day 12. Wind")];
        string withAdapter = (await Chat(server, "default:log").CompleteChatAsync(ask, options)).Value.Content[0].Text;
        string withoutAdapter = (await Chat(server, "default").CompleteChatAsync(ask, options)).Value.Content[0].Text;
        output.WriteLine($"base: {withoutAdapter}\nadapter: {withAdapter}\nbase streams still running when the adapter was loaded: {runningWhenLoaded}");
        Assert.NotEqual(withoutAdapter, withAdapter);
        Assert.True(runningWhenLoaded > 0, "the adapter was loaded after the base streams had finished");

        string[] batched = await Task.WhenAll(streams);
        for (int i = 0; i < Prompts.Length; i++)
        {
            Assert.Equal(solo[i], batched[i]);
        }

        var models = JsonNode.Parse(await http.GetStringAsync("v1/models"))!["data"]!.AsArray().Select(m => (string)m!["id"]!).ToArray();
        Assert.Equal(["default", "default:log"], models);
    }

    [Fact]
    public async Task SequencesWithDifferentAdapters_InOneBatch_GiveTheTokensEachGivesAlone()
    {
        await using var server = await Start(new() { ["log"] = adapters.ShipsLog, ["rev"] = adapters.Reversed }, maxBatch: 4);
        using var http = ServerHarness.Http(server);
        (string Model, string Prompt)[] mix = [("default", Prompts[0]), ("default:log", Prompts[2]), ("default:rev", Prompts[2]), ("default:log", Prompts[1])];
        const int Max = 40;
        var alone = new List<string>();
        foreach (var (model, prompt) in mix)
        {
            alone.Add(await Alone(http, model, prompt, Max));
        }

        // Each adapter changes the base's answer to the same prompt, and the two adapters differ.
        string baseOnSamePrompt = await Alone(http, "default", Prompts[2], Max);
        Assert.NotEqual(baseOnSamePrompt, alone[1]);
        Assert.NotEqual(baseOnSamePrompt, alone[2]);
        Assert.NotEqual(alone[1], alone[2]);
        for (int round = 0; round < 2; round++)
        {
            string[] together = await Task.WhenAll(mix.Select(m => Alone(http, m.Model, m.Prompt, Max)));
            Assert.Equal(alone, together);
        }
    }

    [Fact]
    public async Task UnloadingAnAdapter_LeavesItsRunningRequestUnchanged_AndLaterRequestsAre404()
    {
        await using var server = await Start(new() { ["log"] = adapters.ShipsLog });
        using var http = ServerHarness.Http(server);
        string reference = await Alone(http, "default:log", Prompts[2], 100);
        var running = Task.Run(() => ServerHarness.StreamAsync(http, "v1/completions", Completion("default:log", Prompts[2], 100)));
        await Task.Delay(100);
        var deleted = await http.DeleteAsync("v1/adapters/log");
        Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        var result = await running;
        Assert.True(result.Done);
        Assert.Equal(reference, result.Text(chat: false));

        var (status, body, _) = await ServerHarness.PostAsync(http, "v1/completions", Completion("default:log", "x", 4, stream: false));
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Contains("no adapter 'log'", (string?)ServerHarness.AssertError(body)["message"]);
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync("v1/adapters/log")).StatusCode);
    }

    [Fact]
    public async Task PastTheBudget_TheLeastRecentlyUsedAdapterIsUnloaded()
    {
        long one;
        using (var model = Minnow.Loading.ModelLoader.LoadModel(ServerHarness.ModelPath))
        {
            one = Minnow.Models.LoraAdapter.Load(adapters.ShipsLog, model.Config).MemoryBytes;
        }

        await using var server = await Start(new() { ["a"] = adapters.ShipsLog }, budget: (one * 5) / 2);
        using var http = ServerHarness.Http(server);
        Assert.Equal(HttpStatusCode.OK, (await ServerHarness.PostAsync(http, "v1/adapters", new { name = "b", path = adapters.ShipsLog })).Status);
        Assert.Equal(HttpStatusCode.OK, (await ServerHarness.PostAsync(http, "v1/completions", Completion("default:a", "Day", 2, stream: false))).Status); // a is now the most recent
        var (status, loaded, _) = await ServerHarness.PostAsync(http, "v1/adapters", new { name = "c", path = adapters.ShipsLog });
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(["b"], loaded["evicted"]!.AsArray().Select(e => (string)e!).ToArray());
        var list = JsonNode.Parse(await http.GetStringAsync("v1/adapters"))!;
        Assert.Equal(["c", "a"], list["data"]!.AsArray().Select(e => (string)e!["name"]!).ToArray());
        Assert.True((long)list["resident_bytes"]! <= (long)list["budget_bytes"]!);
        Assert.Equal(HttpStatusCode.NotFound, (await ServerHarness.PostAsync(http, "v1/completions", Completion("default:b", "Day", 2, stream: false))).Status);
    }

    [Fact]
    public async Task BadAdapterRequests_AreOneLineErrorsInOpenAisShape()
    {
        await using var server = await Start();
        using var http = ServerHarness.Http(server);
        var (status, body, _) = await ServerHarness.PostAsync(http, "v1/adapters", new { name = "x", path = "/nonexistent/adapter" });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("adapter folder not found", (string?)ServerHarness.AssertError(body)["message"]);
        (status, body, _) = await ServerHarness.PostAsync(http, "v1/adapters", new { name = "bad name!", path = adapters.ShipsLog });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.DoesNotContain('\n', (string)ServerHarness.AssertError(body)["message"]!);
        (status, body, _) = await ServerHarness.PostAsync(http, "v1/adapters", new { name = "x" });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("path", (string?)ServerHarness.AssertError(body)["param"]);
        (status, body, _) = await ServerHarness.PostAsync(http, "v1/completions", Completion("other:log", "x", 2, stream: false));
        Assert.Equal(HttpStatusCode.NotFound, status);
        ServerHarness.AssertError(body);
    }
}
