using Google.Protobuf;
using Minnow.Export.Onnx.Proto;

namespace Minnow.Export.Onnx;

/// <summary>
/// Builds an ONNX graph node by node: operators with their attributes, constants, weight initializers (inline, or
/// in an external data file once the inline ones would pass <see cref="InlineLimit"/>, as protobuf messages are capped at
/// 2 GB), and typed graph inputs/outputs with symbolic dimensions. Every value gets a unique name.
/// </summary>
internal sealed class OnnxGraphBuilder : IDisposable
{
    /// <summary>Initializer bytes kept inside model.onnx before the rest go to the external data file.</summary>
    public const long DefaultInlineLimit = 1L << 30;

    private readonly GraphProto _graph = new() { Name = "minnow" };
    private readonly string _externalPath;
    private readonly string _externalName;
    private readonly Dictionary<string, string> _constants = new(StringComparer.Ordinal);
    private FileStream? _external;
    private long _inlineBytes;
    private int _counter;

    /// <param name="externalPath">The external data file to create if needed (beside model.onnx).</param>
    public OnnxGraphBuilder(string externalPath, long inlineLimit = DefaultInlineLimit)
    {
        _externalPath = externalPath;
        _externalName = Path.GetFileName(externalPath);
        InlineLimit = inlineLimit;
    }

    public long InlineLimit { get; }

    /// <summary>Whether some initializers went to the external data file.</summary>
    public bool HasExternalData => _external != null;

    /// <summary>The name the external data file is referred to by (relative to model.onnx).</summary>
    public string ExternalDataName => _externalName;

    public GraphProto Graph => _graph;

    public string Unique(string stem) => $"{stem}_{_counter++}";

    /// <summary>Adds a node; returns its (first) output.</summary>
    public string Node(string op, IEnumerable<string> inputs, string? output = null, string domain = "", params AttributeProto[] attributes) =>
        NodeOutputs(op, inputs, [output ?? Unique(op)], domain, attributes)[0];

    public string[] NodeOutputs(string op, IEnumerable<string> inputs, string[] outputs, string domain = "", params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = Unique(op + "_node") };
        if (domain.Length > 0)
        {
            node.Domain = domain;
        }

        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attributes);
        _graph.Node.Add(node);
        return outputs;
    }

    public static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    public static AttributeProto Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    /// <summary>A constant int64 tensor (a shape, axes, indices): 1-D, or a scalar when <paramref name="scalar"/>.</summary>
    public string Int64s(long[] values, bool scalar = false)
    {
        string key = (scalar ? "s:" : "v:") + string.Join(",", values);
        if (_constants.TryGetValue(key, out var existing))
        {
            return existing;
        }

        var t = new TensorProto { Name = Unique("const_i64"), DataType = (int)TensorProto.Types.DataType.Int64 };
        if (!scalar)
        {
            t.Dims.Add(values.Length);
        }

        t.Int64Data.AddRange(values);
        _graph.Initializer.Add(t);
        _constants[key] = t.Name;
        return t.Name;
    }

    /// <summary>A constant float32 scalar (or 1-D vector when <paramref name="values"/> has more than one value or <paramref name="vector"/>).</summary>
    public string Floats(float[] values, bool vector = false)
    {
        bool scalar = values.Length == 1 && !vector;
        string key = (scalar ? "fs:" : "fv:") + string.Join(",", values.Select(v => BitConverter.SingleToInt32Bits(v)));
        if (_constants.TryGetValue(key, out var existing))
        {
            return existing;
        }

        var t = new TensorProto { Name = Unique("const_f32"), DataType = (int)TensorProto.Types.DataType.Float };
        if (!scalar)
        {
            t.Dims.Add(values.Length);
        }

        t.FloatData.AddRange(values);
        _graph.Initializer.Add(t);
        _constants[key] = t.Name;
        return t.Name;
    }

    /// <summary>A weight initializer from raw little-endian bytes; large ones may go to the external data file.</summary>
    public string Weight(string name, TensorProto.Types.DataType type, long[] dims, ReadOnlySpan<byte> bytes)
    {
        var t = new TensorProto { Name = name, DataType = (int)type };
        t.Dims.AddRange(dims);
        if (bytes.Length >= 1024 && _inlineBytes + bytes.Length > InlineLimit)
        {
            _external ??= new FileStream(_externalPath, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);

            // Offsets aligned to 64 bytes, so a runtime may map the file and read the tensors in place.
            long pad = (64 - (_external.Position % 64)) % 64;
            _external.Write(new byte[pad]);
            long offset = _external.Position;
            _external.Write(bytes);
            t.DataLocation = TensorProto.Types.DataLocation.External;
            t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = _externalName });
            t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = bytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        }
        else
        {
            t.RawData = ByteString.CopyFrom(bytes);
            _inlineBytes += bytes.Length;
        }

        _graph.Initializer.Add(t);
        return name;
    }

    public string Weight(string name, float[] values, long[] dims) =>
        Weight(name, TensorProto.Types.DataType.Float, dims, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));

    /// <summary>A graph input or output: a tensor of <paramref name="type"/> with fixed (long) or symbolic (string) dimensions.</summary>
    public static ValueInfoProto Value(string name, TensorProto.Types.DataType type, params object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
        {
            shape.Dim.Add(d is string s ? new TensorShapeProto.Types.Dimension { DimParam = s } : new TensorShapeProto.Types.Dimension { DimValue = Convert.ToInt64(d, System.Globalization.CultureInfo.InvariantCulture) });
        }

        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }

    public void Input(ValueInfoProto value) => _graph.Input.Add(value);

    public void Output(ValueInfoProto value) => _graph.Output.Add(value);

    /// <summary>Closes the external data file (if any) so it is complete on disk.</summary>
    public void FinishExternalData()
    {
        _external?.Flush(true);
        _external?.Dispose();
    }

    public void Dispose() => _external?.Dispose();
}
