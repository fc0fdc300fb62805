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

/// <summary>Writes a file so that readers see either the old or the complete new content.</summary>
public static class AtomicFile
{
    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(folder);
        string temp = Path.Combine(folder, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try
            {
                File.Delete(temp);
            }
            catch (IOException)
            {
            }

            throw;
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, s => s.Write(new UTF8Encoding(false).GetBytes(text)));
}
