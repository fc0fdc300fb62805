using Minnow.Fuzz;
using CommandLine = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Fuzzing;

/// <summary>The fixtures and the seed corpus (made by the project's own generators), once for the class.</summary>
public sealed class FuzzCorpusFixture : IDisposable
{
    public FuzzCorpusFixture()
    {
        Root = Path.Combine(Path.GetTempPath(), "minnow-fuzz-tests-" + Guid.NewGuid().ToString("N"));
        Seeds.Write(Path.Combine(Root, "seeds"), SharedData.RepositoryRoot);
        Fixtures = new FuzzFixtures(SharedData.RepositoryRoot, Path.Combine(Root, "fixtures"));
    }

    public string Root { get; }

    public FuzzFixtures Fixtures { get; }

    public string SeedFolder(string target) => Path.Combine(Root, "seeds", target);

    public void Dispose()
    {
        Fixtures.Dispose();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>
/// Every crasher the fuzzers found (tests/fuzz-regressions/TARGET/*) now gives a clean refusal or a model that
/// runs, in-process through the fuzz target and through the real command line; and a fixed-seed mutation sweep of
/// each target's seeds finds nothing (a small, deterministic stand-in for the AFL campaigns of scripts/fuzz.sh).
/// </summary>
public class FuzzRegressionTests(FuzzCorpusFixture corpus) : IClassFixture<FuzzCorpusFixture>
{
    private static string RegressionFolder => Path.Combine(SharedData.RepositoryRoot, "tests", "fuzz-regressions");

    public static TheoryData<string, string> RegressionCases()
    {
        var data = new TheoryData<string, string>();
        foreach (string target in FuzzTargets.Names)
        {
            string folder = Path.Combine(RegressionFolder, target);
            if (Directory.Exists(folder))
            {
                foreach (string file in Directory.GetFiles(folder).Order(StringComparer.Ordinal))
                {
                    data.Add(target, Path.GetFileName(file));
                }
            }
        }

        return data;
    }

    public static TheoryData<string> Targets() => [.. FuzzTargets.Names];

    [Fact]
    public void TheRegressionCorpusCoversTheLoaders()
    {
        Assert.True(RegressionCases().Count >= 10, "tests/fuzz-regressions holds too few cases");
        Assert.All(Directory.GetDirectories(RegressionFolder), d => Assert.Contains(Path.GetFileName(d), FuzzTargets.Names));
    }

    [Theory]
    [MemberData(nameof(RegressionCases))]
    public void RegressionCaseIsRefusedCleanly(string target, string file)
    {
        byte[] data = File.ReadAllBytes(Path.Combine(RegressionFolder, target, file));
        FuzzTargets.Run(target, data, corpus.Fixtures);

        // The same file where a user would have it, through the command line: it runs, or one error line and exit 1.
        string? model = PlaceForCli(target, data);
        if (model != null)
        {
            var result = CommandLine.Run("info", model);
            if (result.ExitCode != 0)
            {
                CommandLine.AssertCleanError(result);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void FixedSeedMutationSweepFindsNothing(string target)
    {
        var seeds = Directory.GetFiles(corpus.SeedFolder(target)).Order(StringComparer.Ordinal).Select(File.ReadAllBytes).ToList();
        Assert.NotEmpty(seeds);
        var random = new Random(target.Length * 7919);
        foreach (var seed in seeds)
        {
            FuzzTargets.Run(target, seed, corpus.Fixtures);
        }

        for (int i = 0; i < 120; i++)
        {
            byte[] mutant = Mutator.Mutate(seeds[random.Next(seeds.Count)], random, seeds);
            try
            {
                FuzzTargets.Run(target, mutant, corpus.Fixtures);
            }
            catch (Exception e)
            {
                Assert.Fail($"mutant {i} of {target} ({mutant.Length} bytes): {e.GetType().Name}: {FuzzFixtures.Printable(e.Message)}\n{e.StackTrace}");
            }
        }
    }

    /// <summary>Writes the case as a model the CLI opens (with valid companions), or null for non-model targets.</summary>
    private string? PlaceForCli(string target, byte[] data)
    {
        string folder = Path.Combine(corpus.Root, "cli-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        switch (target)
        {
            case "safetensors":
                File.WriteAllBytes(Path.Combine(folder, "model.safetensors"), data);
                File.Copy(corpus.Fixtures.TinyConfig, Path.Combine(folder, "config.json"));
                return folder;
            case "config":
                File.WriteAllBytes(Path.Combine(folder, "config.json"), data);
                File.Copy(corpus.Fixtures.TinyWeights, Path.Combine(folder, "model.safetensors"));
                return folder;
            case "tokenizer-json":
                File.WriteAllBytes(Path.Combine(folder, "tokenizer.json"), data);
                File.Copy(corpus.Fixtures.TinyConfig, Path.Combine(folder, "config.json"));
                File.Copy(corpus.Fixtures.TinyWeights, Path.Combine(folder, "model.safetensors"));
                return folder;
            case "gguf":
                File.WriteAllBytes(Path.Combine(folder, "model.gguf"), data);
                return Path.Combine(folder, "model.gguf");
            case "llama2c":
                File.WriteAllBytes(Path.Combine(folder, "model.bin"), data);
                return Path.Combine(folder, "model.bin");
            default:
                return null;
        }
    }
}
