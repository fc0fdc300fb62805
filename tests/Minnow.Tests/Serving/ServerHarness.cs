using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Minnow.Server;

namespace Minnow.Tests.Serving;

/// <summary>Server tests share the machine's two cores: they run one class at a time.</summary>
[CollectionDefinition("server", DisableParallelization = true)]
public sealed class ServerCollection;

/// <summary>Real servers on free loopback ports, serving models/default, and a plain HTTP client for them.</summary>
public static class ServerHarness
{
    public static string ModelPath => Path.Combine(SharedData.RepositoryRoot, "models", "default");

    public static async Task<MinnowServer> StartAsync(int maxBatch = 4, int maxQueue = 16, string? apiKey = null)
    {
        var server = await MinnowServer.StartAsync(new ServerOptions
        {
            ModelPath = ModelPath,
            Port = 0,
            MaxBatch = maxBatch,
            MaxQueue = maxQueue,
            ApiKey = apiKey,
            KvBudgetBytes = 64L << 20,
            DrainDeadline = TimeSpan.FromSeconds(60),
        });
        await server.Ready.WaitAsync(TimeSpan.FromSeconds(60));
        return server;
    }

    public static HttpClient Http(MinnowServer server, string? apiKey = null)
    {
        var http = new HttpClient(new SocketsHttpHandler
        {
            MaxConnectionsPerServer = 256,
            // A response disposed before its end closes the connection at once (a client that goes away), instead
            // of being drained in the background for reuse.
            MaxResponseDrainSize = 0,
        })
        {
            BaseAddress = new Uri(server.Url + "/"),
            Timeout = TimeSpan.FromSeconds(90),
        };
        if (apiKey is not null)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        }

        return http;
    }

    public static StringContent Json(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");

    public static async Task<(HttpStatusCode Status, JsonNode Body, HttpResponseMessage Response)> PostAsync(HttpClient http, string path, object body)
    {
        var response = await http.PostAsync(path, Json(body));
        string text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, JsonNode.Parse(text)!, response);
    }

    /// <summary>Asserts OpenAI's error shape and returns the error object.</summary>
    public static JsonNode AssertError(JsonNode body)
    {
        var error = body["error"];
        Assert.NotNull(error);
        Assert.False(string.IsNullOrEmpty((string?)error["message"]));
        Assert.False(string.IsNullOrEmpty((string?)error["type"]));
        Assert.True(error.AsObject().ContainsKey("param") && error.AsObject().ContainsKey("code"));
        return error;
    }

    /// <summary>One streamed request, read to its end: the status, and each event's JSON (null for a non-200).</summary>
    public sealed record StreamResult(HttpStatusCode Status, string? RetryAfter, List<JsonNode> Events, bool Done, string? ErrorBody)
    {
        public string Text(bool chat) => string.Concat(Events.Select(e => Piece(e, chat)));

        public string? FinishReason => Events.Select(e => (string?)e["choices"]?.AsArray().FirstOrDefault()?["finish_reason"]).LastOrDefault(f => f is not null);

        public JsonNode? Usage => Events.LastOrDefault(e => e["usage"] is JsonObject)?["usage"];

        /// <summary>Chunks that carry a generated token (not the role chunk, the finish chunk or the usage chunk).</summary>
        public int TokenChunks(bool chat) => Events.Count(e => e["choices"]?.AsArray().FirstOrDefault() is { } c && c["finish_reason"] is null &&
            (chat ? c["delta"]?["role"] is null : true));

        private static string Piece(JsonNode e, bool chat)
        {
            var choice = e["choices"]?.AsArray().FirstOrDefault();
            return choice is null ? "" : (string?)(chat ? choice["delta"]?["content"] : choice["text"]) ?? "";
        }
    }

    /// <summary>Streams a request; with <paramref name="dropAfterEvents"/>, closes the connection after that many events.</summary>
    public static async Task<StreamResult> StreamAsync(HttpClient http, string path, object body, int dropAfterEvents = int.MaxValue, CancellationToken cancellation = default)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = Json(body) };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellation);
        string? retryAfter = response.Headers.RetryAfter?.ToString();
        if (response.StatusCode != HttpStatusCode.OK)
        {
            return new StreamResult(response.StatusCode, retryAfter, [], false, await response.Content.ReadAsStringAsync(cancellation));
        }

        Assert.StartsWith("text/event-stream", response.Content.Headers.ContentType?.ToString());
        var events = new List<JsonNode>();
        bool done = false;
        using var stream = await response.Content.ReadAsStreamAsync(cancellation);
        using var reader = new StreamReader(stream, new UTF8Encoding(false, throwOnInvalidBytes: true));
        while (await reader.ReadLineAsync(cancellation) is { } line)
        {
            if (line.Length == 0)
            {
                continue;
            }

            Assert.StartsWith("data: ", line);
            string data = line[6..];
            if (data == "[DONE]")
            {
                done = true;
                break;
            }

            events.Add(JsonNode.Parse(data)!);
            if (events.Count >= dropAfterEvents)
            {
                break; // disposing the response closes the connection mid-stream
            }
        }

        return new StreamResult(HttpStatusCode.OK, retryAfter, events, done, null);
    }

    /// <summary>The server's metrics as name{labels} → value.</summary>
    public static async Task<Dictionary<string, double>> MetricsAsync(HttpClient http)
    {
        string text = await http.GetStringAsync("metrics");
        var values = new Dictionary<string, double>();
        foreach (string line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            int space = line.LastIndexOf(' ');
            values[line[..space]] = double.Parse(line[(space + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        }

        return values;
    }

    public static double Metric(Dictionary<string, double> metrics, string name, string labels = "model=\"default\"") =>
        metrics.TryGetValue($"{name}{{{labels}}}", out double v) ? v : 0;

    /// <summary>Waits until the engine holds no sequences and no pages (they are freed at the engine's next step).</summary>
    public static async Task<Dictionary<string, double>> SettledMetricsAsync(HttpClient http, Func<Dictionary<string, double>, bool>? also = null)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (true)
        {
            var m = await MetricsAsync(http);
            if (Metric(m, "minnow_requests_running") == 0 && Metric(m, "minnow_requests_waiting") == 0 && Metric(m, "minnow_kv_pages_used") == 0 && (also?.Invoke(m) ?? true) ||
                DateTime.UtcNow > deadline)
            {
                return m;
            }

            await Task.Delay(50);
        }
    }
}
