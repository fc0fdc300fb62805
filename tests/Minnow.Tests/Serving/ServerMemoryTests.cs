using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;

namespace Minnow.Tests.Serving;

/// <summary>
/// Memory under overload: <c>minnow serve</c> as its own process, 64 streaming clients against <c>--max-queue 16</c>.
/// The queue bounds the requests held, and the KV cache is a fixed pool of the budget's size, so the process's peak
/// resident set (VmHWM) stays within the weights, the KV budget and the runtime's own overhead, however many come.
/// </summary>
[Collection("server")]
public sealed class ServerMemoryTests
{
    /// <summary>
    /// The runtime's share, measured on x64 (.NET 10, Release, 2 cores) with models/default and a 16 MB budget:
    /// the .NET runtime, ASP.NET Core and Kestrel, prometheus-net, the JIT's code and the GC heaps came to about
    /// 56 MiB at "ready" and about 84 MiB at the peak under 64 clients (their connections, request bodies, SSE
    /// buffers and the engine's step workspace included). The constant is that peak with half again as margin for
    /// GC timing, so that a queue without bound, a KV cache that grows or per-request buffers kept after the
    /// request (each costing memory per client) still fail it.
    /// </summary>
    private const long OverheadBytes = 128L << 20;

    [Fact]
    public async Task Overload_64ClientsAgainstQueue16_PeakRssWithinWeightsPlusKvBudgetPlusOverhead()
    {
        string model = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        await using var server = await ServeProcess.StartAsync(model, "--max-batch", "4", "--max-queue", "16", "--kv-budget", "16MB", "--threads", "2");
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 256 }) { BaseAddress = new Uri(server.Url + "/"), Timeout = TimeSpan.FromSeconds(120) };
        var health = JsonNode.Parse(await http.GetStringAsync("health"))!;
        long weights = (long)health["weights_bytes"]!;
        long budget = (long)health["kv_budget_bytes"]!;
        long cache = (long)health["kv_cache_bytes"]!;
        Assert.Equal(16_000_000, budget);
        Assert.InRange(cache, 1, budget);
        long atReady = Status(server.Process.Id, "VmHWM");

        var results = await Task.WhenAll(Enumerable.Range(0, 64).Select(i => ServerHarness.StreamAsync(http, "v1/completions", new
        {
            model = "default",
            prompt = $"And it came to pass, in the {i}th year,",
            max_tokens = 48,
            temperature = 0,
            ignore_eos = true,
            stream = true,
            stream_options = new { include_usage = true },
        })));
        long peak = Status(server.Process.Id, "VmHWM");

        var accepted = results.Where(r => r.Status == HttpStatusCode.OK).ToList();
        Assert.Equal(64, accepted.Count + results.Count(r => r.Status == HttpStatusCode.TooManyRequests));
        Assert.InRange(accepted.Count, 16, 64);
        Assert.All(accepted, r =>
        {
            Assert.True(r.Done);
            Assert.Equal(48, (int)r.Usage!["completion_tokens"]!);
        });

        long bound = weights + budget + OverheadBytes;
        string figures = string.Create(CultureInfo.InvariantCulture,
            $"peak RSS {peak / 1048576.0:0.0} MiB (at ready {atReady / 1048576.0:0.0} MiB); weights {weights / 1048576.0:0.0} MiB + KV budget {budget / 1048576.0:0.0} MiB + overhead {OverheadBytes >> 20} MiB = {bound / 1048576.0:0.0} MiB; {accepted.Count} accepted");
        Console.WriteLine(figures);
        Assert.True(peak <= bound, figures);
        Assert.Equal(0, await server.StopAsync());
    }

    /// <summary>A /proc/PID/status field in bytes (the kernel reports kB).</summary>
    private static long Status(int pid, string field)
    {
        string line = File.ReadLines($"/proc/{pid}/status").Single(l => l.StartsWith(field + ":", StringComparison.Ordinal));
        return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
    }
}
