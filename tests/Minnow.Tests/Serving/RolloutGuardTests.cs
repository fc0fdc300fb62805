using Minnow.Loading;
using Minnow.Serving.Rollout;
using Minnow.Tests.Cli;
using Xunit.Abstractions;
using CliHarness = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Serving;

/// <summary>A heavily pruned build of the default model (a quarter of its heads and FFN neurons), made once by <c>minnow prune</c>.</summary>
public sealed class PrunedBuildFixture : IDisposable
{
    public PrunedBuildFixture()
    {
        var result = CliHarness.Run("prune", ServerHarness.ModelPath, "--out", Pruned, "--method", "heads", "--keep-heads", "0.25", "--keep-ffn", "0.25",
            "--calib", Path.Combine(ServerHarness.ModelPath, "held-out.txt"), "--calib-samples", "8", "--chunks", "2", "--no-speed");
        Assert.True(result.ExitCode == 0, result.ToString());
    }

    public TempFolder Folder { get; } = new();

    public string Pruned => Folder.File("default-pruned");

    public void Dispose() => Folder.Dispose();
}

/// <summary>
/// The rollout's quality guard on probe perplexity with real builds (an INT4-GPTQ build passes, a heavily pruned one
/// fails), the inter-token p95 over every gap, and holds kept out of the audit log unless something changed.
/// </summary>
public sealed class RolloutGuardTests(GptqBuildFixture gptq, PrunedBuildFixture pruned, ITestOutputHelper output)
    : IClassFixture<GptqBuildFixture>, IClassFixture<PrunedBuildFixture>
{
    /// <summary>The first 1,500 characters of the default model's held-out text: the probe both variants are scored on.</summary>
    internal static string ProbeText => File.ReadAllText(Path.Combine(ServerHarness.ModelPath, "held-out.txt"))[..1500];

    private static RolloutPlan PerplexityPlan => new()
    {
        Steps = [10, 100],
        MinSamples = 3,
        FailuresToRollback = 1,
        StepMinRequests = 0,
        StepMinDuration = TimeSpan.Zero,
        ProbeText = ProbeText,
        Thresholds = new RolloutThresholds { MaxPerplexityIncrease = 0.15 },
    };

    private static double ProbePerplexity(string model)
    {
        using var loaded = LoadedModel.Open(model, null);
        var tokens = new Minnow.Serving.PromptEncoder(loaded.Tokenizer!).EncodeText(ProbeText);
        return RolloutProbes.Perplexity(loaded.Model, tokens);
    }

    private static void SameTraffic(RolloutController rollout)
    {
        for (int i = 0; i < 3; i++)
        {
            rollout.Record("canary", new RequestOutcome(false, 0.02, [0.005, 0.005]));
            rollout.Record("stable", new RequestOutcome(false, 0.02, [0.005, 0.005]));
        }
    }

    [Fact]
    public void TheProbePerplexityGuard_PassesTheInt4GptqBuild_AndFailsTheHeavilyPrunedBuild()
    {
        double stable = ProbePerplexity(ServerHarness.ModelPath);
        double good = ProbePerplexity(gptq.Int4Gptq);
        double bad = ProbePerplexity(pruned.Pruned);
        output.WriteLine($"probe perplexity: stable {stable:F3}, int4-gptq {good:F3} ({(good / stable) - 1:+0.0%}), pruned {bad:F3} ({(bad / stable) - 1:+0.0%})");

        // Unmeasured: the guard holds, it never lets the canary through.
        var goodRollout = RolloutController.Open(PerplexityPlan);
        SameTraffic(goodRollout);
        var hold = goodRollout.Analyze()!;
        Assert.Equal("hold", hold.Action);
        Assert.Contains("perplexity", hold.Reason);

        goodRollout.SetProbePerplexity(stable, good);
        var promoted = goodRollout.Analyze()!;
        Assert.Equal("promote", promoted.Action);
        Assert.Equal(RolloutPhase.Promoted, goodRollout.Phase);

        var badRollout = RolloutController.Open(PerplexityPlan);
        badRollout.SetProbePerplexity(stable, bad);
        SameTraffic(badRollout);
        var rollback = badRollout.Analyze()!;
        Assert.Equal("rollback", rollback.Action);
        Assert.Contains("probe perplexity", rollback.Reason);
        Assert.Equal(0, badRollout.CanaryPercent);
    }

    [Fact]
    public void APlan_WithAPerplexityThreshold_NeedsAProbe_AndTakesTextOrIds()
    {
        using var temp = new TempFolder();
        RolloutPlan Load(string json)
        {
            File.WriteAllText(temp.File("plan.json"), json);
            return RolloutPlan.Load(temp.File("plan.json"));
        }

        void Bad(string json, string field)
        {
            var e = Assert.Throws<MinnowException>(() => Load(json));
            Assert.Contains(field, e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }

        Bad("""{"thresholds": {"maxPerplexityIncrease": 0.1}}""", "probeText");
        Bad("""{"probeTokenIds": [1, 2]}""", "probeTokenIds");
        Bad("""{"probeText": "", "thresholds": {"maxPerplexityIncrease": 0.1}}""", "probeText");
        Bad("""{"probeText": "a b c d", "probeTokenIds": [1, 2, 3, 4]}""", "not both");
        var plan = Load("""{"probeTokenIds": [1, 2, 3, 4, 5], "thresholds": {"maxPerplexityIncrease": 0.1}}""");
        Assert.Equal([1, 2, 3, 4, 5], plan.ProbeTokenIds!);
        Assert.Equal(0.1, plan.Thresholds.MaxPerplexityIncrease);
        Assert.Null(Load("{}").Thresholds.MaxPerplexityIncrease);
    }

    [Fact]
    public void TheInterTokenP95_IsTakenOverEveryGap_SoAStallInEachRequestFailsTheCheck()
    {
        // Every canary request stalls 200 ms twice in 20 gaps (10 % of gaps); its mean gap is 24.5 ms, under stable's
        // 5 ms × 3 + 30 ms = 45 ms, so a p95 of per-request means would pass it. Over every gap the p95 is 200 ms.
        var plan = new RolloutPlan
        {
            Steps = [10, 100],
            MinSamples = 5,
            FailuresToRollback = 2,
            StepMinRequests = 0,
            StepMinDuration = TimeSpan.Zero,
            Thresholds = new RolloutThresholds { MaxInterTokenP95Ratio = 3, InterTokenSlackMs = 30, MaxTtftP95Ratio = 2, TtftSlackMs = 10 },
        };
        var rollout = RolloutController.Open(plan);
        double[] steady = Enumerable.Repeat(0.005, 20).ToArray();
        double[] stalling = [.. Enumerable.Repeat(0.005, 18), 0.2, 0.2];
        Assert.True(stalling.Average() * 1000 < (5 * 3) + 30);
        for (int i = 0; i < 10; i++)
        {
            rollout.Record("stable", new RequestOutcome(false, 0.02, steady));
            rollout.Record("canary", new RequestOutcome(false, 0.02, stalling));
        }

        var d = rollout.Analyze()!;
        output.WriteLine(d.Reason);
        Assert.Equal("fail", d.Action);
        Assert.Contains("inter-token p95 200 ms", d.Reason);

        // The same gaps spread so that fewer than 5 % are stalls: the p95 is the steady gap and the check passes.
        for (int i = 0; i < 10; i++)
        {
            rollout.Record("stable", new RequestOutcome(false, 0.02, steady));
            rollout.Record("canary", new RequestOutcome(false, 0.02, i == 0 ? stalling : steady));
        }

        var pass = rollout.Analyze()!;
        output.WriteLine(pass.Reason);
        Assert.Equal("promote", pass.Action);
        Assert.Contains("inter-token p95 5 ms", pass.Reason);
    }

    [Fact]
    public void Holds_AreWrittenToTheAuditLog_OnlyWhenTheyFollowAnotherDecision()
    {
        using var temp = new TempFolder();
        var plan = new RolloutPlan { Steps = [10, 50, 100], MinSamples = 3, StepMinRequests = 1000, StepMinDuration = TimeSpan.Zero };
        var rollout = RolloutController.Open(plan, temp.File("state.json"));
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal("hold", rollout.Analyze()!.Action); // no traffic at all
        }

        SameTraffic(rollout);
        Assert.Equal("pass", rollout.Analyze()!.Action);
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal("hold", rollout.Analyze()!.Action);
        }

        var logged = File.ReadAllLines(rollout.AuditLogPath!).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!["action"]!.GetValue<string>()).ToList();
        Assert.Equal(["start", "hold", "pass", "hold"], logged);
        Assert.Equal(logged, rollout.Decisions.Select(d => d.Action));
    }
}
