using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Minnow.Tensors;

namespace Minnow.Formats.Safetensors;

/// <summary>
/// Writes a safetensors file: an 8-byte little-endian header length, a JSON header (name → dtype, shape,
/// data_offsets, plus optional string <c>__metadata__</c>) padded with spaces to a multiple of 8 bytes, then the
/// tensors' bytes in the order they were added. Values are given as float32 and stored as F32, F16 or BF16
/// (round to nearest even). <see cref="Save"/> is atomic: it writes a temporary file beside the target, flushes
/// it to disk and renames it over the target, so a reader never sees a half-written file.
/// </summary>
public sealed class SafetensorsWriter
{
    private const int ChunkElements = 1 << 16;

    /// <summary>A tensor to write: its bytes already encoded, or float32 values encoded chunk by chunk when written.</summary>
    private sealed record Entry(string Name, DType Type, long[] Shape, byte[]? Data, float[]? Values)
    {
        public long ByteLength => Data?.LongLength ?? (Values!.LongLength * Type.BlockBytes());
    }

    private readonly List<Entry> _tensors = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, string> _metadata = new(StringComparer.Ordinal);

    /// <summary>Adds a tensor (copied now, converted to <paramref name="storeAs"/>).</summary>
    public void Add(string name, long[] shape, ReadOnlySpan<float> values, DType storeAs = DType.F32)
    {
        Check(name, shape, values.Length, storeAs);
        _tensors.Add(new Entry(name, storeAs, (long[])shape.Clone(), Dequantize.FromFloats(storeAs, values), null));
    }

    /// <summary>
    /// Adds a tensor without copying it: <paramref name="values"/> is converted to <paramref name="storeAs"/> a chunk
    /// at a time while the file is written, so a large model is never held twice. The array must not change until then.
    /// </summary>
    public void AddWithoutCopy(string name, long[] shape, float[] values, DType storeAs = DType.F32)
    {
        Check(name, shape, values.Length, storeAs);
        _tensors.Add(new Entry(name, storeAs, (long[])shape.Clone(), null, values));
    }

    /// <summary>Adds a string entry to the header's <c>__metadata__</c>.</summary>
    public void AddMetadata(string key, string value) => _metadata[key] = value;

    public int Count => _tensors.Count;

    /// <summary>The header and data as written by <see cref="Save"/>.</summary>
    public void WriteTo(Stream stream)
    {
        byte[] header = BuildHeader();
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);
        byte[]? chunk = null;
        try
        {
            foreach (var t in _tensors)
            {
                if (t.Data != null)
                {
                    stream.Write(t.Data);
                    continue;
                }

                int size = t.Type.BlockBytes();
                chunk ??= ArrayPool<byte>.Shared.Rent(ChunkElements * 4);
                for (int start = 0; start < t.Values!.Length; start += ChunkElements)
                {
                    int count = Math.Min(ChunkElements, t.Values.Length - start);
                    var bytes = chunk.AsSpan(0, count * size);
                    Dequantize.FromFloats(t.Type, t.Values.AsSpan(start, count), bytes);
                    stream.Write(bytes);
                }
            }
        }
        finally
        {
            if (chunk != null)
            {
                ArrayPool<byte>.Shared.Return(chunk);
            }
        }
    }

    /// <summary>Writes the file atomically (temporary file in the same folder, fsync, rename).</summary>
    public void Save(string path) => AtomicFile.Write(path, WriteTo);

    private void Check(string name, long[] shape, int count, DType storeAs)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (storeAs is not (DType.F32 or DType.F16 or DType.BF16))
        {
            throw new ArgumentException($"safetensors output supports F32, F16 and BF16, not {storeAs.Name()}.", nameof(storeAs));
        }

        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("safetensors writing needs a little-endian machine.");
        }

        long elements = 1;
        foreach (long d in shape)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(d);
            elements *= d;
        }

        if (elements != count)
        {
            throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] holds {elements} values but {count} were given.");
        }

        if (name == "__metadata__" || !_names.Add(name))
        {
            throw new ArgumentException($"tensor name '{name}' is reserved or already added.", nameof(name));
        }
    }

    private byte[] BuildHeader()
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (_metadata.Count > 0)
            {
                json.WriteStartObject("__metadata__");
                foreach (var (k, v) in _metadata)
                {
                    json.WriteString(k, v);
                }

                json.WriteEndObject();
            }

            long offset = 0;
            foreach (var t in _tensors)
            {
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", t.Type.Name());
                json.WriteStartArray("shape");
                foreach (long d in t.Shape)
                {
                    json.WriteNumberValue(d);
                }

                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + t.ByteLength);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += t.ByteLength;
            }

            json.WriteEndObject();
        }

        int padded = (int)((buffer.Length + 7) / 8 * 8);
        while (buffer.Length < padded)
        {
            buffer.WriteByte((byte)' ');
        }

        return buffer.ToArray();
    }
}

