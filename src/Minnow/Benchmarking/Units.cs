using System.Globalization;

namespace Minnow.Benchmarking;

/// <summary>
/// Sizes as every command prints them: MiB (2^20 bytes), the unit /proc and <c>/usr/bin/time</c> count memory in
/// (their "kB" are KiB), so a figure can be compared with theirs without conversion.
/// </summary>
public static class Units
{
    public const double BytesPerMiB = 1024.0 * 1024.0;

    public static string MiB(long bytes) => (bytes / BytesPerMiB).ToString("0.00", CultureInfo.InvariantCulture) + " MiB";
}
