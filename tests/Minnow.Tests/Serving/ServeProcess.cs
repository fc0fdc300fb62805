using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Minnow.Tests.Serving;

/// <summary>
/// <c>minnow serve</c> as a real child process (the built CLI, on a free loopback port): started with the given
/// arguments, waited for until it prints "ready", stopped with SIGTERM. Its stderr is kept for the test to read.
/// </summary>
public sealed class ServeProcess : IAsyncDisposable
{
    private readonly StringBuilder _stderr = new();
    private readonly Task _stderrPump;

    private ServeProcess(Process process)
    {
        Process = process;
        _stderrPump = Task.Run(async () =>
        {
            while (await process.StandardError.ReadLineAsync() is { } line)
            {
                lock (_stderr)
                {
                    _stderr.AppendLine(line);
                }
            }
        });
    }

    public Process Process { get; }

    /// <summary>The address it listens on, e.g. http://127.0.0.1:40123.</summary>
    public string Url { get; private set; } = "";

    /// <summary>What it printed on stderr so far.</summary>
    public string Stderr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    /// <summary>Starts <c>minnow serve ARGS --port 0</c> and waits (up to a minute) until the model is loaded.</summary>
    public static async Task<ServeProcess> StartAsync(params string[] args)
    {
        var start = new ProcessStartInfo(Dotnet()) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(CliDll());
        start.ArgumentList.Add("serve");
        foreach (string a in args)
        {
            start.ArgumentList.Add(a);
        }

        start.ArgumentList.Add("--port");
        start.ArgumentList.Add("0");
        var server = new ServeProcess(Process.Start(start)!);
        try
        {
            server.Url = await server.ReadUntil("listening on ");
            await server.ReadUntil("ready: ");
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>SIGTERM, then waits (up to a minute) for the exit code.</summary>
    public async Task<int> StopAsync()
    {
        if (!Process.HasExited)
        {
            using var kill = Process.Start("kill", ["-TERM", Process.Id.ToString(CultureInfo.InvariantCulture)])!;
            await kill.WaitForExitAsync();
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await Process.WaitForExitAsync(timeout.Token);
        await _stderrPump;
        return Process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        if (!Process.HasExited)
        {
            Process.Kill();
            await Process.WaitForExitAsync();
        }

        Process.Dispose();
    }

    private async Task<string> ReadUntil(string prefix)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await Process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
        {
            if (line.StartsWith(prefix, StringComparison.Ordinal))
            {
                return line[prefix.Length..].Trim();
            }
        }

        await Process.WaitForExitAsync(timeout.Token);
        await _stderrPump;
        throw new InvalidOperationException($"minnow serve exited {Process.ExitCode} before printing '{prefix}': {Stderr}");
    }

    private static string Dotnet() =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";

    /// <summary>The CLI built beside these tests (same configuration and framework).</summary>
    private static string CliDll()
    {
        string baseDir = AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar);
        string framework = Path.GetFileName(baseDir);
        string configuration = Path.GetFileName(Path.GetDirectoryName(baseDir)!);
        string built = Path.Combine(SharedData.RepositoryRoot, "src", "Minnow.Cli", "bin", configuration, framework, "Minnow.Cli.dll");
        return File.Exists(built) ? built : Path.Combine(AppContext.BaseDirectory, "Minnow.Cli.dll");
    }
}
