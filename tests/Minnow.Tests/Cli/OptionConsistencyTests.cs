using System.Text.RegularExpressions;
using Minnow.Cli.Commands;

namespace Minnow.Tests.Cli;

/// <summary>
/// As a user of llama.cpp expects: a short option means one thing in every command (read from each command's
/// --help, as the user sees it), unknown options are reported as unknown, and a bad value names the option and the
/// form it takes.
/// </summary>
public sealed partial class OptionConsistencyTests
{
    /// <summary>What each short option means wherever it appears (the long names listed are one meaning).</summary>
    private static readonly Dictionary<string, string[]> Meanings = new()
    {
        ["-t"] = ["--threads"],
        ["-c"] = ["--ctx"],
        ["-n"] = ["--max-tokens", "--gen"], // tokens to generate (bench keeps llama-bench's name)
        ["-p"] = ["--prompt"],
        ["-o"] = ["--out"],
        ["-b"] = ["--batch"],
        ["-s"] = ["--seed"],
        ["-r"] = ["--runs"],
        ["-f"] = ["--text"],
        ["-d"] = ["--duration"],
        ["-h"] = ["--help"],
        ["-?"] = ["--help"],
    };

    [GeneratedRegex(@"^\s+((?:-[^-\s,]+, )+)(--[a-z0-9-]+)", RegexOptions.Multiline)]
    private static partial Regex OptionLine();

    [Fact]
    public void EveryShortOptionMeansOneThingAcrossCommands()
    {
        var seen = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        var commands = CommandRegistry.All().Select(c => c.Name).ToList();
        Assert.True(commands.Count >= 15);
        foreach (string command in commands)
        {
            var help = Cli.Run(command, "--help");
            Assert.True(help.ExitCode == 0, help.ToString());
            var matches = OptionLine().Matches(help.Stdout);
            Assert.True(matches.Count > 0, $"{command} --help lists no options:\n{help.Stdout}");
            foreach (Match m in matches)
            {
                string longName = m.Groups[2].Value;
                foreach (string shortName in m.Groups[1].Value.Split(", ", StringSplitOptions.RemoveEmptyEntries))
                {
                    Assert.True(Meanings.TryGetValue(shortName, out var allowed), $"{command}: {shortName} ({longName}) is not a short option with a meaning across commands");
                    Assert.True(allowed.Contains(longName), $"{command}: {shortName} is {longName} here, but {string.Join(" / ", allowed)} elsewhere");
                    (seen.TryGetValue(shortName, out var set) ? set : seen[shortName] = []).Add($"{command} {longName}");
                }
            }
        }

        // The ones every computing command shares are there.
        Assert.Contains("check --threads", seen["-t"]);
        Assert.Contains("generate --threads", seen["-t"]);
        Assert.Contains("bench --threads", seen["-t"]);
        Assert.Contains("bench --batch", seen["-b"]);
        Assert.Contains("generate --ctx", seen["-c"]);
    }

    [Theory]
    [InlineData("generate", "--bogus", "unknown option '--bogus'")]
    [InlineData("check", "--frobnicate", "unknown option '--frobnicate'")]
    [InlineData("bench", "-x", "unknown option '-x'")]
    public void UnknownOptionsAreReportedAsUnknownOptions(string command, string option, string expected)
    {
        var result = Cli.AssertFails([command, "models/default", option], expected);
        Assert.DoesNotContain("no such file", result.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("check", "--ctx", "abc", "--ctx takes a whole number (got 'abc')")]
    [InlineData("bench", "-t", "x", "--threads takes a whole number (got 'x')")]
    [InlineData("generate", "--temperature", "hot", "--temperature takes a number (got 'hot')")]
    public void BadValuesNameTheOptionAndTheForm(string command, string option, string value, string expected)
    {
        var result = Cli.AssertFails([command, option, value], expected);
        Assert.DoesNotContain("System.", result.Stderr, StringComparison.Ordinal);
    }
}
