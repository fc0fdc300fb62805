using Minnow.Formats;
using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>
/// The named tensors of one model (Hugging Face names), with checked access: a missing tensor or a shape that
/// disagrees with the config is a clear error. Small vectors (norms, biases) are converted to float32 once.
/// </summary>
public sealed unsafe class WeightSet : IDisposable
{
    private readonly IReadOnlyDictionary<string, Tensor> _tensors;
    private readonly List<IDisposable> _owned = [];
    private readonly Dictionary<string, NativeBuffer> _vectors = new(StringComparer.Ordinal);

    public WeightSet(IReadOnlyDictionary<string, Tensor> tensors, string source, IDisposable? owner)
    {
        _tensors = tensors;
        Source = source;
        if (owner != null)
        {
            _owned.Add(owner);
        }
    }

    /// <summary>The file or folder the weights came from, for error messages.</summary>
    public string Source { get; }

    public IReadOnlyDictionary<string, Tensor> All => _tensors;

    public bool Has(string name) => _tensors.ContainsKey(name);

    public Tensor Get(string name) =>
        _tensors.TryGetValue(name, out var t) ? t : throw new MinnowException($"{Source}: missing tensor '{SafeText.Of(name)}'.");

    /// <summary>A [rows, cols] matrix, checked against the shape the config implies.</summary>
    public Tensor Matrix(string name, int rows, int cols)
    {
        var t = Get(name);
        if (t.Rank != 2 || t.Shape[0] != rows || t.Shape[1] != cols)
        {
            throw new MinnowException($"{Source}: tensor '{SafeText.Of(name)}' has shape {t.ShapeText} but config.json implies [{rows}, {cols}].");
        }

        return t;
    }

    /// <summary>
    /// A matrix stored transposed as [cols, rows] (GPT-2's Conv1D layout), copied once into [rows, cols] so the
    /// kernels read rows contiguously.
    /// </summary>
    public Tensor TransposedMatrix(string name, int rows, int cols)
    {
        var t = Get(name);
        if (t.Rank != 2 || t.Shape[0] != cols || t.Shape[1] != rows)
        {
            throw new MinnowException($"{Source}: tensor '{SafeText.Of(name)}' has shape {t.ShapeText} but config.json implies [{cols}, {rows}] (Conv1D layout).");
        }

        if (t.Type is not (DType.F32 or DType.F16 or DType.BF16))
        {
            throw new MinnowException($"{Source}: tensor '{SafeText.Of(name)}' is {t.Type.Name()}; Conv1D weights must be F32, F16 or BF16.");
        }

        int size = t.Type.BlockBytes();
        var buffer = new NativeBuffer((long)rows * cols * size);
        _owned.Add(buffer);
        byte* src = t.Data, dst = buffer.Pointer;
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++)
            {
                Buffer.MemoryCopy(src + ((((long)c * rows) + r) * size), dst + ((((long)r * cols) + c) * size), size, size);
            }
        }

        return new Tensor(name, t.Type, [rows, cols], dst, buffer);
    }

    /// <summary>A vector of n values as float32 (converted once and kept).</summary>
    public float* Vector(string name, int n)
    {
        if (_vectors.TryGetValue(name, out var cached))
        {
            return cached.FloatPointer;
        }

        var t = Get(name);
        if (t.ElementCount != n || t.Rank != 1)
        {
            throw new MinnowException($"{Source}: tensor '{SafeText.Of(name)}' has shape {t.ShapeText} but config.json implies [{n}].");
        }

        var buffer = NativeBuffer.Floats(n);
        Dequantize.Row(t.Type, t.Data, buffer.AsFloatSpan());
        _vectors[name] = buffer;
        return buffer.FloatPointer;
    }

    /// <summary>An optional vector: null when the tensor is absent.</summary>
    public float* OptionalVector(string name, int n) => Has(name) ? Vector(name, n) : null;

    public long ParameterCount => _tensors.Values.Sum(t => t.ElementCount);

    public long ByteSize => _tensors.Values.Sum(t => t.ByteSize);

    public void Dispose()
    {
        foreach (var v in _vectors.Values)
        {
            v.Dispose();
        }

        _vectors.Clear();
        _owned.ForEach(o => o.Dispose());
        _owned.Clear();
    }
}
