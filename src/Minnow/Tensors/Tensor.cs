namespace Minnow.Tensors;

/// <summary>
/// A read-only weight tensor: a typed, shaped view over memory it does not own (a memory-mapped file or a
/// native buffer kept alive by <see cref="Owner"/>). Shapes are row-major; for a matrix, Shape = [rows, cols],
/// and a row is contiguous, as in safetensors and GGUF.
/// </summary>
public sealed unsafe class Tensor
{
    public Tensor(string name, DType type, long[] shape, byte* data, object? owner)
    {
        Name = name;
        Type = type;
        Shape = shape;
        Data = data;
        Owner = owner;
        ElementCount = 1;
        foreach (long d in shape)
        {
            ElementCount *= d;
        }

        ByteSize = type.IsSparse() ? SparseMatrix.ByteSize(type, data, Rows) : type.ByteCount(ElementCount);
    }

    public string Name { get; }

    public DType Type { get; }

    public long[] Shape { get; }

    public byte* Data { get; }

    /// <summary>Keeps the memory behind <see cref="Data"/> alive.</summary>
    public object? Owner { get; }

    public long ElementCount { get; }

    public long ByteSize { get; }

    public int Rank => Shape.Length;

    /// <summary>Number of rows of a matrix (the product of all dimensions but the last).</summary>
    public int Rows => checked((int)(ElementCount / Columns));

    /// <summary>Length of a row (the last dimension).</summary>
    public int Columns => Shape.Length == 0 ? 1 : checked((int)Shape[^1]);

    /// <summary>Bytes per row (not defined for the sparse types, whose rows differ in length: see <see cref="SparseMatrix"/>).</summary>
    public long RowBytes => Type.ByteCount(Columns);

    public byte* RowPointer(int row) => Data + (row * RowBytes);

    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    /// <summary>Converts one row to float32.</summary>
    public void ReadRow(int row, Span<float> destination)
    {
        if ((uint)row >= (uint)Rows)
        {
            throw new ArgumentOutOfRangeException(nameof(row));
        }

        if (Type.IsSparse())
        {
            SparseMatrix.ReadRow(Type, Data, row, destination[..Columns]);
            return;
        }

        Dequantize.Row(Type, RowPointer(row), destination[..Columns]);
    }

    /// <summary>Converts the whole tensor to a new float32 array (for small tensors: norms, biases, tests).</summary>
    public float[] ToFloatArray()
    {
        var result = new float[ElementCount];
        int cols = Columns;
        for (int r = 0; r < Rows; r++)
        {
            ReadRow(r, result.AsSpan(r * cols, cols));
        }

        return result;
    }

    /// <summary>
    /// The form a kernel keeps of this tensor (e.g. its rows interleaved for the integer matrix products), made
    /// on first use: the existing one, or <paramref name="create"/>'s result if none was stored yet (when two
    /// threads race, one result wins and is returned to both).
    /// </summary>
    internal T KernelForm<T, TState>(TState state, Func<Tensor, TState, T> create)
        where T : class
    {
        if (Volatile.Read(ref _kernelForm) is T existing)
        {
            return existing;
        }

        var created = create(this, state);
        return Interlocked.CompareExchange(ref _kernelForm, created, null) as T ?? created;
    }

    /// <summary>
    /// Whether this tensor's bytes are a view of a memory-mapped file (so they count in the resident set only while
    /// touched, and <see cref="MappedFile.ReleasePages"/> may drop them). A sealed package's decrypted bytes live in
    /// anonymous memory, which no file backs: those are not mapped.
    /// </summary>
    internal bool IsMapped => Owner is MappedFile { IsFileBacked: true } or IMappedFileOwner { MappedFile.IsFileBacked: true };

    private object? _kernelForm;

    public override string ToString() => $"{Name} {Type.Name()} {ShapeText}";
}
