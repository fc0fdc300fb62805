using Minnow.Cli;

return MinnowCli.RunConsole(args);
