using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Minnow.Server;
using Minnow.Serving.Rollout;
using Minnow.Tests.Cli;
using Xunit.Abstractions;
using CliHarness = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Serving;

/// <summary>An INT4-GPTQ build of the default model (groups of 32), made once by <c>minnow quantize</c> for the rollout tests.</summary>
public sealed class GptqBuildFixture : IDisposable
{
    public GptqBuildFixture()
    {
        var result = CliHarness.Run("quantize", ServerHarness.ModelPath, "--scheme", "int4", "--group", "32", "--method", "gptq",
            "--calib-tokens", "512", "--out", Int4Gptq);
        Assert.True(result.ExitCode == 0, result.ToString());
    }

    public TempFolder Folder { get; } = new();

    public string Int4Gptq => Folder.File("default-int4-gptq.gguf");

    public void Dispose() => Folder.Dispose();
}

/// <summary>
/// Canary rollouts driven by a load generator of 40 users (4 at a time) against a real server: a good canary (the
/// INT4-GPTQ build) is promoted to 100 %, a bad one (the same model with a test-only injected latency) is rolled back;
/// no user request fails, users stay on their variant until a decision moves them, and a restart resumes the step.
/// Intervals are configured in tenths of a second so that a whole rollout takes seconds.
/// </summary>
[Collection("server")]
public sealed class RolloutTests(GptqBuildFixture build, ITestOutputHelper output) : IClassFixture<GptqBuildFixture>
{
    private const int Users = 40;

    private sealed record Hit(int User, string? Variant, HttpStatusCode Status, string? Error);

    private static readonly JsonSerializerOptions WithoutNulls = new() { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull };

    private static string WritePlan(TempFolder folder, object plan)
    {
        string path = folder.File("plan.json");
        File.WriteAllText(path, JsonSerializer.Serialize(plan, WithoutNulls));
        return path;
    }

    private static object Plan(double[] steps, double minAgreement = 0, int failures = 3) => new
    {
        stable = "stable",
        canary = "canary",
        steps,
        stepMinRequests = 3,
        stepMinSeconds = 0.4,
        intervalSeconds = 0.4,
        minSamples = 3,
        failuresToRollback = failures,
        thresholds = minAgreement > 0
            ? (object)new { maxErrorRateIncrease = 0.0, maxTtftP95Ratio = 2.0, ttftSlackMs = 150, maxInterTokenP95Ratio = 3.0, interTokenSlackMs = 30, minProbeAgreement = minAgreement, maxPerplexityIncrease = 0.15 }
            : new { maxErrorRateIncrease = 0.0, maxTtftP95Ratio = 2.0, ttftSlackMs = 150, maxInterTokenP95Ratio = 3.0, interTokenSlackMs = 30, minProbeAgreement = minAgreement },
        probePrompts = minAgreement > 0 ? new[] { "In the beginning God created", "And the LORD spake unto Moses, saying", "Blessed is the man that" } : [],
        probeText = minAgreement > 0 ? RolloutGuardTests.ProbeText : null,
        probeTokens = 16,
    };

    private static Task<MinnowServer> Start(string plan, string canary, TimeSpan canaryDelay = default) => AdapterServingTests.StartServer(new ServerOptions
    {
        ModelPath = ServerHarness.ModelPath,
        Port = 0,
        MaxBatch = 4,
        MaxQueue = 16,
        KvBudgetBytes = 32L << 20,
        Variants = new Dictionary<string, string> { ["stable"] = ServerHarness.ModelPath, ["canary"] = canary },
        RolloutPlanPath = plan,
        TestOnlyInjectedLatency = canaryDelay > TimeSpan.Zero ? new Dictionary<string, TimeSpan> { ["canary"] = canaryDelay } : new Dictionary<string, TimeSpan>(),
    });

