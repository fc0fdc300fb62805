using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Minnow.Tests.Cli;

namespace Minnow.Tests.Serving;

/// <summary>
/// The README's serving examples, run as a user would: <c>minnow serve</c> as a real process (on a free port instead
/// of 8080), each <c>curl</c> line through the shell against it, <c>minnow loadtest</c> against it; then SIGTERM while
/// a request streams: the request completes and the process exits 0.
/// </summary>
[Collection("server")]
public sealed class ServeReadmeTests
{
    /// <summary>The <c>minnow</c> and <c>curl</c> lines of the sh blocks in the README's serve section ("\" joined).</summary>
    private static List<string> ServeExamples()
    {
        string readme = File.ReadAllText(Path.Combine(SharedData.RepositoryRoot, "README.md")).ReplaceLineEndings("\n");
        int start = readme.IndexOf("### serve, loadtest", StringComparison.Ordinal);
        Assert.True(start >= 0, "README has no serve section");
        int end = readme.IndexOf("\n### ", start + 5, StringComparison.Ordinal);
        var lines = new List<string>();
        bool inShell = false;
        var pending = new StringBuilder();
        foreach (string raw in readme[start..end].Split('\n'))
        {
            string line = raw.Trim();
            if (line.StartsWith("```", StringComparison.Ordinal))
            {
                inShell = !inShell && line == "```sh";
                continue;
            }

            if (inShell && (pending.Length > 0 || line.StartsWith("minnow ", StringComparison.Ordinal) || line.StartsWith("curl ", StringComparison.Ordinal)))
            {
                bool continues = line.EndsWith('\\');
                pending.Append(continues ? line[..^1] : line).Append(' ');
                if (!continues)
                {
                    lines.Add(pending.ToString().Trim());
                    pending.Clear();
                }
            }
        }

        return lines;
    }

    [Fact]
    public async Task ReadmeServeExamples_RunAgainstARealServer_ThenSigtermDrainsAndExits0()
    {
        var examples = ServeExamples();
        string serve = Assert.Single(examples, e => e.StartsWith("minnow serve", StringComparison.Ordinal));
        Assert.Contains(examples, e => e.StartsWith("minnow loadtest", StringComparison.Ordinal));
        Assert.True(examples.Count(e => e.StartsWith("curl ", StringComparison.Ordinal)) >= 4);

        var args = ReadmeExamplesTests.SplitArgs(serve).Skip(1).ToList();
        int port = args.IndexOf("--port");
        Assert.True(port > 0, "the serve example names its port");
        string readmePort = args[port + 1];
        args[port + 1] = "0";
        using var process = Process.Start(ProcessTests.StartInfo([.. args]))!;
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            string url = await ReadUntil(process, "listening on ");
            await ReadUntil(process, "ready: ");
            string readmeUrl = $"http://localhost:{readmePort}";
            foreach (string example in examples.Where(e => e.StartsWith("curl ", StringComparison.Ordinal)))
            {
                string output = await Shell(example.Replace(readmeUrl, url, StringComparison.Ordinal));
                Assert.DoesNotContain("\"error\"", output);
                if (example.Contains("\"stream\": true", StringComparison.Ordinal))
                {
                    Assert.EndsWith("data: [DONE]", output.TrimEnd());
                }
                else if (example.Contains("/metrics", StringComparison.Ordinal))
                {
                    Assert.Contains("minnow_time_to_first_token_seconds_count{model=\"default\"}", output);
                }
                else
                {
                    JsonNode.Parse(output);
                }
            }

            foreach (string example in examples.Where(e => e.StartsWith("minnow loadtest", StringComparison.Ordinal)))
            {
                var load = Minnow.Tests.Cli.Cli.Run([.. ReadmeExamplesTests.SplitArgs(example.Replace(readmeUrl, url, StringComparison.Ordinal)).Skip(1)]);
                Assert.True(load.ExitCode == 0, load.ToString());
                Assert.Matches(@"\d+ completed, 0 rejected \(429\), 0 errors", load.Stdout);
            }

            // SIGTERM while a request streams: it still completes, then the server exits 0.
            using var http = new HttpClient { BaseAddress = new Uri(url + "/"), Timeout = TimeSpan.FromSeconds(60) };
            var streaming = ServerHarness.StreamAsync(http, "v1/completions", new
            {
                prompt = "In the beginning",
                max_tokens = 100,
                temperature = 0,
                ignore_eos = true,
                stream = true,
                stream_options = new { include_usage = true },
            });
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (ServerHarness.Metric(await ServerHarness.MetricsAsync(http), "minnow_requests_running") < 1 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(5);
            }

            using (var kill = Process.Start("kill", ["-TERM", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
            {
                await kill.WaitForExitAsync();
            }

            var result = await streaming;
            Assert.Equal(HttpStatusCode.OK, result.Status);
            Assert.True(result.Done);
            Assert.Equal(100, (int)result.Usage!["completion_tokens"]!);
            await process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
            Assert.Equal(0, process.ExitCode);
            Assert.Contains("stopped.", await stderr);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill();
            }
        }
    }

    private static async Task<string> ReadUntil(Process process, string prefix)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
        {
            if (line.StartsWith(prefix, StringComparison.Ordinal))
            {
                return line[prefix.Length..].Trim();
            }
        }

        throw new InvalidOperationException($"the server ended before printing '{prefix}'.");
    }

    private static async Task<string> Shell(string command)
    {
        var start = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(command);
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
        Assert.True(process.ExitCode == 0, $"{command}\nexit {process.ExitCode}: {await error}");
        return await output;
    }
}
