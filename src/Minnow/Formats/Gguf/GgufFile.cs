using System.Diagnostics.CodeAnalysis;
using System.Text;
using Minnow.Formats;
using Minnow.Tensors;

namespace Minnow.Formats.Gguf;

/// <summary>
/// A GGUF (version 2 or 3) file, memory-mapped: the metadata is parsed when opened and the tensors are
/// <see cref="Tensor"/> views into the mapping (nothing is copied). GGUF lists dimensions innermost-first;
/// <see cref="Tensor.Shape"/> is the reverse (row-major), so a GGUF <c>[ne0=cols, ne1=rows]</c> becomes
/// <c>[rows, cols]</c>. Tensors keep the type stored in the file, including those Minnow has no kernels for
/// (<see cref="DTypeInfo.IsLoadOnly"/>; the model loader converts them). Dispose the file when its tensors are no
/// longer used.
/// </summary>
public sealed unsafe class GgufFile : IDisposable, IMappedFileOwner
{
    public const uint Magic = 0x46554747; // "GGUF" little-endian
    public const int DefaultAlignment = 32;

    private readonly MappedFile _file;
    private readonly Dictionary<string, Tensor> _byName;

    private GgufFile(MappedFile file, uint version, GgufMetadata metadata, int alignment, long dataOffset, List<Tensor> tensors)
    {
        _file = file;
        Version = version;
        Metadata = metadata;
        Alignment = alignment;
        DataOffset = dataOffset;
        Tensors = tensors;
        _byName = new Dictionary<string, Tensor>(StringComparer.Ordinal);
    }

    public string Path => _file.Path;

    public MappedFile MappedFile => _file;

    /// <summary>The file name, as used in error messages.</summary>
    public string FileName => System.IO.Path.GetFileName(_file.Path);

    public uint Version { get; }

    public GgufMetadata Metadata { get; }

    /// <summary>Alignment of the tensor data (<c>general.alignment</c>, default 32).</summary>
    public int Alignment { get; }

    /// <summary>Byte offset of the tensor data section in the file.</summary>
    public long DataOffset { get; }

    /// <summary>The tensors, in file order.</summary>
    public IReadOnlyList<Tensor> Tensors { get; }

    /// <summary><c>general.architecture</c> ("llama", "qwen2", ...), or null.</summary>
    public string? Architecture => Metadata.GetString("general.architecture", null);

    public bool ContainsTensor(string name) => _byName.ContainsKey(name);

    public bool TryGetTensor(string name, [NotNullWhen(true)] out Tensor? tensor) => _byName.TryGetValue(name, out tensor);

    public Tensor GetTensor(string name) => _byName.TryGetValue(name, out var t)
        ? t
        : throw new MinnowException($"{FileName}: tensor '{SafeText.Of(name)}' not found.");

    public static GgufFile Open(string path) => Open(MappedFile.Open(path));

