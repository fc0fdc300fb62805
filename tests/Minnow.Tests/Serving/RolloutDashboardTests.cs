using System.Diagnostics;
using Minnow.Server;
using Minnow.Serving.Rollout;
using Minnow.Tests.Cli;

namespace Minnow.Tests.Serving;

/// <summary>The rollout dashboard in headless Chromium, and the rollout plan's and bucketing's rules.</summary>
public sealed class RolloutDashboardTests
{
    /// <summary>Debian's chromium loads /dashboard from the live server; the DOM its script builds shows the phase, weights and the decision log.</summary>
    internal static void AssertDashboardInChromium(MinnowServer server, TempFolder folder, string phase, string lastAction)
    {
        if (DumpDom(server.Url + "/dashboard", folder) is not { } dom)
        {
            return;
        }

        Assert.Contains($"phase <b>{phase}</b>", dom);
        Assert.Contains("<tr data-variant=\"stable\">", dom);
        Assert.Contains("<tr data-variant=\"canary\">", dom);
        Assert.Contains($"<tr class=\"{lastAction}\">", dom);
        Assert.Contains("id=\"decisions\"", dom);
    }

    /// <summary>
    /// The DOM of <paramref name="url"/> after headless chromium has run its scripts and their requests (virtual
    /// time waits for pending fetches); null when chromium is not installed and CI does not require it.
    /// </summary>
    internal static string? DumpDom(string url, TempFolder folder)
    {
        string? chromium = new[] { "chromium", "chromium-browser", "google-chrome" }
            .Select(n => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, n)).FirstOrDefault(File.Exists))
            .FirstOrDefault(p => p is not null);
        if (chromium is null)
        {
            Assert.True(Environment.GetEnvironmentVariable("MINNOW_REQUIRE_CHROMIUM") != "1", "chromium is not installed (.ci/run installs Debian's chromium package)");
            return null;
        }

        var start = new ProcessStartInfo(chromium) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + folder.File("chromium-profile-" + Guid.NewGuid().ToString("N")[..8]), "--virtual-time-budget=3000", "--dump-dom", url })
        {
            start.ArgumentList.Add(a);
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        Assert.True(process.WaitForExit(120_000), "chromium did not finish in 2 minutes");
        Assert.True(process.ExitCode == 0, $"chromium exited {process.ExitCode}: {stderr.Result}");
        return stdout.Result;
    }

    [Fact]
    public void Bucketing_IsDeterministic_UniformEnough_AndMonotoneInTheWeight()
    {
        var buckets = Enumerable.Range(0, 10_000).Select(i => RolloutController.Bucket("salt", $"user-{i}")).ToArray();
        Assert.Equal(buckets, Enumerable.Range(0, 10_000).Select(i => RolloutController.Bucket("salt", $"user-{i}")));
        Assert.All(buckets, b => Assert.InRange(b, 0, 1 - double.Epsilon));
        double under5 = buckets.Count(b => b < 0.05) / 10_000.0;
        Assert.InRange(under5, 0.04, 0.06); // binomial sd 0.22 %: 4.5 sd either way
        Assert.NotEqual(buckets, Enumerable.Range(0, 10_000).Select(i => RolloutController.Bucket("other salt", $"user-{i}")));
    }

    [Fact]
    public void APlan_WithAWrongField_IsAOneLineErrorNamingIt()
    {
        using var temp = new TempFolder();
        void Bad(string json, string field)
        {
            File.WriteAllText(temp.File("plan.json"), json);
            var e = Assert.Throws<MinnowException>(() => RolloutPlan.Load(temp.File("plan.json")));
            Assert.Contains(field, e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }

        Bad("""{"steps": [50, 25]}""", "steps");
        Bad("""{"steps": []}""", "steps");
        Bad("""{"intervalSeconds": "1s"}""", "intervalSeconds");
        Bad("""{"failuresToRollback": 0}""", "failuresToRollback");
        Bad("""{"stable": "a", "canary": "a"}""", "same variant");
        Bad("""{"thresholds": {"minProbeAgreement": 0.9}}""", "probePrompts");
        Bad("""[1]""", "JSON object");
        Assert.Throws<MinnowException>(() => RolloutPlan.Load(temp.File("missing.json")));
    }

    [Fact]
    public void TooLittleData_Holds_AndNeverPromotes()
    {
        var plan = new RolloutPlan { Steps = [50, 100], MinSamples = 5, StepMinRequests = 0, StepMinDuration = TimeSpan.Zero };
        var rollout = RolloutController.Open(plan);
        for (int i = 0; i < 4; i++)
        {
            rollout.Record("canary", new RequestOutcome(false, 0.01, [0.001]));
            rollout.Record("stable", new RequestOutcome(false, 0.01, [0.001]));
            Assert.Equal("hold", rollout.Analyze()!.Action);
        }

        Assert.Equal(50, rollout.CanaryPercent);
        rollout.Record("canary", new RequestOutcome(false, 0.01, [0.001]));
        rollout.Record("stable", new RequestOutcome(false, 0.01, [0.001]));
        Assert.Equal("promote", rollout.Analyze()!.Action); // the held window was kept: 5 of each now
        Assert.Equal(RolloutPhase.Promoted, rollout.Phase);
        Assert.Null(rollout.Analyze());
    }

    [Fact]
    public void ErrorsOnTheCanary_FailChecks_AndNConsecutiveFailuresRollBack()
    {
        var plan = new RolloutPlan { Steps = [20, 100], MinSamples = 2, FailuresToRollback = 2, StepMinRequests = 100, StepMinDuration = TimeSpan.Zero };
        var rollout = RolloutController.Open(plan);
        void Window(bool canaryFails)
        {
            for (int i = 0; i < 4; i++)
            {
                rollout.Record("canary", new RequestOutcome(canaryFails && i < 2, 0.01, [0.001]));
                rollout.Record("stable", new RequestOutcome(false, 0.01, [0.001]));
            }
        }

        Window(canaryFails: true);
        Assert.Equal("fail", rollout.Analyze()!.Action);
        Window(canaryFails: false);
        Assert.Equal("pass", rollout.Analyze()!.Action); // a pass resets the count
        Window(canaryFails: true);
        Assert.Equal("fail", rollout.Analyze()!.Action);
        Window(canaryFails: true);
        var d = rollout.Analyze()!;
        Assert.Equal("rollback", d.Action);
        Assert.Contains("error rate 50", d.Reason);
        Assert.Equal(0, rollout.CanaryPercent);
        Assert.All(Enumerable.Range(0, 100), i => Assert.Equal("stable", rollout.Choose($"user-{i}")));
    }
}

/// <summary>The serve command's adapter and rollout options: bad input is one line and a non-zero exit.</summary>
public sealed class ServeOperationsOptionsTests
{
    [Fact]
    public void BadAdapterAndRolloutOptions_AreOneLineErrors()
    {
        Minnow.Tests.Cli.Cli.AssertFails(["serve", "--port", "0", "--adapter", "no-equals-sign"], "--adapter", "NAME=PATH");
        Minnow.Tests.Cli.Cli.AssertFails(["serve", "--port", "0", "--canary", "150%"], "--canary", "150%");
        Minnow.Tests.Cli.Cli.AssertFails(["serve", "--port", "0", "--canary", "5%"], "two variants");
        Minnow.Tests.Cli.Cli.AssertFails(["serve", "--port", "0", "--adapter-budget", "lots"], "--adapter-budget", "lots");
        Minnow.Tests.Cli.Cli.AssertFails(["serve", "--port", "0", "--variant", "a=x", "--variant", "a=y"], "--variant", "twice");
    }
}
