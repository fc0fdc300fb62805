using System.Diagnostics;
using System.Text.Json;
using Minnow.Cli.Commands;
using Minnow.Tests.Cli;
using CliRunner = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Optimization;

/// <summary>
/// <c>minnow optimize</c> and <c>minnow check</c> end to end on the project's default model: a budget that excludes
/// F32, the choice against every single-technique baseline, the three outputs, the cache a second run reuses, the
/// report rendered by headless Chromium, and an impossible budget.
/// </summary>
public class OptimizeCommandTests
{
    private static string DefaultModel => Path.Combine(SharedData.RepositoryRoot, "models", "default");

    // Few windows and calibration tokens keep the test short; the search itself is the same.
    private static readonly string[] Quick = ["--chunks", "12", "--calib-tokens", "2048", "--json"];

    [Fact]
    public void WithinABudgetThatExcludesF32ItPicksTheBestRecipeWritesTheOutputsAndResumes()
    {
        using var folder = new TempFolder();
        string output = folder.File("optimized");
        var first = CliRunner.Run(["optimize", DefaultModel, "--out", output, "--max-size", "6MB", .. Quick]);
        Assert.True(first.ExitCode == 0, first.ToString());
        var json = first.Json();
        string chosen = json.GetProperty("chosen").GetString()!;
        Assert.NotEqual("f32", chosen);

        var candidates = json.GetProperty("candidates").EnumerateArray().ToList();
        Assert.True(candidates.Count >= 8);
        var f32 = candidates.Single(c => c.GetProperty("recipe").GetString() == "f32");
        Assert.False(f32.GetProperty("meets_budget").GetBoolean());
        var pick = candidates.Single(c => c.GetProperty("chosen").GetBoolean());
        Assert.Equal(chosen, pick.GetProperty("recipe").GetString());
        Assert.True(pick.GetProperty("meets_budget").GetBoolean());
        double Ppl(JsonElement c) => c.GetProperty("measurement").GetProperty("ppl").GetDouble();
        double best = Ppl(pick);
        Assert.True(pick.GetProperty("measurement").GetProperty("weight_bytes").GetInt64() <= 6_000_000);

        // No worse than any single-technique baseline that also meets the budget and was evaluated in full (those that were
        // not were beaten on size and quick perplexity by one that was: checked below).
        var singles = candidates.Where(c => c.GetProperty("techniques").GetInt32() == 1 && c.GetProperty("meets_budget").GetBoolean() &&
            c.GetProperty("measurement").TryGetProperty("ppl", out _)).ToList();
        Assert.NotEmpty(singles);
        Assert.All(singles, c => Assert.True(best <= Ppl(c), $"{chosen} {best} vs {c.GetProperty("recipe").GetString()} {Ppl(c)}"));

        // meets_budget is true exactly when the candidate's weights fit the 6 MB budget, for every candidate built.
        foreach (var c in candidates.Where(c => !c.GetProperty("measurement").TryGetProperty("error", out _)))
        {
            long weights = c.GetProperty("measurement").GetProperty("weight_bytes").GetInt64();
            Assert.True(c.GetProperty("meets_budget").GetBoolean() == (weights <= 6_000_000), $"{c.GetProperty("recipe").GetString()}: {weights} bytes, meets_budget {c.GetProperty("meets_budget")}");
        }

        // Those not evaluated in full were beaten on size and quick perplexity by one that was.
        var full = candidates.Where(c => c.GetProperty("measurement").TryGetProperty("ppl", out _)).ToList();
        foreach (var c in candidates.Where(c => !c.GetProperty("measurement").TryGetProperty("ppl", out _) && !c.GetProperty("measurement").TryGetProperty("error", out _)))
        {
            var m = c.GetProperty("measurement");
            bool dominated = full.Any(f => f.GetProperty("measurement").GetProperty("weight_bytes").GetInt64() <= m.GetProperty("weight_bytes").GetInt64() &&
                f.GetProperty("measurement").GetProperty("quick_ppl").GetDouble() <= m.GetProperty("quick_ppl").GetDouble());
            bool tooBig = m.GetProperty("weight_bytes").GetInt64() > 6_000_000;
            Assert.True(dominated || tooBig, c.GetProperty("recipe").GetString());
        }

        // The three outputs; the model runs in the other commands; the checklist passed.
        string model = Path.Combine(output, OptimizeCommand.ModelFileName);
        Assert.True(File.Exists(model));
        Assert.True(File.Exists(Path.Combine(output, "report.json")));
        Assert.True(File.Exists(Path.Combine(output, "report.html")));
        Assert.Empty(Directory.GetFiles(output, "*.tmp"));
        Assert.True(json.GetProperty("check").GetProperty("passed").GetBoolean());
        Assert.Contains(chosen, json.GetProperty("reproduce").GetString());
        var perplexity = CliRunner.Run("perplexity", model, "--text", Path.Combine(DefaultModel, "held-out.txt"), "--chunks", "4", "--json");
        Assert.True(perplexity.ExitCode == 0, perplexity.ToString());

        // A second run reuses every measurement and comes to the same choice.
        var second = CliRunner.Run(["optimize", DefaultModel, "--out", output, "--max-size", "6MB", .. Quick]);
        Assert.True(second.ExitCode == 0, second.ToString());
        var again = second.Json();
        Assert.Equal(chosen, again.GetProperty("chosen").GetString());
        Assert.All(again.GetProperty("candidates").EnumerateArray(), c => Assert.True(c.GetProperty("cached").GetBoolean()));
        Assert.Contains("reusing", second.Stderr);

        RenderInChromium(Path.Combine(output, "report.html"), folder);
    }

