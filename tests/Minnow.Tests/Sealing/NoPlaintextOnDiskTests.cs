using System.Globalization;
using Minnow.Benchmarking;
using Minnow.Loading;
using Minnow.Sealing;
using Minnow.Tests.Cli;

namespace Minnow.Tests.Sealing;

/// <summary>
/// Loads and runs a sealed model while watching where its plaintext goes: no file written in any writable
/// directory during the load holds its weights, and no file-backed mapping of this process holds them (the
/// decrypted files live in anonymous memory). The model's weights come from a fresh seed, so no other test's files
/// or mappings can hold the same bytes.
/// </summary>
public sealed class NoPlaintextOnDiskTests
{
    [Fact]
    public void SealedModelIsDecryptedIntoAnonymousMemoryOnly()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        using var t = new TempFolder();
        ulong seed = (ulong)Environment.TickCount64 ^ 0x5ea1ed;
        string folder = SealTestModels.Write(Path.Combine(t.Path, "plain"), seed);
        using var key = PackageKey.Generate();
        using var signer = SigningKey.Generate();
        string pkg = t.File("m.mpkg");
        SealTestModels.Seal(folder, pkg, key, signer);

        // Needles: 48-byte runs of the weights (random values, so any hit is the model's bytes).
        byte[] weights = File.ReadAllBytes(Path.Combine(folder, "model.safetensors"));
        var rng = new Random(3);
        var needles = Enumerable.Range(0, 12).Select(_ => weights.AsSpan(weights.Length / 8 + rng.Next(weights.Length * 3 / 4), 48).ToArray()).ToList();
        Directory.Delete(folder, recursive: true);
        Assert.False(ContainsAny(File.ReadAllBytes(pkg), needles), "the package holds plaintext weights");

        var start = DateTime.UtcNow.AddSeconds(-1);
        using (var loaded = LoadedModel.Open(pkg, null, new PackageAccess(key, new PackagePolicy { TrustedSigners = [signer] })))
        {
            var logits = MinnowEngine.AllLogits(loaded.Model, [1, 2, 3, 4]);
            Assert.Equal(4 * SealTestModels.Tiny.VocabSize, logits.Length);

            // The process's file-backed mappings, while the model is loaded: none maps a file holding the weights.
            int scanned = 0;
            using var mem = new FileStream("/proc/self/mem", FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.RandomAccess);
            foreach (string line in File.ReadLines("/proc/self/maps"))
            {
                var parts = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length < 6 || parts[1][0] != 'r' || parts[5].StartsWith('[') || parts[5].StartsWith("anon_inode:", StringComparison.Ordinal))
                {
                    continue;
                }

                Assert.DoesNotContain(t.Path, parts[5]);
                var range = parts[0].Split('-');
                ulong from = ulong.Parse(range[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                ulong to = ulong.Parse(range[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                // Read through /proc/self/mem: a range unmapped meanwhile (tests run in parallel) reads as an error, not a crash.
                Assert.False(MemoryContainsAny(mem, from, to, needles), $"a file-backed mapping holds the model's weights: {line}");
                scanned++;
            }

            Assert.True(scanned > 0);
        }

        // Every file written since the load began, in every writable directory we can reach: none holds the weights.
        var roots = new[] { Path.GetTempPath(), "/tmp", "/var/tmp", "/dev/shm", Environment.CurrentDirectory, AppContext.BaseDirectory }
            .Where(Directory.Exists).Select(Path.GetFullPath).Distinct().ToList();
        int files = 0;
        foreach (string root in roots)
        {
            foreach (var file in RecentFiles(new DirectoryInfo(root), start, depth: 6))
            {
                files++;
                Assert.False(FileContainsAny(file, needles), $"{file.FullName} holds the model's weights");
            }
        }

        Assert.True(files > 0 || roots.Count > 0);
    }

    private static IEnumerable<FileInfo> RecentFiles(DirectoryInfo dir, DateTime since, int depth)
    {
        FileSystemInfo[] entries;
        try
        {
            entries = dir.GetFileSystemInfos();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            yield break;
        }

        foreach (var entry in entries)
        {
            if (entry.LinkTarget != null)
            {
                continue;
            }

            // Empty entries are skipped: they hold nothing, and FIFOs and sockets (the runtime's debug pipes in /tmp)
            // show as empty and would block a reader.
            if (entry is FileInfo f && f.LastWriteTimeUtc >= since && f.Length > 0)
            {
                yield return f;
            }
            else if (entry is DirectoryInfo d && depth > 0)
            {
                foreach (var inner in RecentFiles(d, since, depth - 1))
                {
                    yield return inner;
                }
            }
        }
    }

    private static bool MemoryContainsAny(FileStream mem, ulong from, ulong to, List<byte[]> needles)
    {
        var buffer = new byte[(1 << 22) + 64];
        for (ulong at = from; at < to;)
        {
            int length = (int)Math.Min((ulong)buffer.Length, to - at);
            int n;
            try
            {
                n = RandomAccess.Read(mem.SafeFileHandle, buffer.AsSpan(0, length), (long)at);
            }
            catch (IOException)
            {
                return false;
            }

            if (n <= 0)
            {
                return false;
            }

            if (ContainsAny(buffer.AsSpan(0, n), needles))
            {
                return true;
            }

            at += (ulong)Math.Max(1, n - 47);
            if (n < 48)
            {
                break;
            }
        }

        return false;
    }

    private static bool FileContainsAny(FileInfo file, List<byte[]> needles)
    {
        try
        {
            using var stream = new FileStream(file.FullName, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            var buffer = new byte[(1 << 22) + 64];
            int carry = 0;
            while (true)
            {
                int n = stream.Read(buffer, carry, buffer.Length - carry);
                if (n <= 0)
                {
                    return false;
                }

                int length = carry + n;
                if (ContainsAny(buffer.AsSpan(0, length), needles))
                {
                    return true;
                }

                carry = Math.Min(length, 47);
                Array.Copy(buffer, length - carry, buffer, 0, carry);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static bool ContainsAny(ReadOnlySpan<byte> haystack, List<byte[]> needles)
    {
        foreach (var needle in needles)
        {
            if (haystack.IndexOf(needle) >= 0)
            {
                return true;
            }
        }

        return false;
    }
}
