using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;

// Results go next to the binaries (bin/…/BenchmarkDotNet.Artifacts), not into the working directory; the generous
// build timeout keeps BenchmarkDotNet's boilerplate build from giving up on a busy machine.
var config = DefaultConfig.Instance
    .WithArtifactsPath(Path.Combine(AppContext.BaseDirectory, "BenchmarkDotNet.Artifacts"))
    .WithBuildTimeout(TimeSpan.FromMinutes(15));
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