/// <summary>
/// Writes a file so that readers see either the old or the complete new content, whatever happens meanwhile (kill -9,
/// power loss, a full disk): the bytes go to a temporary file in the same folder (<c>.NAME.PID.ID.tmp</c>), are flushed
/// to the disk, and the file is renamed over NAME; the folder is then synced so the rename itself is durable. A failed
/// write deletes its temporary file, and the next write of NAME deletes those a killed process left behind.
/// </summary>
public static partial class AtomicFile
{
    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string temp = TemporaryFor(full);
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }

            Commit(temp, full);
        }
        catch (Exception e)
        {
            TryDelete(temp);
            if (e is IOException io && !(e is FileNotFoundException or DirectoryNotFoundException))
            {
                throw new MinnowException($"{full}: could not be written ({io.Message.TrimEnd('.')}); nothing was replaced.", io);
            }

            throw;
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, s => s.Write(new UTF8Encoding(false).GetBytes(text)));

    /// <summary>Copies a file atomically (the copy is complete or absent).</summary>
    public static void Copy(string source, string destination) =>
        Write(destination, s =>
        {
            using var input = File.OpenRead(source);
            input.CopyTo(s);
        });

    /// <summary>
    /// A new temporary path beside <paramref name="full"/> (creating the folder), after deleting the temporary files
    /// of earlier writes of the same file whose process is gone. <paramref name="suffix"/> tells several apart.
    /// </summary>
    public static string TemporaryFor(string full, string suffix = "")
    {
        string folder = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(folder);
        CleanLeftovers(full);
        return Path.Combine(folder, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}{suffix}.tmp");
    }

    /// <summary>Flushes <paramref name="temp"/> (written by other code) to the disk and renames it over <paramref name="full"/>.</summary>
    public static void Commit(string temp, string full)
    {
        using (var stream = new FileStream(temp, FileMode.Open, FileAccess.ReadWrite, FileShare.None))
        {
            stream.Flush(flushToDisk: true);
        }

        File.Move(temp, full, overwrite: true);
        SyncFolder(Path.GetDirectoryName(full)!);
    }

    /// <summary>Deletes the temporary files that killed writers of <paramref name="full"/> left (those of live processes stay).</summary>
    public static int CleanLeftovers(string full)
    {
        string folder = Path.GetDirectoryName(full)!;
        int removed = 0;
        if (!Directory.Exists(folder))
        {
            return 0;
        }

        // ".NAME.PID.ID.tmp", and "..NAME.PID.ID.f32.tmp.PID.ID.tmp" for a temporary file written through this class.
        string prefix = "." + Path.GetFileName(full) + ".";
        foreach (string file in Directory.EnumerateFiles(folder, "*" + prefix + "*.tmp"))
        {
            string fileName = Path.GetFileName(file);
            int start = fileName.StartsWith(prefix, StringComparison.Ordinal) ? prefix.Length
                : fileName.StartsWith("." + prefix, StringComparison.Ordinal) ? prefix.Length + 1 : -1;
            if (start < 0)
            {
                continue;
            }

            string rest = fileName[start..];
            int dot = rest.IndexOf('.', StringComparison.Ordinal);
            if (dot > 0 && int.TryParse(rest.AsSpan(0, dot), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid) &&
                pid != Environment.ProcessId && !ProcessIsAlive(pid) && TryDelete(file))
            {
                removed++;
            }
        }

        return removed;
    }

    private static bool ProcessIsAlive(int pid)
    {
        if (OperatingSystem.IsLinux())
        {
            return Directory.Exists($"/proc/{pid}");
        }

        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static bool TryDelete(string file)
    {
        try
        {
            File.Delete(file);
            return true;
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>fsync of the folder, so that a rename survives a power loss (Linux; elsewhere the rename is enough).</summary>
    private static void SyncFolder(string folder)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        int fd = Open(folder, 0 /* O_RDONLY */);
        if (fd >= 0)
        {
            _ = Fsync(fd);
            _ = Close(fd);
        }
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "open", StringMarshalling = System.Runtime.InteropServices.StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "fsync")]
    private static partial int Fsync(int fd);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
