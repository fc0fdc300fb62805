using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Pruning;

/// <summary>One tensor being edited: its values in float32 and the type it is stored back as.</summary>
public sealed class EditableTensor
{
    public EditableTensor(string name, long[] shape, float[] values, DType storeAs)
    {
        long count = shape.Aggregate(1L, (p, d) => p * d);
        if (count != values.Length)
        {
            throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] holds {count} values, not {values.Length}.");
        }

        Name = name;
        Shape = shape;
        Values = values;
        StoreAs = storeAs;
    }

    public string Name { get; }

    public long[] Shape { get; private set; }

    public float[] Values { get; private set; }

    /// <summary>F32, F16 or BF16: the source's type (quantized sources are stored back as F32).</summary>
    public DType StoreAs { get; }

    public int Rows => Shape.Length == 2 ? (int)Shape[0] : 1;

    public int Columns => Shape.Length == 0 ? 1 : (int)Shape[^1];

    public long ZeroCount => Values.LongCount(v => v == 0);

    /// <summary>Keeps only the listed rows (of a matrix) or elements (of a vector), in the order given.</summary>
    public void KeepRows(IReadOnlyList<int> rows)
    {
        int cols = Shape.Length == 2 ? Columns : 1;
        var kept = new float[rows.Count * cols];
        for (int i = 0; i < rows.Count; i++)
        {
            Array.Copy(Values, (long)rows[i] * cols, kept, (long)i * cols, cols);
        }

        Values = kept;
        Shape = Shape.Length == 2 ? [rows.Count, cols] : [rows.Count];
    }

    /// <summary>Keeps only the listed columns of a matrix, in the order given.</summary>
    public void KeepColumns(IReadOnlyList<int> columns)
    {
        int rows = Rows, cols = Columns;
        var kept = new float[rows * columns.Count];
        for (int r = 0; r < rows; r++)
        {
            for (int i = 0; i < columns.Count; i++)
            {
                kept[(r * columns.Count) + i] = Values[(r * cols) + columns[i]];
            }
        }

        Values = kept;
        Shape = [rows, columns.Count];
    }

    public override string ToString() => $"{Name} [{string.Join(", ", Shape)}]";
}

/// <summary>
/// A model's tensors copied out as float32 for editing (pruning), under their Hugging Face names and stored
/// layout (GPT-2's Conv1D weights stay [in, out]), with the config that will describe them.
/// </summary>
public sealed class EditableWeights
{
    private readonly Dictionary<string, EditableTensor> _tensors;

    private EditableWeights(ModelConfig config, Dictionary<string, EditableTensor> tensors)
    {
        Config = config;
        _tensors = tensors;
    }

    /// <summary>The config of the edited model (per-layer shapes after structured pruning).</summary>
    public ModelConfig Config { get; set; }

    public IReadOnlyDictionary<string, EditableTensor> All => _tensors;

    /// <summary>What structured pruning kept (null after unstructured pruning).</summary>
    public StructuredPlan? Plan { get; set; }

    public EditableTensor this[string name] =>
        _tensors.TryGetValue(name, out var t) ? t : throw new MinnowException($"missing tensor '{name}'.");

    public bool Has(string name) => _tensors.ContainsKey(name);

    public long ParameterCount => _tensors.Values.Sum(t => (long)t.Values.Length);

    public long ZeroCount => _tensors.Values.Sum(t => t.ZeroCount);

    /// <summary>Copies every tensor of <paramref name="weights"/> (converted to float32).</summary>
    public static EditableWeights From(ModelConfig config, WeightSet weights)
    {
        var tensors = new Dictionary<string, EditableTensor>(StringComparer.Ordinal);
        foreach (var (name, t) in weights.All)
        {
            var storeAs = t.Type is DType.F32 or DType.F16 or DType.BF16 ? t.Type : DType.F32;
            tensors[name] = new EditableTensor(name, (long[])t.Shape.Clone(), t.ToFloatArray(), storeAs);
        }

        return new EditableWeights(config, tensors);
    }

    /// <summary>Builds a runnable model over copies of the tensors (in their storage types, as saving would).</summary>
    public unsafe TransformerModel CreateModel(WorkerPool? pool = null)
    {
        var buffers = new List<NativeBuffer>();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, t) in _tensors)
        {
            byte[] bytes = Dequantize.FromFloats(t.StoreAs, t.Values);
            var buffer = new NativeBuffer(bytes.Length);
            bytes.CopyTo(new Span<byte>(buffer.Pointer, bytes.Length));
            buffers.Add(buffer);
            tensors[name] = new Tensor(name, t.StoreAs, (long[])t.Shape.Clone(), buffer.Pointer, buffer);
        }

        var weights = new WeightSet(tensors, "(pruned model in memory)", new DisposeAll(buffers));
        try
        {
            return ModelFactory.Create(Config, weights, pool);
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    private sealed class DisposeAll(List<NativeBuffer> buffers) : IDisposable
    {
        public void Dispose() => buffers.ForEach(b => b.Dispose());
    }
}
