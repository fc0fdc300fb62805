using System.Text;
using System.Text.RegularExpressions;

namespace Minnow.Tests.Cli;

/// <summary>
/// Every example command in README.md (lines starting with <c>minnow </c> inside ```sh blocks) runs through the
/// in-process CLI and exits 0, so the README stays true. Relative paths are taken from the repository root, as a
/// user runs them from a fresh clone.
/// </summary>
public partial class ReadmeExamplesTests
{
    public static IEnumerable<object[]> Examples()
    {
        string? root = SharedData.RepositoryRoot;
        if (root is null || !File.Exists(Path.Combine(root, "README.md")))
        {
            yield break;
        }

        foreach (string line in ExtractExamples(File.ReadAllText(Path.Combine(root, "README.md"))))
        {
            yield return [line];
        }
    }

    /// <summary>The <c>minnow ...</c> lines of the ```sh / ```bash / ```shell blocks (joining "\" continuations).</summary>
    public static List<string> ExtractExamples(string markdown)
    {
        var examples = new List<string>();
        bool inShell = false;
        var pending = new StringBuilder();
        foreach (string raw in markdown.ReplaceLineEndings("\n").Split('\n'))
        {
            string line = raw.Trim();
            if (line.StartsWith("```", StringComparison.Ordinal))
            {
                inShell = !inShell && ShellFence().IsMatch(line);
                continue;
            }

            if (!inShell)
            {
                continue;
            }

            // A server and a load against it run in ServeReadmeTests, which starts the server first.
            if (pending.Length == 0 && (line.StartsWith("minnow serve", StringComparison.Ordinal) || line.StartsWith("minnow loadtest", StringComparison.Ordinal)))
            {
                continue;
            }

            if (pending.Length > 0 || line.StartsWith("minnow ", StringComparison.Ordinal) || line.StartsWith("$ minnow ", StringComparison.Ordinal))
            {
                string part = line.StartsWith("$ ", StringComparison.Ordinal) ? line[2..] : line;
                bool continues = part.EndsWith('\\');
                pending.Append(continues ? part[..^1] : part).Append(' ');
                if (!continues)
                {
                    examples.Add(pending.ToString().Trim());
                    pending.Clear();
                }
            }
        }

        return examples;
    }

    /// <summary>Splits a command line as a POSIX shell would for simple quoting ('...' and "...").</summary>
    public static List<string> SplitArgs(string line)
    {
        var args = new List<string>();
        var current = new StringBuilder();
        bool any = false;
        char quote = '\0';
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quote != '\0')
            {
                if (c == quote)
                {
                    quote = '\0';
                }
                else if (c == '\\' && quote == '"' && i + 1 < line.Length && line[i + 1] is '"' or '\\' or '$')
                {
                    current.Append(line[++i]);
                }
                else
                {
                    current.Append(c);
                }
            }
            else if (c is '\'' or '"')
            {
                quote = c;
                any = true;
            }
            else if (char.IsWhiteSpace(c))
            {
                if (any || current.Length > 0)
                {
                    args.Add(current.ToString());
                    current.Clear();
                    any = false;
                }
            }
            else
            {
                current.Append(c);
            }
        }

        Assert.True(quote == '\0', $"unbalanced quote in: {line}");
        if (any || current.Length > 0)
        {
            args.Add(current.ToString());
        }

        return args;
    }

    [Fact]
    public void ReadmeHasExamplesForEveryCommand()
    {
        string? root = SharedData.RepositoryRoot;
        Assert.NotNull(root);
        var examples = ExtractExamples(File.ReadAllText(Path.Combine(root, "README.md")));
        foreach (string command in new[] { "info", "optimize", "check", "generate", "perplexity", "quantize", "prune" })
        {
            Assert.Contains(examples, e => e.StartsWith($"minnow {command}", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void ExtractionAndSplittingFollowTheShell()
    {
        var found = ExtractExamples("text\n```sh\nminnow generate -p \"Once upon\" \\\n  -n 8\necho hi\n```\n```\nminnow info\n```\n");
        Assert.Equal(["minnow generate -p \"Once upon\"  -n 8"], found);
        Assert.Equal(["minnow", "generate", "-p", "Once upon", "-n", "8"], SplitArgs(found[0]));
        Assert.Equal(["a", "it's", "", "x y"], SplitArgs("a 'it'\"'\"'s' \"\" \"x y\""));
    }

    [Theory]
    [MemberData(nameof(Examples))]
    public void ReadmeExampleRuns(string line)
    {
        string root = SharedData.RepositoryRoot!;
        using var outputs = new TempFolder();
        var split = SplitArgs(line).Skip(1).ToList();
        var args = split.Select((a, i) =>
        {
            // What an example writes (--out / -o) goes to a temporary folder, not into the repository.
            if (i > 0 && split[i - 1] is "--out" or "-o" && !Path.IsPathRooted(a))
            {
                return Path.Combine(outputs.Path, a);
            }

            // A relative path that exists from the repository root (e.g. models/default/held-out.txt).
            string candidate = Path.Combine(root, a);
            return !a.StartsWith('-') && !Path.IsPathRooted(a) && a.Contains('/') && (File.Exists(candidate) || Directory.Exists(candidate)) ? candidate : a;
        }).ToArray();
        var result = Cli.Run(args);
        Assert.True(result.ExitCode == 0, $"README example failed: {line}\n{result}");
        if (args.Contains("--json"))
        {
            result.Json();
        }
    }

    [GeneratedRegex(@"^```(sh|bash|shell|console)\s*$")]
    private static partial Regex ShellFence();
}
