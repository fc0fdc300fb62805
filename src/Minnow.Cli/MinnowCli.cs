using System.CommandLine;
using Minnow.Cli.Commands;

namespace Minnow.Cli;

/// <summary>
/// The <c>minnow</c> command line, callable in-process (tests capture its output and exit code). Bad input
/// (<see cref="MinnowException"/>, I/O errors, parse errors) prints one line on stderr and exits 1 with no
/// stack trace; cancellation (Ctrl+C) exits 130.
/// </summary>
public static class MinnowCli
{
    public const int ExitOk = 0;
    public const int ExitError = 1;
    public const int ExitCancelled = 130;

    /// <summary>Builds the root command with every subcommand.</summary>
    public static Command CreateRoot()
    {
        // A plain command named "minnow" (a RootCommand would take the assembly's name, Minnow.Cli, in the help).
        var root = new Command("minnow", "Minnow: load, measure, compress and run small language models on CPUs, in pure .NET.")
        {
            new System.CommandLine.Help.HelpOption(),
            new VersionOption(),
        };
        foreach (var command in CommandRegistry.All())
        {
            root.Subcommands.Add(command);
        }

        return root;
    }

    /// <summary>Runs the command line with the real console: Ctrl+C cancels the running command.</summary>
    public static int RunConsole(string[] args)
    {
        using var cancellation = new CancellationTokenSource();
        int presses = 0;
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            // The first Ctrl+C asks the command to stop cleanly; a second one ends the process at once.
            if (Interlocked.Increment(ref presses) == 1)
            {
                e.Cancel = true;
                cancellation.Cancel();
            }
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            return Run(args, Console.Out, Console.Error, cancellation.Token);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>Runs the command line, writing to the given streams; returns the exit code.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellation = default)
    {
        try
        {
            var parse = CreateRoot().Parse(args.Length == 0 ? ["--help"] : args);
            if (parse.Errors.Count > 0)
            {
                // One line, no usage dump: which tokens were wrong, and where to find the usage.
                string command = parse.CommandResult.Command == parse.RootCommandResult.Command ? "" : parse.CommandResult.Command.Name + " ";
                var messages = parse.Errors.Select(e => Plain(OneLine(e.Message).TrimEnd('.'))).Distinct().ToList();
                if (messages.Count > 1)
                {
                    messages.Remove("Required command was not provided");
                }

                string problems = string.Join("; ", messages);
                stderr.WriteLine($"error: {problems} (see 'minnow {command}--help').");
                return ExitError;
            }

            var config = new InvocationConfiguration
            {
                Output = stdout,
                Error = stderr,
                EnableDefaultExceptionHandler = false,
                ProcessTerminationTimeout = null,
            };
            int code = parse.InvokeAsync(config, cancellation).GetAwaiter().GetResult();
            return args.Length == 0 ? ExitError : code;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("cancelled.");
            return ExitCancelled;
        }
        catch (Exception e) when (e is MinnowException or IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"error: {OneLine(e.Message)}");
            return ExitError;
        }
        finally
        {
            stdout.Flush();
            stderr.Flush();
        }
    }

    /// <summary>
    /// System.CommandLine's parse errors in the user's terms: an unrecognized token that looks like an option is an
    /// unknown option; a value that does not parse names the option and the form it takes, not a .NET type.
    /// </summary>
    internal static string Plain(string message)
    {
        var unrecognized = System.Text.RegularExpressions.Regex.Match(message, "^Unrecognized command or argument '(.*)'$");
        if (unrecognized.Success)
        {
            string token = unrecognized.Groups[1].Value;
            return token.StartsWith('-') && token.Length > 1 ? $"unknown option '{token}'" : $"unexpected argument '{token}'";
        }

        var badValue = System.Text.RegularExpressions.Regex.Match(message, "^Cannot parse argument '(.*)' for option '(.*)' as expected type '(.*)'$");
        if (badValue.Success)
        {
            string type = badValue.Groups[3].Value;
            string form = type.Contains("Int", StringComparison.Ordinal) ? "a whole number"
                : type.Contains("Single", StringComparison.Ordinal) || type.Contains("Double", StringComparison.Ordinal) ? "a number"
                : type.Contains("Boolean", StringComparison.Ordinal) ? "true or false"
                : "a value of another form";
            return $"{badValue.Groups[2].Value} takes {form} (got '{badValue.Groups[1].Value}')";
        }

        return message;
    }

    // Messages quote names from the user's files: printed through SafeText so a damaged file cannot put raw bytes on the terminal.
    private static string OneLine(string message) => Minnow.Formats.SafeText.Of(message.ReplaceLineEndings(" ").Trim(), 2000);
}
