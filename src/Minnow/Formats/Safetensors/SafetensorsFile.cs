using System.Buffers.Binary;
using System.Text.Json;
using Minnow.Formats;
using Minnow.Tensors;

namespace Minnow.Formats.Safetensors;

/// <summary>
/// A memory-mapped safetensors file: an 8-byte little-endian header length, a JSON header of
/// name → {dtype, shape, data_offsets}, then the data. Tensors are views into the map, nothing is copied.
/// Every offset and size is checked against the file before a tensor is handed out.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Headers larger than this are refused (the format's reference implementation uses 100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly MappedFile _file;

    private SafetensorsFile(MappedFile file, Dictionary<string, Tensor> tensors, Dictionary<string, string> metadata)
    {
        _file = file;
        Tensors = tensors;
        Metadata = metadata;
    }

    public string Path => _file.Path;

    public IReadOnlyDictionary<string, Tensor> Tensors { get; }

    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The file's size in bytes.</summary>
    public long Length => _file.Length;

    public static SafetensorsFile Open(string path) => Open(MappedFile.Open(path));

    /// <summary>Parses an opened file (a memory map, or a decrypted file in memory); takes ownership of it.</summary>
    public static SafetensorsFile Open(MappedFile file)
    {
        try
        {
            var (tensors, metadata) = Parse(file);
            return new SafetensorsFile(file, tensors, metadata);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static (Dictionary<string, Tensor>, Dictionary<string, string>) Parse(MappedFile file)
    {
        string name = file.Path;
        if (file.Length < 8)
        {
            throw new MinnowException($"{name}: truncated safetensors file ({file.Length} bytes, the 8-byte header length is missing).");
        }

        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(file.Span(0, 8));
        if (headerLength > MaxHeaderBytes)
        {
            throw new MinnowException($"{name}: safetensors header length {headerLength} is larger than the limit of {MaxHeaderBytes} bytes; the file is corrupt or not safetensors.");
        }

        if ((long)headerLength > file.Length - 8)
        {
            throw new MinnowException($"{name}: truncated safetensors file (header says {headerLength} bytes, file has {file.Length - 8} after the length).");
        }

        long dataStart = 8 + (long)headerLength;
        long dataLength = file.Length - dataStart;
        var header = JsonInput.Parse(file.Span(8, (int)headerLength).ToArray(), $"{name}: the safetensors header");

        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        using (header)
        {
            if (header.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new MinnowException($"{name}: the safetensors header is not a JSON object.");
            }

            foreach (var entry in header.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__")
                {
                    if (entry.Value.ValueKind == JsonValueKind.Object)
                    {
                        foreach (var m in entry.Value.EnumerateObject())
                        {
                            metadata[m.Name] = m.Value.ToString();
                        }
                    }

                    continue;
                }

                tensors[entry.Name] = ReadTensor(file, name, entry.Name, entry.Value, dataStart, dataLength);
            }
        }

        return (tensors, metadata);
    }

    private static Tensor ReadTensor(MappedFile file, string path, string tensorName, JsonElement info, long dataStart, long dataLength)
    {
        string shown = SafeText.Of(tensorName);
        if (info.ValueKind != JsonValueKind.Object ||
            !info.TryGetProperty("dtype", out var dtypeElement) ||
            !info.TryGetProperty("shape", out var shapeElement) ||
            !info.TryGetProperty("data_offsets", out var offsetsElement) ||
            dtypeElement.ValueKind != JsonValueKind.String ||
            shapeElement.ValueKind != JsonValueKind.Array || offsetsElement.ValueKind != JsonValueKind.Array ||
            offsetsElement.GetArrayLength() != 2)
        {
            throw new MinnowException($"{path}: tensor '{shown}' has a malformed header entry (needs a dtype string, a shape array and two data_offsets).");
        }

        string dtypeName = dtypeElement.GetString()!;
        DType type = dtypeName switch
        {
            "F32" => DType.F32,
            "F16" => DType.F16,
            "BF16" => DType.BF16,
            _ => throw new MinnowException($"{path}: tensor '{shown}' has dtype {SafeText.Of(dtypeName, 20)}, which Minnow does not load (supported: F32, F16, BF16)."),
        };

        if (shapeElement.GetArrayLength() > 8)
        {
            throw new MinnowException($"{path}: tensor '{shown}' has {shapeElement.GetArrayLength()} dimensions (at most 8 are supported).");
        }

        var shape = new long[shapeElement.GetArrayLength()];
        long elements = 1;
        int i = 0;
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0 || dim > int.MaxValue)
            {
                throw new MinnowException($"{path}: tensor '{shown}' has an invalid shape entry (dimension {i} must be an integer from 0 to {int.MaxValue}).");
            }

            shape[i++] = dim;
            // The data must fit in the file, so a product beyond its length is refused before it can overflow.
            elements = dim == 0 || elements == 0 ? 0 : elements <= dataLength / dim ? elements * dim : long.MaxValue;
        }

        if (offsetsElement[0].ValueKind != JsonValueKind.Number || offsetsElement[1].ValueKind != JsonValueKind.Number ||
            !offsetsElement[0].TryGetInt64(out long begin) || !offsetsElement[1].TryGetInt64(out long end) || begin < 0 || end < begin)
        {
            throw new MinnowException($"{path}: tensor '{shown}' has invalid data_offsets (two integers, begin <= end).");
        }

        if (end > dataLength)
        {
            throw new MinnowException($"{path}: tensor '{shown}' data ends at byte {end} but the file holds only {dataLength} bytes of data; the file is truncated or corrupt.");
        }

        long expected = elements == long.MaxValue ? long.MaxValue : type.ByteCount(elements);
        if (end - begin != expected)
        {
            string needs = elements == long.MaxValue ? "more than the whole file" : expected.ToString(System.Globalization.CultureInfo.InvariantCulture);
            throw new MinnowException($"{path}: tensor '{shown}' occupies {end - begin} bytes but {dtypeName} {string.Join("x", shape)} needs {needs}.");
        }

        return new Tensor(tensorName, type, shape, file.Pointer + dataStart + begin, file);
    }

    public void Dispose() => _file.Dispose();
}