    [Fact]
    public void AnImpossibleBudgetFailsAndNamesTheClosestCandidate()
    {
        using var folder = new TempFolder();
        string output = folder.File("impossible");
        var result = CliRunner.Run(["optimize", DefaultModel, "--out", output, "--max-size", "100KB", "--recipe", "q8_0", "--recipe", "q4_0-rtn", .. Quick]);
        Assert.NotEqual(0, result.ExitCode);
        // Progress lines, then one error line naming the closest candidate; no stack trace.
        string error = result.Stderr.Split('\n').Last(l => l.Length > 0);
        Assert.StartsWith("error: no recipe meets the budget", error);
        Assert.Contains("closest is q4_0-rtn", error);
        Assert.DoesNotContain("   at ", result.Stderr);
        Assert.False(File.Exists(Path.Combine(output, OptimizeCommand.ModelFileName)));
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "report.json")));
        Assert.Equal(JsonValueKind.Null, report.RootElement.GetProperty("chosen").ValueKind);
        Assert.Equal("q4_0-rtn", report.RootElement.GetProperty("closest").GetString());
    }

    [Fact]
    public void BadOptionsFailCleanly()
    {
        using var folder = new TempFolder();
        CliRunner.AssertFails(["optimize", DefaultModel, "--out", folder.File("x"), "--ram", "lots"], "--ram", "lots");
        CliRunner.AssertFails(["optimize", DefaultModel, "--out", folder.File("x"), "--latency", "soon"], "--latency", "soon");
        CliRunner.AssertFails(["optimize", DefaultModel, "--out", folder.File("x"), "--recipe", "q2_magic"], "--recipe", "q2_magic");
        CliRunner.AssertFails(["check", folder.File("missing.gguf")], "missing.gguf");
    }

    [Fact]
    public void CheckPassesAGenerousBudgetAndFailsATinyOne()
    {
        var ok = CliRunner.Run("check", DefaultModel, "--ram", "8GB", "--latency", "2s", "--json");
        Assert.True(ok.ExitCode == 0, ok.ToString());
        var json = ok.Json();
        Assert.True(json.GetProperty("passed").GetBoolean());
        Assert.True(json.GetProperty("peak_rss_bytes").GetInt64() > 11_000_000); // at least the F32 weights
        Assert.Contains(json.GetProperty("items").EnumerateArray(), i => i.GetProperty("name").GetString()!.Contains("fallback"));

        var tiny = CliRunner.Run("check", DefaultModel, "--ram", "1MB");
        Assert.Equal(1, tiny.ExitCode);
        Assert.Contains("[FAIL] fits in RAM", tiny.Stdout);
    }

    [Theory]
    [InlineData("80ms", 80)]
    [InlineData("0.1s", 100)]
    [InlineData("25", 25)]
    public void LatenciesParse(string text, double ms) => Assert.Equal(ms, OptimizeCommand.ParseMilliseconds(text), 9);

    /// <summary>
    /// Headless Chromium (Debian's chromium package, which .ci/run installs) loads the report: the DOM it builds has both
    /// charts with their points, and the screenshot of the page is not blank.
    /// </summary>
    private static void RenderInChromium(string html, TempFolder folder)
    {
        string? chromium = new[] { "chromium", "chromium-browser", "google-chrome" }
            .Select(FindOnPath).FirstOrDefault(p => p is not null);
        if (chromium is null)
        {
            Assert.True(Environment.GetEnvironmentVariable("MINNOW_REQUIRE_CHROMIUM") != "1", "chromium is not installed (.ci/run installs Debian's chromium package)");
            return;
        }

        string png = folder.File("report.png");
        string[] common = ["--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + folder.File("chromium-profile")];
        string dom = RunProcess(chromium, [.. common, "--dump-dom", new Uri(html).AbsoluteUri]);
        Assert.Contains("id=\"size-vs-perplexity\"", dom);
        Assert.Contains("id=\"latency-vs-perplexity\"", dom);
        Assert.True(dom.Split("class=\"point\"").Length > 4, "the charts have points");
        RunProcess(chromium, [.. common, "--window-size=1200,1600", "--screenshot=" + png, new Uri(html).AbsoluteUri]);
        var bytes = File.ReadAllBytes(png);
        Assert.True(bytes.Length > 20_000, $"screenshot is {bytes.Length} bytes"); // a blank page compresses to a few kB
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

    private static string RunProcess(string file, string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
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
}
