using Minnow.Formats.Safetensors;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>One trainable tensor: a named slice of the store's value and gradient buffers.</summary>
public sealed class Parameter
{
    internal Parameter(string name, long[] shape, long offset, bool decay)
    {
        Name = name;
        Shape = shape;
        Offset = offset;
        Count = shape.Aggregate(1L, (a, b) => a * b);
        Decay = decay;
    }

    /// <summary>The Hugging Face tensor name (e.g. <c>model.layers.0.self_attn.q_proj.weight</c>).</summary>
    public string Name { get; }

    public long[] Shape { get; }

    /// <summary>Offset in floats into the store's buffers.</summary>
    public long Offset { get; }

    public long Count { get; }

    /// <summary>Whether AdamW applies weight decay (matrices yes; norms and biases no).</summary>
    public bool Decay { get; }

    public override string ToString() => $"{Name} [{string.Join(", ", Shape)}]";
}

/// <summary>
/// Every trainable tensor of a model in one contiguous float32 buffer, with a gradient buffer of the same layout
/// (so clipping and the optimiser run over flat arrays). The gradient buffer is allocated on first use, so a frozen
/// base under LoRA adapters, whose gradients are never asked for, costs only its values.
/// </summary>
public sealed unsafe class ParameterStore : IDisposable
{
    private readonly List<Parameter> _list = [];
    private readonly Dictionary<string, Parameter> _byName = new(StringComparer.Ordinal);
    private readonly NativeBuffer _values;
    private NativeBuffer? _grads;

    /// <summary>Lays out the given tensors in order; values and (once allocated) gradients start at zero.</summary>
    public ParameterStore(IEnumerable<(string Name, long[] Shape, bool Decay)> specs)
    {
        long offset = 0;
        foreach (var (name, shape, decay) in specs)
        {
            var p = new Parameter(name, shape, offset, decay);
            _list.Add(p);
            _byName.Add(name, p);
            offset += (p.Count + 15) / 16 * 16; // keep every tensor 64-byte aligned
        }

        TotalFloats = offset;
        _values = NativeBuffer.Floats(offset);
    }

    public IReadOnlyList<Parameter> All => _list;

    /// <summary>Length of the flat buffers in floats (with alignment padding, which stays zero).</summary>
    public long TotalFloats { get; }

    /// <summary>Number of trainable values.</summary>
    public long ParameterCount => _list.Sum(p => p.Count);

    public float* Values => _values.FloatPointer;

    public float* Grads => GradBuffer.FloatPointer;

    /// <summary>Whether the gradient buffer exists yet (it is allocated the first time a gradient is asked for).</summary>
    public bool HasGradientBuffer => _grads != null;

    private NativeBuffer GradBuffer => _grads ??= NativeBuffer.Floats(TotalFloats);

    public bool Has(string name) => _byName.ContainsKey(name);

    public Parameter this[string name] =>
        _byName.TryGetValue(name, out var p) ? p : throw new MinnowException($"no trainable tensor '{name}'.");

    public float* Value(Parameter p) => _values.FloatPointer + p.Offset;

    public float* Grad(Parameter p) => GradBuffer.FloatPointer + p.Offset;

    public Span<float> ValueSpan(Parameter p) => new(Value(p), checked((int)p.Count));

    public Span<float> GradSpan(Parameter p) => new(Grad(p), checked((int)p.Count));

    public void ZeroGrads() => GradBuffer.AsFloatSpan().Clear();

    /// <summary>Adds every parameter's values to <paramref name="writer"/> under its Hugging Face name, as <paramref name="dtype"/>.</summary>
    public void AddTo(SafetensorsWriter writer, DType dtype = DType.F32)
    {
        foreach (var p in _list)
        {
            writer.Add(p.Name, p.Shape, ValueSpan(p), dtype);
        }
    }

    public void Dispose()
    {
        _values.Dispose();
        _grads?.Dispose();
    }
}