    /// <summary>Parses an opened file (a memory map, or a decrypted file in memory); takes ownership of it.</summary>
    public static GgufFile Open(MappedFile file)
    {
        try
        {
            return Parse(file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Reads only the header and metadata (no tensor checks): for inspecting files whose tensors Minnow cannot load.</summary>
    public static GgufMetadata ReadMetadata(string path)
    {
        using var file = MappedFile.Open(path);
        var reader = new Reader(file.Pointer, file.Length, System.IO.Path.GetFileName(path));
        ReadHeader(ref reader, out _, out _, out long kvCount);
        return ReadMetadata(ref reader, kvCount);
    }

    public void Dispose() => _file.Dispose();

    public override string ToString() => $"{FileName} (GGUF v{Version}, {Metadata.Count} keys, {Tensors.Count} tensors)";

    private static void ReadHeader(ref Reader reader, out uint version, out long tensorCount, out long kvCount)
    {
        if (reader.Length < 4 || reader.ReadUInt32("magic") != Magic)
        {
            throw new MinnowException($"{reader.Source}: not a GGUF file (the file does not start with \"GGUF\").");
        }

        version = reader.ReadUInt32("version");
        if (version is not (2 or 3))
        {
            throw new MinnowException($"{reader.Source}: unsupported GGUF version {version} (Minnow reads versions 2 and 3).");
        }

        ulong tensors = reader.ReadUInt64("tensor count");
        ulong kvs = reader.ReadUInt64("metadata count");

        // Each tensor info takes at least 8 (name length) + 4 + 4 + 8 bytes; each key/value at least 8 + 4 + 1.
        if (tensors > (ulong)(reader.Length / 24))
        {
            throw new MinnowException($"{reader.Source}: corrupt header (tensor count {tensors} is impossible for a file of {reader.Length} bytes).");
        }

        if (kvs > (ulong)(reader.Length / 13))
        {
            throw new MinnowException($"{reader.Source}: corrupt header (metadata count {kvs} is impossible for a file of {reader.Length} bytes).");
        }

        tensorCount = (long)tensors;
        kvCount = (long)kvs;
    }

    private static GgufMetadata ReadMetadata(ref Reader reader, long kvCount)
    {
        var metadata = new GgufMetadata(reader.Source);
        for (long i = 0; i < kvCount; i++)
        {
            string key = reader.ReadString("metadata key");
            var type = (GgufValueType)reader.ReadUInt32($"type of '{key}'");
            var value = ReadValue(ref reader, type, key, depth: 0);
            metadata.Set(key, value);
        }

        return metadata;
    }

    private static GgufFile Parse(MappedFile file)
    {
        string source = System.IO.Path.GetFileName(file.Path);
        var reader = new Reader(file.Pointer, file.Length, source);
        ReadHeader(ref reader, out uint version, out long tensorCount, out long kvCount);
        var metadata = ReadMetadata(ref reader, kvCount);

        int alignment = DefaultAlignment;
        if (metadata.ContainsKey("general.alignment"))
        {
            if (!metadata.TryGetLong("general.alignment", out long a) || a <= 0 || a > 1 << 20 || (a & (a - 1)) != 0)
            {
                throw new MinnowException($"{source}: invalid general.alignment {metadata["general.alignment"]} (must be a power of two).");
            }

            alignment = (int)a;
        }

        var infos = new (string Name, long[] Dims, uint Type, ulong Offset)[tensorCount];
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (long i = 0; i < tensorCount; i++)
        {
            string name = reader.ReadString("tensor name");
            uint nDims = reader.ReadUInt32($"dimension count of tensor '{name}'");
            if (nDims > 8)
            {
                throw new MinnowException($"{source}: tensor '{SafeText.Of(name)}' has {nDims} dimensions (at most 8 are possible).");
            }

            var dims = new long[nDims];
            for (int d = 0; d < nDims; d++)
            {
                ulong dim = reader.ReadUInt64($"shape of tensor '{name}'");
                if (dim > int.MaxValue)
                {
                    throw new MinnowException($"{source}: tensor '{SafeText.Of(name)}' has an impossible dimension {dim}.");
                }

                dims[d] = (long)dim;
            }

            uint type = reader.ReadUInt32($"type of tensor '{name}'");
            ulong offset = reader.ReadUInt64($"offset of tensor '{name}'");
            if (!names.Add(name))
            {
                throw new MinnowException($"{source}: tensor '{SafeText.Of(name)}' appears twice.");
            }

            infos[i] = (name, dims, type, offset);
        }

        long dataOffset = AlignUp(reader.Position, alignment);
        if (tensorCount > 0 && dataOffset > file.Length)
        {
            throw new MinnowException($"{source}: truncated file (tensor data would start at byte {dataOffset}, file has {file.Length}).");
        }

        var tensors = new List<Tensor>((int)tensorCount);
        var pending = new List<(string, DType, long[], long)>();
        foreach (var (name, dims, type, offset) in infos)
        {
            DType dtype = GgmlType.ToDType(type) ?? throw new MinnowException(
                $"{source}: tensor '{name}' has type {GgmlType.Name(type)}, which Minnow does not support (supported: {GgmlType.SupportedNames}); " +
                "re-quantize the original F16/F32 model to one of these, e.g. with llama.cpp's llama-quantize to Q4_K_M or Q8_0.");
            long elements = 1;
            foreach (long d in dims)
            {
                elements = d == 0 ? 0 : elements <= long.MaxValue / d ? elements * d : throw new MinnowException($"{source}: tensor '{SafeText.Of(name)}' is impossibly large.");
            }

            long rowLength = dims.Length > 0 ? dims[0] : 1;
            if (rowLength % dtype.BlockSize() != 0)
            {
                throw new MinnowException($"{source}: tensor '{SafeText.Of(name)}' has rows of {rowLength} values, not a multiple of the {dtype.Name()} block size {dtype.BlockSize()}.");
            }

            if (offset % (ulong)alignment != 0)
            {
                throw new MinnowException($"{source}: tensor '{SafeText.Of(name)}' data offset {offset} is not a multiple of the alignment {alignment}.");
            }

            long bytes;
            if (dtype.IsSparse())
            {
                if (dims.Length != 2 || dims[0] == 0 || offset > (ulong)(file.Length - dataOffset))
                {
                    throw new MinnowException($"{source}: tensor '{SafeText.Of(name)}' is {dtype.Name()}, which must be a matrix with rows inside the file.");
                }

                bytes = SparseMatrix.Measure(dtype, file.Pointer + dataOffset + (long)offset, file.Length - dataOffset - (long)offset, checked((int)dims[1]), checked((int)dims[0]), out string? fault);
                if (fault != null)
                {
                    throw new MinnowException($"{source}: tensor '{SafeText.Of(name)}' is not a valid {dtype.Name()} matrix: {fault}.");
                }
            }
            else
            {
                bytes = dtype.ByteCount(elements);
            }

            if (offset > (ulong)file.Length || dataOffset + (long)offset + bytes > file.Length)
            {
                decimal end = dataOffset + (decimal)offset + bytes;
                throw new MinnowException($"{source}: truncated tensor data (tensor '{SafeText.Of(name)}' ends at byte {end}, file has {file.Length}).");
            }

            var shape = new long[dims.Length];
            for (int d = 0; d < dims.Length; d++)
            {
                shape[d] = dims[dims.Length - 1 - d];
            }

            pending.Add((name, dtype, shape, dataOffset + (long)offset));
        }

        var result = new GgufFile(file, version, metadata, alignment, dataOffset, tensors);
        foreach (var (name, dtype, shape, start) in pending)
        {
            tensors.Add(new Tensor(name, dtype, shape, file.Pointer + start, result));
        }

        result.IndexTensors();
        return result;
    }

    private void IndexTensors()
    {
        foreach (var t in Tensors)
        {
            _byName[t.Name] = t;
        }
    }

    internal static long AlignUp(long value, int alignment) => (value + alignment - 1) / alignment * alignment;

    private static object ReadValue(ref Reader reader, GgufValueType type, string key, int depth)
    {
        switch (type)
        {
            case GgufValueType.UInt8: return reader.ReadByte(key);
            case GgufValueType.Int8: return (sbyte)reader.ReadByte(key);
            case GgufValueType.UInt16: return reader.Read<ushort>(key);
            case GgufValueType.Int16: return reader.Read<short>(key);
            case GgufValueType.UInt32: return reader.Read<uint>(key);
            case GgufValueType.Int32: return reader.Read<int>(key);
            case GgufValueType.Float32: return reader.Read<float>(key);
            case GgufValueType.Bool:
                {
                    byte b = reader.ReadByte(key);
                    return b switch
                    {
                        0 => false,
                        1 => true,
                        _ => throw new MinnowException($"{reader.Source}: metadata '{SafeText.Of(key)}' has an invalid bool value {b}."),
                    };
                }

            case GgufValueType.String: return reader.ReadString(key);
            case GgufValueType.UInt64: return reader.Read<ulong>(key);
            case GgufValueType.Int64: return reader.Read<long>(key);
            case GgufValueType.Float64: return reader.Read<double>(key);
            case GgufValueType.Array:
                return ReadArray(ref reader, key, depth);
            default:
                throw new MinnowException($"{reader.Source}: metadata '{SafeText.Of(key)}' has an unknown value type {(uint)type}.");
        }
    }

    private static GgufValue ReadArray(ref Reader reader, string key, int depth)
    {
        if (depth > 4)
        {
            throw new MinnowException($"{reader.Source}: metadata '{SafeText.Of(key)}' nests arrays too deeply.");
        }

        var element = (GgufValueType)reader.ReadUInt32(key);
        ulong count = reader.ReadUInt64(key);
        int minSize = element switch
        {
            GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
            GgufValueType.UInt16 or GgufValueType.Int16 => 2,
            GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
            GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 or GgufValueType.String => 8,
            GgufValueType.Array => 12,
            _ => throw new MinnowException($"{reader.Source}: metadata '{SafeText.Of(key)}' is an array of unknown type {(uint)element}."),
        };
        if (count > (ulong)(reader.Remaining / minSize) || count > int.MaxValue)
        {
            throw new MinnowException($"{reader.Source}: truncated or corrupt file (metadata '{SafeText.Of(key)}' claims {count} array elements, more than the remaining {reader.Remaining} bytes can hold).");
        }

        int n = (int)count;
        object array = element switch
        {
            GgufValueType.UInt8 => reader.ReadArray<byte>(n, key),
            GgufValueType.Int8 => reader.ReadArray<sbyte>(n, key),
            GgufValueType.UInt16 => reader.ReadArray<ushort>(n, key),
            GgufValueType.Int16 => reader.ReadArray<short>(n, key),
            GgufValueType.UInt32 => reader.ReadArray<uint>(n, key),
            GgufValueType.Int32 => reader.ReadArray<int>(n, key),
            GgufValueType.Float32 => reader.ReadArray<float>(n, key),
            GgufValueType.UInt64 => reader.ReadArray<ulong>(n, key),
            GgufValueType.Int64 => reader.ReadArray<long>(n, key),
            GgufValueType.Float64 => reader.ReadArray<double>(n, key),
            GgufValueType.Bool => ReadBools(ref reader, n, key),
            GgufValueType.String => ReadStrings(ref reader, n, key),
            _ => ReadNested(ref reader, n, key, depth),
        };
        return new GgufValue(GgufValueType.Array, array, element);
    }

    private static bool[] ReadBools(ref Reader reader, int n, string key)
    {
        var bytes = reader.ReadArray<byte>(n, key);
        var result = new bool[n];
        for (int i = 0; i < n; i++)
        {
            result[i] = bytes[i] != 0;
        }

        return result;
    }

    private static string[] ReadStrings(ref Reader reader, int n, string key)
    {
        var result = new string[n];
        for (int i = 0; i < n; i++)
        {
            result[i] = reader.ReadString(key);
        }

        return result;
    }

    private static object[] ReadNested(ref Reader reader, int n, string key, int depth)
    {
        var result = new object[n];
        for (int i = 0; i < n; i++)
        {
            result[i] = ReadArray(ref reader, key, depth + 1).Value;
        }

        return result;
    }

    /// <summary>A bounds-checked little-endian reader over the mapped file.</summary>
    private ref struct Reader
    {
        private readonly byte* _data;

        public Reader(byte* data, long length, string source)
        {
            _data = data;
            Length = length;
            Source = source;
        }

        public long Length { get; }

        public string Source { get; }

        public long Position { get; private set; }

        public readonly long Remaining => Length - Position;

        private void Need(long bytes, string what)
        {
            if (bytes > Length - Position)
            {
                throw new MinnowException($"{Source}: truncated file (reading {SafeText.Of(what)} at byte {Position} needs {bytes} bytes, file has {Length}).");
            }
        }

        public byte ReadByte(string what)
        {
            Need(1, what);
            return _data[Position++];
        }

        public T Read<T>(string what)
            where T : unmanaged
        {
            Need(sizeof(T), what);
            T value = System.Runtime.CompilerServices.Unsafe.ReadUnaligned<T>(_data + Position);
            Position += sizeof(T);
            return value;
        }

        public uint ReadUInt32(string what) => Read<uint>(what);

        public ulong ReadUInt64(string what) => Read<ulong>(what);

        public T[] ReadArray<T>(int count, string what)
            where T : unmanaged
        {
            long bytes = (long)count * sizeof(T);
            Need(bytes, what);
            var result = new T[count];
            new ReadOnlySpan<byte>(_data + Position, (int)bytes).CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(result.AsSpan()));
            Position += bytes;
            return result;
        }

        public string ReadString(string what)
        {
            ulong length = ReadUInt64(what);
            if (length > (ulong)Remaining || length > int.MaxValue)
            {
                throw new MinnowException($"{Source}: corrupt string length {length} at byte {Position - 8} (reading {SafeText.Of(what)}; file has {Length} bytes).");
            }

            string s = Encoding.UTF8.GetString(_data + Position, (int)length);
            Position += (long)length;
            return s;
        }
    }
}
