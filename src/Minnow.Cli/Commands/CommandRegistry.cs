using System.CommandLine;

namespace Minnow.Cli.Commands;

/// <summary>Every subcommand of <c>minnow</c>, in the order the help lists them.</summary>
internal static class CommandRegistry
{
    public static IEnumerable<Command> All()
    {
        yield return InfoCommand.Create();
        yield return OptimizeCommand.Create();
        yield return CheckCommand.Create();
        yield return GenerateCommand.Create();
        yield return PerplexityCommand.Create();
        yield return TrainCommand.Create();
        yield return FinetuneCommand.Create();
        yield return QatCommand.Create();
        yield return MergeCommand.Create();
        yield return QuantizeCommand.Create();
        yield return PruneCommand.Create();
        yield return SynthCommand.Create();
        yield return BenchCommand.Create();
        yield return ExportCommand.Create();
        yield return KeygenCommand.Create();
        yield return SealCommand.Create();
        yield return VerifyOutputCommand.Create();
        yield return ServeCommand.Create();
        yield return LoadtestCommand.Create();
    }
}
