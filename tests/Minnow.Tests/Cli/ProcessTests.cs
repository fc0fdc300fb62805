using System.Diagnostics;

namespace Minnow.Tests.Cli;

/// <summary>
/// Runs the real built executable (<c>dotnet src/Minnow.Cli/bin/&lt;config&gt;/net10.0/Minnow.Cli.dll</c>) as a
/// process: bad input exits non-zero with one line on stderr and no stack trace.
/// </summary>
public class ProcessTests
{
    /// <summary>The CLI's dll, built beside the tests (same configuration), or the copy in the tests' folder.</summary>
    internal static string CliDll()
    {
        string baseDir = AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar);
        string framework = Path.GetFileName(baseDir);
        string configuration = Path.GetFileName(Path.GetDirectoryName(baseDir)!);
        if (SharedData.RepositoryRoot is string root)
        {
            string built = Path.Combine(root, "src", "Minnow.Cli", "bin", configuration, framework, "Minnow.Cli.dll");
            if (File.Exists(built))
            {
                return built;
            }
        }

        return Path.Combine(baseDir, "Minnow.Cli.dll");
    }

    internal static ProcessStartInfo StartInfo(string[] args)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        var start = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(CliDll());
        foreach (string a in args)
        {
            start.ArgumentList.Add(a);
        }

        return start;
    }

    private static CliResult RunProcess(params string[] args)
    {
        using var process = Process.Start(StartInfo(args))!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        Assert.True(process.WaitForExit(120_000), "the CLI did not finish in 2 minutes");
        return new CliResult(process.ExitCode, stdout.Result, stderr.Result);
    }

    [Fact]
    public void MissingModel_OneLineNoStackTraceNonZeroExit()
    {
        string missing = Path.Combine(Path.GetTempPath(), "minnow-missing-" + Guid.NewGuid().ToString("N"), "model.gguf");
        var result = RunProcess("generate", missing, "--prompt-ids", "1,2,3");
        Cli.AssertCleanError(result, missing);
    }

    [Fact]
    public void CorruptCheckpoint_OneLineNoStackTraceNonZeroExit()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        using var temp = new TempFolder();
        string model = temp.CopyGolden("llama");
        string weights = Path.Combine(model, "model.safetensors");
        SafetensorsEditor.EditHeader(weights, header => header["lm_head.weight"]!["dtype"] = "I64");
        var result = RunProcess("perplexity", model, "--ids", weights);
        Cli.AssertCleanError(result, weights, "I64");
    }

    [Fact]
    public void ParseError_NonZeroExit()
    {
        var result = RunProcess("generate", "--max-tokens", "many");
        Cli.AssertCleanError(result, "many");
    }

    [Fact]
    public async Task CtrlC_StopsGenerationWithExitCode130()
    {
        if (SharedData.Root is null || !OperatingSystem.IsLinux())
        {
            return;
        }

        // A long generation (tens of thousands of tokens); interrupt it once it has started streaming.
        string model = SharedData.Path("reference", "golden", "llama3-rope-scaling");
        using var process = Process.Start(StartInfo(["generate", model, "--prompt-ids", "1,2,3", "-n", "30000", "--ctx", "30000",
            "--temperature", "1", "--seed", "1", "--ignore-eos"]))!;
        var stderr = process.StandardError.ReadToEndAsync();
        var buffer = new char[256];
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        int first = await process.StandardOutput.ReadAsync(buffer.AsMemory(), timeout.Token);
        Assert.True(first > 0, "no output before the process ended");
        using (var kill = Process.Start("kill", ["-INT", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync(timeout.Token);
        }

        string rest = await process.StandardOutput.ReadToEndAsync(timeout.Token);
        await process.WaitForExitAsync(timeout.Token);
        string errors = await stderr;
        Assert.True(process.ExitCode == 130, $"exit {process.ExitCode}; stderr: {errors}");
        Assert.Contains("cancelled.", errors);
        Assert.DoesNotContain("   at ", errors);
        Assert.NotEmpty(rest + new string(buffer, 0, first));
    }

    [Fact]
    public void GoldenModel_JsonOnStdout()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var result = RunProcess("generate", SharedData.Path("models", "stories260K", "stories260K.bin"), "--prompt-ids", "1", "-n", "8",
            "--temperature", "0", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(8, result.Json().GetProperty("token_ids").GetArrayLength());
        Assert.Equal("", result.Stderr);
    }
}
