using System.Diagnostics;
using System.Net.Http.Json;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Minnow.Tests.Cli;

namespace Minnow.Tests.Serving;

/// <summary>
/// The playground page at <c>/</c> in headless Chromium (Debian's package), driven over the DevTools protocol: the
/// page lists the served model, a completion typed into it streams from the running server in several network
/// reads and token events, its text equals the same request through the API, and the live metrics show it.
/// </summary>
[Collection("server")]
public sealed class PlaygroundTests
{
    private const string Prompt = "And God said, Let there be light";

    [Fact]
    public async Task Playground_InChromium_StreamsACompletionFromTheServer()
    {
        string? chromium = new[] { "chromium", "chromium-browser", "google-chrome" }.Select(FindOnPath).FirstOrDefault(p => p is not null);
        if (chromium is null)
        {
            Assert.True(Environment.GetEnvironmentVariable("MINNOW_REQUIRE_CHROMIUM") != "1", "chromium is not installed (.ci/run installs Debian's chromium package)");
            return;
        }

        await using var server = await ServerHarness.StartAsync();
        using var http = ServerHarness.Http(server);
        var page = await http.GetAsync("");
        Assert.Equal("text/html; charset=utf-8", page.Content.Headers.ContentType?.ToString());

        // The same request through the API, for the text the page must show (greedy, so it is one text).
        var (_, reference, _) = await ServerHarness.PostAsync(http, "v1/completions", new { model = "default", prompt = Prompt, max_tokens = 48, temperature = 0, top_p = 1 });
        string expected = (string)reference["choices"]![0]!["text"]!;
        int expectedTokens = (int)reference["usage"]!["completion_tokens"]!;
        Assert.True(expectedTokens > 4, reference.ToJsonString());

        using var folder = new TempFolder();
        await using var browser = await Browser.StartAsync(chromium, server.Url + "/", folder.File("profile"));
        await browser.WaitFor("document.getElementById('model')?.options.length > 0"); // the page may still be loading
        Assert.Equal("default", await browser.Evaluate<string>("document.getElementById('model').value"));

        await browser.Evaluate<bool>($$"""
            (() => {
              const set = (id, v) => { const e = document.getElementById(id); e.value = v; };
              set('mode', 'completion'); set('temperature', '0'); set('top_p', '1'); set('max_tokens', '48');
              set('prompt', {{JsonSerializer.Serialize(Prompt)}});
              document.getElementById('send').click();
              return true;
            })()
            """);
        await browser.WaitFor("document.body?.dataset.state === 'done' || document.body?.dataset.state === 'error'");
        var result = JsonNode.Parse(await browser.Evaluate<string>("""
            JSON.stringify({
              state: document.body.dataset.state,
              status: document.getElementById('status').textContent,
              shown: document.querySelector('.turn.completion .text').textContent,
              chunks: playground.chunks, reads: playground.reads, finish: playground.finish,
              tokens: playground.usage && playground.usage.completion_tokens })
            """))!;
        Assert.True((string?)result["state"] == "done", result.ToJsonString());
        Assert.Equal(expected, (string?)result["shown"]);
        Assert.Equal(expectedTokens, (int)result["tokens"]!);
        Assert.Equal("length", (string?)result["finish"]);
        // Streamed: one event per token (a character split over tokens waits for its last byte), over several reads.
        Assert.InRange((int)result["chunks"]!, expectedTokens / 2, expectedTokens);
        Assert.True((int)result["reads"]! >= 2, $"the response arrived in {(int)result["reads"]!} read(s): not streamed");
        Assert.Contains("tokens in", (string?)result["status"]);

        // The live metrics panel shows the two completions' tokens (refreshed every 2 s).
        await browser.WaitFor($"Number(document.querySelector('tr[data-metric=minnow_generation_tokens_total] td.v')?.textContent) >= {2 * expectedTokens}");
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    /// <summary>Headless Chromium with one page, and a DevTools protocol connection to that page.</summary>
    private sealed class Browser : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly ClientWebSocket _socket;
        private int _nextId;

        private Browser(Process process, ClientWebSocket socket)
        {
            _process = process;
            _socket = socket;
        }

        public static async Task<Browser> StartAsync(string chromium, string url, string profile)
        {
            var start = new ProcessStartInfo(chromium) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (string a in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=" + profile, "--remote-debugging-port=0", "--remote-allow-origins=*", url })
            {
                start.ArgumentList.Add(a);
            }

            var process = Process.Start(start)!;
            _ = process.StandardOutput.ReadToEndAsync();
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
                string? devtools = null;
                while (devtools is null && await process.StandardError.ReadLineAsync(timeout.Token) is { } line)
                {
                    const string marker = "DevTools listening on ";
                    int at = line.IndexOf(marker, StringComparison.Ordinal);
                    devtools = at >= 0 ? line[(at + marker.Length)..].Trim() : null;
                }

                Assert.NotNull(devtools);
                _ = process.StandardError.ReadToEndAsync();
                var browserUri = new Uri(devtools);
                using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
                string? pageSocket = null;
                while (pageSocket is null)
                {
                    var targets = await http.GetFromJsonAsync<JsonArray>($"http://{browserUri.Authority}/json/list", timeout.Token);
                    pageSocket = (string?)targets!.FirstOrDefault(t => (string?)t!["type"] == "page")?["webSocketDebuggerUrl"];
                    if (pageSocket is null)
                    {
                        await Task.Delay(100, timeout.Token);
                    }
                }

                var socket = new ClientWebSocket();
                await socket.ConnectAsync(new Uri(pageSocket), timeout.Token);
                return new Browser(process, socket);
            }
            catch
            {
                process.Kill();
                process.Dispose();
                throw;
            }
        }

        /// <summary>Evaluates a JavaScript expression in the page and returns its value.</summary>
        public async Task<T> Evaluate<T>(string expression)
        {
            int id = ++_nextId;
            var request = new JsonObject
            {
                ["id"] = id,
                ["method"] = "Runtime.evaluate",
                ["params"] = new JsonObject { ["expression"] = expression, ["returnByValue"] = true, ["awaitPromise"] = true },
            };
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await _socket.SendAsync(Encoding.UTF8.GetBytes(request.ToJsonString()), WebSocketMessageType.Text, true, timeout.Token);
            var buffer = new byte[1 << 16];
            while (true)
            {
                using var message = new MemoryStream();
                WebSocketReceiveResult received;
                do
                {
                    received = await _socket.ReceiveAsync(buffer, timeout.Token);
                    message.Write(buffer, 0, received.Count);
                }
                while (!received.EndOfMessage);

                var reply = JsonNode.Parse(message.ToArray())!;
                if ((int?)reply["id"] != id)
                {
                    continue; // an event
                }

                var value = reply["result"]?["result"];
                Assert.True(reply["error"] is null && reply["result"]?["exceptionDetails"] is null, $"{expression}\n{reply.ToJsonString()}");
                return value!["value"]!.GetValue<T>();
            }
        }

        /// <summary>Waits (up to a minute) until a JavaScript condition holds in the page.</summary>
        public async Task WaitFor(string condition)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (!await Evaluate<bool>($"!!({condition})"))
            {
                Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {condition}");
                await Task.Delay(50);
            }
        }

        public async ValueTask DisposeAsync()
        {
            _socket.Dispose();
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }

            _process.Dispose();
        }
    }
}
