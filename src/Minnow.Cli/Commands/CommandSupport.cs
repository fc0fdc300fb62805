using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Minnow.Cli.Commands;

/// <summary>What the commands share: the MODEL argument, output streams, JSON output and number formatting.</summary>
internal static class CommandSupport
{
    public static Argument<string?> ModelArgument() => new("model")
    {
        Arity = ArgumentArity.ZeroOrOne,
        Description = "A Hugging Face model folder (config.json + safetensors), a .gguf file or a llama2.c .bin " +
            $"(default: ${DefaultModel.EnvironmentVariable}, else {DefaultModel.RelativePath} in the repository).",
    };

    /// <summary>-t/--threads, as every command that computes takes it (default: MINNOW_THREADS, else one per core).</summary>
    public static Option<int?> ThreadsOption() => new("--threads", "-t")
    {
        Description = "Worker threads (default: $MINNOW_THREADS, else one per core).",
    };

    /// <summary>The thread count an --threads value asks for: the value, else MINNOW_THREADS, else one per core.</summary>
    public static int ResolveThreads(int? value) => value switch
    {
        null => Tensors.WorkerPool.DefaultThreadCount,
        < 1 => throw new MinnowException($"--threads must be at least 1 (got {value})."),
        int n => n,
    };

    public static Option<bool> JsonOption() => new("--json")
    {
        Description = "Print exactly one JSON object on stdout (progress and logs go to stderr).",
    };

    /// <summary>
    /// Sets a synchronous action that still receives the cancellation token (Ctrl+C). The work runs on the
    /// calling thread; exceptions reach <see cref="MinnowCli.Run"/> unchanged.
    /// </summary>
    public static void SetSyncAction(this Command command, Func<ParseResult, CancellationToken, int> action) =>
        command.SetAction((ParseResult r, CancellationToken ct) => Task.FromResult(action(r, ct)));

    public static TextWriter Out(ParseResult r) => r.InvocationConfiguration.Output;

    public static TextWriter Err(ParseResult r) => r.InvocationConfiguration.Error;

    /// <summary>Prints what was done at load (one line each, to stderr): warnings as they are, the rest as "note: ...".</summary>
    public static void WriteNotes(TextWriter err, IEnumerable<string> notes)
    {
        foreach (var note in notes)
        {
            err.WriteLine(note.StartsWith("warning:", StringComparison.Ordinal) ? note : "note: " + note);
        }
    }

    /// <summary>True when stderr is the real console and a terminal (so progress bars can be drawn).</summary>
    public static bool ErrIsTerminal(ParseResult r) => ReferenceEquals(Err(r), Console.Error) && !Console.IsErrorRedirected;

    /// <summary>Writes one JSON object (on one line) to <paramref name="output"/>.</summary>
    public static void WriteJson(TextWriter output, Action<Utf8JsonWriter> body)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            body(writer);
            writer.WriteEndObject();
        }

        output.WriteLine(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
        output.Flush();
    }

    /// <summary>A number, or null when it is not finite (JSON has no NaN or infinity).</summary>
    public static void Number(this Utf8JsonWriter writer, string name, double value)
    {
        if (double.IsFinite(value))
        {
            writer.WriteNumber(name, value);
        }
        else
        {
            writer.WriteNull(name);
        }
    }

    public static void Ints(this Utf8JsonWriter writer, string name, IEnumerable<int> values)
    {
        writer.WriteStartArray(name);
        foreach (int v in values)
        {
            writer.WriteNumberValue(v);
        }

        writer.WriteEndArray();
    }

    /// <summary>The peak resident memory of this process so far, in bytes (0 when unknown).</summary>
    public static long PeakMemoryBytes()
    {
        try
        {
            using var self = Process.GetCurrentProcess();
            return self.PeakWorkingSet64;
        }
        catch (PlatformNotSupportedException)
        {
            return 0;
        }
    }

    public static string Count(long n) => n.ToString("N0", CultureInfo.InvariantCulture);

    /// <summary>1234567 → "1.23 M".</summary>
    public static string Short(long n) => n switch
    {
        >= 1_000_000_000 => (n / 1e9).ToString("0.##", CultureInfo.InvariantCulture) + " B",
        >= 1_000_000 => (n / 1e6).ToString("0.##", CultureInfo.InvariantCulture) + " M",
        >= 1_000 => (n / 1e3).ToString("0.##", CultureInfo.InvariantCulture) + " K",
        _ => n.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>Bytes in binary units: "4.71 MiB".</summary>
    public static string Bytes(long n)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double value = n;
        int unit = 0;
        while (value >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }

        return unit == 0 ? $"{n} B" : value.ToString("0.##", CultureInfo.InvariantCulture) + " " + units[unit];
    }

    public static string F(double value, string format = "0.##") => value.ToString(format, CultureInfo.InvariantCulture);

    /// <summary>Parses "1,2,3" or "1 2 3" (commas, whitespace or both) into token ids.</summary>
    public static int[] ParseIds(string text, string source)
    {
        var parts = text.Split([',', ' ', '\t', '\r', '\n'], StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out ids[i]))
            {
                throw new MinnowException($"{source}: '{parts[i]}' is not a token id (expected non-negative integers separated by commas or spaces).");
            }
        }

        return ids;
    }
}