    /// <summary>4 workers send short completions for users 0..39 in turn until <paramref name="done"/> or the time limit.</summary>
    private static async Task<List<Hit>> Drive(HttpClient http, Func<bool> done, TimeSpan limit)
    {
        var hits = new ConcurrentQueue<(long Order, Hit Hit)>();
        long next = -1;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            while (!done() && clock.Elapsed < limit)
            {
                long order = Interlocked.Increment(ref next);
                int user = (int)(order % Users);
                var response = await http.PostAsync("v1/completions", ServerHarness.Json(new { prompt = "And it came to pass", max_tokens = 6, temperature = 0, user = $"user-{user}" }));
                string body = await response.Content.ReadAsStringAsync();
                string? variant = response.Headers.TryGetValues(ServedModelsHeader, out var v) ? v.Single() : null;
                hits.Enqueue((order, new Hit(user, variant, response.StatusCode, response.IsSuccessStatusCode ? null : body)));
            }
        })));
        return hits.OrderBy(h => h.Order).Select(h => h.Hit).ToList();
    }

    private const string ServedModelsHeader = "x-minnow-variant";

    private static async Task<string> VariantOf(HttpClient http, int user)
    {
        var response = await http.PostAsync("v1/completions", ServerHarness.Json(new { prompt = "And", max_tokens = 2, user = $"user-{user}" }));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return response.Headers.GetValues(ServedModelsHeader).Single();
    }

    private static async Task<JsonNode> Rollout(HttpClient http) => JsonNode.Parse(await http.GetStringAsync("admin/rollout"))!;

    private static void AssertNoFailures(List<Hit> hits)
    {
        var failed = hits.Where(h => h.Status != HttpStatusCode.OK).ToList();
        Assert.True(failed.Count == 0, $"{failed.Count} of {hits.Count} requests failed, e.g. {failed.FirstOrDefault()}");
        Assert.All(hits, h => Assert.Contains(h.Variant, new[] { "stable", "canary" }));
    }

    /// <summary>Each user's variants, in the order of their requests, change at most once, and only from <paramref name="from"/> to the other.</summary>
    private static void AssertSticky(List<Hit> hits, string from)
    {
        foreach (var user in hits.GroupBy(h => h.User))
        {
            var sequence = user.Select(h => h.Variant).ToList();
            int changes = sequence.Zip(sequence.Skip(1)).Count(p => p.First != p.Second);
            Assert.True(changes == 0 || (changes == 1 && sequence[0] == from), $"user {user.Key} moved between variants: {string.Join(",", sequence)}");
        }
    }

    private void Log(JsonNode rollout)
    {
        foreach (var d in rollout["decisions"]!.AsArray())
        {
            output.WriteLine($"{(string?)d!["action"],-9} step {d["step"]} canary {d["canary_percent"]} %: {d["reason"]}");
        }
    }

    [Fact]
    public async Task AGoodCanary_TheInt4GptqBuild_IsPromotedTo100Percent_WithNoFailedRequestAndStickyUsers()
    {
        using var temp = new TempFolder();
        await using var server = await Start(WritePlan(temp, Plan([10, 50, 100], minAgreement: 0.3)), build.Int4Gptq);
        using var http = ServerHarness.Http(server);
        var clock = Stopwatch.StartNew();
        string phase = "";
        var hits = await Drive(http, () => (phase = (string)Rollout(http).GetAwaiter().GetResult()["phase"]!) == "promoted", TimeSpan.FromSeconds(120));
        var rollout = await Rollout(http);
        Log(rollout);
        output.WriteLine($"{hits.Count} requests in {clock.Elapsed.TotalSeconds:F1} s; canary served {hits.Count(h => h.Variant == "canary")}");
        Assert.Equal("promoted", (string?)rollout["phase"]);
        Assert.Equal(100, (double)rollout["weights"]!["canary"]!);
        var actions = rollout["decisions"]!.AsArray().Select(d => (string)d!["action"]!).ToList();
        Assert.Contains("advance", actions);
        Assert.Equal("promote", actions.Last());
        Assert.DoesNotContain("rollback", actions);
        Assert.True((double)rollout["probe_agreement"]! >= 0.3);
        double stablePerplexity = (double)rollout["probe_perplexity"]!["stable"]!, canaryPerplexity = (double)rollout["probe_perplexity"]!["canary"]!;
        output.WriteLine($"probe perplexity: stable {stablePerplexity}, canary {canaryPerplexity}");
        Assert.InRange(canaryPerplexity, 1, stablePerplexity * 1.15);
        Assert.Contains(actions, a => a == "probe");
        AssertNoFailures(hits);
        AssertSticky(hits, from: "stable");

        // Promoted: every user is on the canary now; the audit log holds every decision, one JSON line each.
        var after = await Drive(http, () => false, TimeSpan.FromSeconds(1));
        Assert.All(after, h => Assert.Equal("canary", h.Variant));
        string[] audit = File.ReadAllLines((string)rollout["audit_log"]!);
        Assert.Equal(actions, audit.Select(l => (string)JsonNode.Parse(l)!["action"]!).TakeLast(actions.Count).ToList());

        // Metrics carry the variant.
        var metrics = await ServerHarness.MetricsAsync(http);
        Assert.True(ServerHarness.Metric(metrics, "minnow_variant_requests_total", "variant=\"canary\",outcome=\"ok\"") > 0);
        Assert.True(ServerHarness.Metric(metrics, "minnow_variant_requests_total", "variant=\"stable\",outcome=\"ok\"") > 0);
        Assert.Equal(100, ServerHarness.Metric(metrics, "minnow_rollout_weight_percent", "variant=\"canary\""));
    }

    [Fact]
    public async Task ABadCanary_WithInjectedLatency_IsRolledBackWithinTheConfiguredChecks_WithNoFailedRequest()
    {
        using var temp = new TempFolder();
        const int Failures = 3;
        await using var server = await Start(WritePlan(temp, Plan([10, 50, 100], failures: Failures)), ServerHarness.ModelPath, canaryDelay: TimeSpan.FromMilliseconds(700));
        using var http = ServerHarness.Http(server);
        var hits = await Drive(http, () => (string)Rollout(http).GetAwaiter().GetResult()["phase"]! == "rolledback", TimeSpan.FromSeconds(120));
        var rollout = await Rollout(http);
        Log(rollout);
        Assert.Equal("rolledback", (string?)rollout["phase"]);
        Assert.Equal(0, (double)rollout["weights"]!["canary"]!);
        var verdicts = rollout["decisions"]!.AsArray().Select(d => (string)d!["action"]!).Where(a => a is "pass" or "fail" or "advance" or "rollback").ToList();
        Assert.Equal([.. Enumerable.Repeat("fail", Failures - 1), "rollback"], verdicts);
        Assert.Contains("TTFT p95", (string?)rollout["decisions"]!.AsArray().Last()!["reason"]);
        Assert.True(hits.Count(h => h.Variant == "canary") > 0, "the canary served no request before the rollback");
        AssertNoFailures(hits);
        AssertSticky(hits, from: "canary");
        var after = await Drive(http, () => false, TimeSpan.FromSeconds(1));
        Assert.All(after, h => Assert.Equal("stable", h.Variant));

        // A header still forces the canary for testing, and the response names it.
        var forced = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = ServerHarness.Json(new { prompt = "And", max_tokens = 2 }) };
        forced.Headers.Add(ServedModelsHeader, "canary");
        var response = await http.SendAsync(forced);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("canary", response.Headers.GetValues(ServedModelsHeader).Single());

        RolloutDashboardTests.AssertDashboardInChromium(server, temp, "rolledback", "rollback");
    }

    [Fact]
    public async Task ARestartInTheMiddleOfARollout_ResumesAtTheSameStep_WithTheSameUsersOnTheCanary()
    {
        using var temp = new TempFolder();
        string plan = WritePlan(temp, Plan([10, 50, 90]));
        JsonNode before;
        Dictionary<int, string> seen;
        await using (var server = await Start(plan, ServerHarness.ModelPath))
        {
            using var http = ServerHarness.Http(server);
            var hits = await Drive(http, () => (int)Rollout(http).GetAwaiter().GetResult()["step"]! >= 2, TimeSpan.FromSeconds(120));
            AssertNoFailures(hits);
            AssertSticky(hits, from: "stable");

            // Held while we note which variant serves each of 12 users at step 2, then resumed and stopped.
            Assert.Equal(HttpStatusCode.OK, (await http.PostAsync("admin/rollout/pause", null)).StatusCode);
            seen = [];
            for (int user = 0; user < 12; user++)
            {
                seen[user] = await VariantOf(http, user);
            }

            Assert.Equal(HttpStatusCode.OK, (await http.PostAsync("admin/rollout/resume", null)).StatusCode);
            await server.StopAsync();
            before = JsonNode.Parse(File.ReadAllText(plan + ".state.json"))!;
        }

        output.WriteLine(before.ToJsonString());
        Assert.Equal(1, (int)before["step"]!); // the second step, counted from 0 in the state file
        await using (var server = await Start(plan, ServerHarness.ModelPath))
        {
            using var http = ServerHarness.Http(server);
            var rollout = await Rollout(http);
            Log(rollout);
            Assert.Equal(2, (int)rollout["step"]!);
            Assert.Equal("progressing", (string?)rollout["phase"]);
            Assert.Equal(50, (double)rollout["weights"]!["canary"]!);
            Assert.Equal("resume", (string?)rollout["decisions"]!.AsArray().Last()!["action"]);
            Assert.Contains(rollout["decisions"]!.AsArray(), d => (string?)d!["action"] == "advance"); // read back from the audit log

            // The same users are served by the same variants after the restart: bucketing is deterministic and the
            // weights were restored. At 50 %, both variants are among them.
            foreach (var (user, variant) in seen)
            {
                string now = await VariantOf(http, user);
                Assert.Equal(variant, now);
                Assert.Equal(RolloutController.Bucket("minnow-rollout", $"user-{user}") * 100 < 50 ? "canary" : "stable", now);
            }

            Assert.Contains("canary", seen.Values);
            Assert.Contains("stable", seen.Values);
        }
    }
}
