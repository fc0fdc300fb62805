using System.Diagnostics;
using System.Globalization;

namespace Minnow.Benchmarking;

/// <summary>
/// This process's resident memory as the kernel counts it (<c>/proc/self/status</c>): what a benchmark reports as
/// peak RSS. It is per process, so engines compared side by side each run in their own process. Mapped weight
/// pages that were touched count, as they should.
/// </summary>
public static class ProcessMemory
{
    /// <summary>The peak resident set size so far (VmHWM), in bytes; the peak working set where /proc is absent.</summary>
    public static long PeakResidentBytes() => ReadStatus("VmHWM:") ?? Fallback(p => p.PeakWorkingSet64);

    /// <summary>The current resident set size (VmRSS), in bytes.</summary>
    public static long CurrentResidentBytes() => ReadStatus("VmRSS:") ?? Fallback(p => p.WorkingSet64);

    /// <summary>Parses a "Key:   1234 kB" line of /proc/self/status into bytes.</summary>
    public static long? ParseStatusLine(string line, string key)
    {
        if (!line.StartsWith(key, StringComparison.Ordinal))
        {
            return null;
        }

        var parts = line[key.Length..].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0 || !long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out long value))
        {
            return null;
        }

        long unit = parts.Length > 1 ? parts[1].ToLowerInvariant() switch
        {
            "kb" => 1024,
            "mb" => 1024 * 1024,
            "gb" => 1024L * 1024 * 1024,
            _ => 1,
        } : 1;
        return value * unit;
    }

    private static long? ReadStatus(string key)
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
            {
                if (ParseStatusLine(line, key) is long bytes)
                {
                    return bytes;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }

        return null;
    }

    private static long Fallback(Func<Process, long> read)
    {
        try
        {
            using var self = Process.GetCurrentProcess();
            return read(self);
        }
        catch (PlatformNotSupportedException)
        {
            return 0;
        }
    }
}
