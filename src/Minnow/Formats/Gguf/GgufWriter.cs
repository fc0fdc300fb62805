using System.Text;
using Minnow.Tensors;

namespace Minnow.Formats.Gguf;

/// <summary>
/// Writes a GGUF v3 file: metadata, then tensor infos, then the aligned tensor data. The file is written to a
/// temporary file beside the target and renamed into place, so a failed export never leaves a half-written model.
/// Shapes are given row-major (as <see cref="Tensor.Shape"/>) and stored innermost-first as GGUF expects.
/// </summary>
public sealed unsafe class GgufWriter
{
    private readonly List<PendingTensor> _tensors = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    public GgufWriter(int alignment = GgufFile.DefaultAlignment)
    {
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(alignment), "The alignment must be a power of two.");
        }

        Alignment = alignment;
        Metadata = new GgufMetadata("output");
    }

    public int Alignment { get; }

    /// <summary>The metadata to write, in insertion order.</summary>
    public GgufMetadata Metadata { get; }

    /// <summary>Sets a metadata value; the GGUF type follows the .NET type (<c>uint</c> → UINT32, <c>string[]</c> → array of strings...).</summary>
    public GgufWriter Set(string key, object value)
    {
        Metadata.Set(key, value);
        return this;
    }

    /// <summary>Adds a tensor from bytes already in <paramref name="type"/>'s storage format.</summary>
    public GgufWriter AddTensor(string name, DType type, long[] shape, byte[] data)
    {
        long elements = ElementCount(shape);
        if (type.IsSparse())
        {
            fixed (byte* p = data)
            {
                if (shape.Length != 2 || SparseMatrix.Measure(type, p, data.LongLength, checked((int)shape[0]), checked((int)shape[1]), out string? fault) != data.LongLength)
                {
                    throw new ArgumentException($"Tensor '{name}': not a {type.Name()} matrix of shape {string.Join("x", shape)}.", nameof(data));
                }
            }
        }
        else if (data.LongLength != type.ByteCount(elements))
        {
            throw new ArgumentException($"Tensor '{name}': {data.Length} bytes given, {type.ByteCount(elements)} expected for {type.Name()} {string.Join("x", shape)}.", nameof(data));
        }

        Add(new PendingTensor(name, type, (long[])shape.Clone(), data, null));
        return this;
    }

    /// <summary>Adds a tensor whose data is read from <paramref name="tensor"/>'s memory when <see cref="Write"/> runs.</summary>
    public GgufWriter AddTensor(Tensor tensor, string? name = null)
    {
        Add(new PendingTensor(name ?? tensor.Name, tensor.Type, (long[])tensor.Shape.Clone(), null, tensor));
        return this;
    }

    /// <summary>Writes the file atomically (temporary file + rename).</summary>
    public void Write(string path) => Safetensors.AtomicFile.Write(path, WriteTo);

    /// <summary>Writes the whole file to <paramref name="stream"/> (which must start at position 0 of the file).</summary>
    public void WriteTo(Stream stream)
    {
        var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        var metadata = Metadata.ToList();
        if (Alignment != GgufFile.DefaultAlignment && !Metadata.ContainsKey("general.alignment"))
        {
            metadata.Add(new("general.alignment", GgufValue.From((uint)Alignment)));
        }

        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)metadata.Count);
        foreach (var (key, value) in metadata)
        {
            WriteString(w, key);
            w.Write((uint)value.Type);
            WriteValue(w, value.Type, value.Value, value.ElementType);
        }

        long offset = 0;
        var offsets = new long[_tensors.Count];
        for (int i = 0; i < _tensors.Count; i++)
        {
            var t = _tensors[i];
            WriteString(w, t.Name);
            w.Write((uint)t.Shape.Length);
            for (int d = t.Shape.Length - 1; d >= 0; d--)
            {
                w.Write((ulong)t.Shape[d]);
            }

            w.Write(GgmlType.FromDType(t.Type));
            offsets[i] = offset;
            w.Write((ulong)offset);
            offset = GgufFile.AlignUp(offset + (t.Bytes?.LongLength ?? t.Source!.ByteSize), Alignment);
        }

        w.Flush();
        long position = stream.Position;
        Pad(stream, GgufFile.AlignUp(position, Alignment) - position);
        long dataStart = stream.Position;
        for (int i = 0; i < _tensors.Count; i++)
        {
            Pad(stream, dataStart + offsets[i] - stream.Position);
            var t = _tensors[i];
            if (t.Bytes != null)
            {
                stream.Write(t.Bytes);
            }
            else
            {
                byte* p = t.Source!.Data;
                long remaining = t.Source.ByteSize;
                while (remaining > 0)
                {
                    int chunk = (int)Math.Min(remaining, 1 << 24);
                    stream.Write(new ReadOnlySpan<byte>(p, chunk));
                    p += chunk;
                    remaining -= chunk;
                }
            }
        }

        stream.Flush();
    }

    private void Add(PendingTensor tensor)
    {
        if (!_names.Add(tensor.Name))
        {
            throw new ArgumentException($"Tensor '{tensor.Name}' was added twice.");
        }

        if (tensor.Shape.Length > 0 && tensor.Shape[^1] % tensor.Type.BlockSize() != 0)
        {
            throw new ArgumentException($"Tensor '{tensor.Name}': rows of {tensor.Shape[^1]} values are not a multiple of the {tensor.Type.Name()} block size.");
        }

        _tensors.Add(tensor);
    }

    private static long ElementCount(long[] shape)
    {
        long n = 1;
        foreach (long d in shape)
        {
            n *= d;
        }

        return n;
    }

    private static void Pad(Stream stream, long count)
    {
        Span<byte> zeros = stackalloc byte[64];
        zeros.Clear();
        while (count > 0)
        {
            int n = (int)Math.Min(count, zeros.Length);
            stream.Write(zeros[..n]);
            count -= n;
        }
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value, GgufValueType elementType)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write((byte)value); break;
            case GgufValueType.Int8: w.Write((sbyte)value); break;
            case GgufValueType.UInt16: w.Write((ushort)value); break;
            case GgufValueType.Int16: w.Write((short)value); break;
            case GgufValueType.UInt32: w.Write((uint)value); break;
            case GgufValueType.Int32: w.Write((int)value); break;
            case GgufValueType.Float32: w.Write((float)value); break;
            case GgufValueType.Bool: w.Write((byte)((bool)value ? 1 : 0)); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt64: w.Write((ulong)value); break;
            case GgufValueType.Int64: w.Write((long)value); break;
            case GgufValueType.Float64: w.Write((double)value); break;
            case GgufValueType.Array:
                {
                    var array = (Array)value;
                    w.Write((uint)elementType);
                    w.Write((ulong)array.Length);
                    foreach (object item in array)
                    {
                        if (elementType == GgufValueType.Array)
                        {
                            var inner = GgufValue.From(item);
                            WriteValue(w, GgufValueType.Array, inner.Value, inner.ElementType);
                        }
                        else
                        {
                            WriteValue(w, elementType, item, GgufValueType.UInt8);
                        }
                    }

                    break;
                }

            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    private sealed record PendingTensor(string Name, DType Type, long[] Shape, byte[]? Bytes, Tensor? Source);
}
