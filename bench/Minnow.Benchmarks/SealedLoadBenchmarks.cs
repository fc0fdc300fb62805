using BenchmarkDotNet.Attributes;
using Minnow.Benchmarking;
using Minnow.Loading;
using Minnow.Sealing;

namespace Minnow.Benchmarks;

/// <summary>
/// Loading a model from its folder against loading the same model from a sealed package (verify, decrypt into
/// anonymous memory, check every SHA-256), each with and without the first forward pass (which makes the plain
/// model read its memory-mapped pages). Models: $MINNOW_SEAL_BENCH_MODELS (folders separated by ';'), default
/// models/default. Run: <c>dotnet run -c Release --project bench/Minnow.Benchmarks -- --filter *SealedLoad* --job short</c>.
/// </summary>
[MemoryDiagnoser(false)]
public class SealedLoadBenchmarks
{
    private PackageKey? _key;
    private string _package = "";

    public static IEnumerable<string> Models =>
        (Environment.GetEnvironmentVariable("MINNOW_SEAL_BENCH_MODELS") ?? Path.Combine(RepositoryRoot(), "models", "default"))
            .Split(';', StringSplitOptions.RemoveEmptyEntries);

    [ParamsSource(nameof(Models))]
    public string Model { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        _key = PackageKey.Generate();
        _package = Path.Combine(Path.GetTempPath(), $"minnow-bench-{Guid.NewGuid():N}.mpkg");
        using var signer = SigningKey.Generate();
        using var files = LoadedModel.FilesToSeal(Model);
        SealedPackage.Seal(files, _package, _key, signer);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        File.Delete(_package);
        _key?.Dispose();
    }

    [Benchmark(Baseline = true)]
    public long PlainOpen()
    {
        using var loaded = LoadedModel.Open(Model);
        return loaded.Facts.Parameters;
    }

    [Benchmark]
    public long SealedOpen()
    {
        using var loaded = LoadedModel.Open(SealedPackage.Open(_package, _key!));
        return loaded.Facts.Parameters;
    }

    [Benchmark]
    public float PlainOpenAndFirstToken()
    {
        using var loaded = LoadedModel.Open(Model);
        return MinnowEngine.AllLogits(loaded.Model, [1])[0];
    }

    [Benchmark]
    public float SealedOpenAndFirstToken()
    {
        using var loaded = LoadedModel.Open(SealedPackage.Open(_package, _key!));
        return MinnowEngine.AllLogits(loaded.Model, [1])[0];
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Minnow.slnx")))
            {
                return dir.FullName;
            }
        }

        return ".";
    }
}
