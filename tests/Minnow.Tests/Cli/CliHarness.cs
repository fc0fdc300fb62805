using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Minnow.Cli;

namespace Minnow.Tests.Cli;

/// <summary>The outcome of one <c>minnow</c> invocation.</summary>
public sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    /// <summary>The stdout parsed as exactly one JSON value (fails the test otherwise).</summary>
    public JsonElement Json()
    {
        using var doc = JsonDocument.Parse(Stdout);
        return doc.RootElement.Clone();
    }

    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
}

/// <summary>Runs the command line in-process, capturing its output and exit code.</summary>
public static class Cli
{
    /// <summary>Whether the default model (models/default or $MINNOW_DEFAULT_MODEL) is there.</summary>
    public static bool DefaultModelExists
    {
        get
        {
            try
            {
                DefaultModel.Resolve(null);
                return true;
            }
            catch (MinnowException)
            {
                return false;
            }
        }
    }

    public static CliResult Run(params string[] args) => Run(args, CancellationToken.None);

    public static CliResult Run(string[] args, CancellationToken cancellation)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = MinnowCli.Run(args, stdout, stderr, cancellation);
        return new CliResult(code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Asserts a clean failure: exit 1, one "error: " line on stderr naming <paramref name="mustContain"/>, no stack trace.</summary>
    public static CliResult AssertFails(string[] args, params string[] mustContain)
    {
        var result = Run(args);
        AssertCleanError(result, mustContain);
        return result;
    }

    public static void AssertCleanError(CliResult result, params string[] mustContain)
    {
        Assert.True(result.ExitCode == 1, result.ToString());
        string[] lines = result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, "expected one line on stderr:\n" + result);
        Assert.StartsWith("error: ", lines[0]);
        Assert.DoesNotContain("   at ", result.Stderr);
        Assert.DoesNotContain("Exception", result.Stderr);
        Assert.Equal("", result.Stdout);
        foreach (string s in mustContain)
        {
            Assert.True(lines[0].Contains(s, StringComparison.Ordinal), $"'{s}' not in: {lines[0]}");
        }
    }
}

/// <summary>A temporary folder, deleted on dispose.</summary>
public sealed class TempFolder : IDisposable
{
    public TempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "minnow-cli-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>Copies a golden checkpoint's config.json and model.safetensors (F32) into a new subfolder.</summary>
    public string CopyGolden(string name, string? folder = null)
    {
        string target = System.IO.Path.Combine(Path, folder ?? name);
        Directory.CreateDirectory(target);
        foreach (string file in new[] { "config.json", "model.safetensors" })
        {
            System.IO.File.Copy(SharedData.Path("reference", "golden", name, file), System.IO.Path.Combine(target, file));
        }

        return target;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Reads and rewrites safetensors files, to build broken checkpoints.</summary>
public static class SafetensorsEditor
{
    public static (JsonObject Header, byte[] Data) Read(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        long length = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)length))!.AsObject();
        return (header, bytes[(8 + (int)length)..]);
    }

    public static void Write(string path, JsonObject header, byte[] data)
    {
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        using var file = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)json.Length);
        file.Write(length);
        file.Write(json);
        file.Write(data);
    }

    /// <summary>Rewrites the header of <paramref name="path"/> in place (the data is kept as is).</summary>
    public static void EditHeader(string path, Action<JsonObject> edit)
    {
        var (header, data) = Read(path);
        edit(header);
        Write(path, header, data);
    }

    /// <summary>The number of parameters the header declares (product of every tensor's shape).</summary>
    public static long ParameterCount(string path)
    {
        var (header, _) = Read(path);
        long total = 0;
        foreach (var (name, value) in header)
        {
            if (name == "__metadata__")
            {
                continue;
            }

            total += value!["shape"]!.AsArray().Aggregate(1L, (p, d) => p * d!.GetValue<long>());
        }

        return total;
    }
}
