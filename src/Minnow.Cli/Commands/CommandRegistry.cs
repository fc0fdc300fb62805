using System.CommandLine;

namespace Minnow.Cli.Commands;

/// <summary>Every subcommand of <c>minnow</c>, in the order the help lists them.</summary>
internal static class CommandRegistry
{
    public static IEnumerable<Command> All()
    {
        yield break;
    }
}
