using System.CommandLine;
using Minnow.Cli;
using Minnow.Cli.Commands;

var root = new RootCommand("Minnow: measure, compress and run small language models on edge CPUs.");
foreach (var command in CommandRegistry.All())
{
    root.Subcommands.Add(command);
}

return CliRunner.Run(root, args);
