using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>
/// Keys and values of every layer for up to <see cref="Capacity"/> positions, in float32 or (half the memory,
/// as llama.cpp keeps them by default) float16. Each layer's rows are as wide as its own key/value projection
/// (layers of a structurally pruned model may differ).
/// </summary>
public sealed unsafe class KvCache : IDisposable
{
    private readonly NativeBuffer _keys;
    private readonly NativeBuffer _values;
    private readonly long[] _offsets;
    private readonly int[] _widths;

    public KvCache(ModelConfig config, int capacity, DType elementType = DType.F32)
    {
        if (elementType is not (DType.F32 or DType.F16))
        {
            throw new MinnowException($"the KV cache holds f32 or f16 values, not {elementType.Name()}.");
        }

        ElementType = elementType;
        Layers = config.Layers;
        KvDim = config.MaxKvDim;
        Capacity = capacity;
        _offsets = new long[Layers];
        _widths = new int[Layers];
        long total = 0;
        for (int l = 0; l < Layers; l++)
        {
            _offsets[l] = total;
            _widths[l] = config.KvDimOf(l);
            total += (long)capacity * _widths[l];
        }

        _keys = new NativeBuffer(total * ElementBytes);
        _values = new NativeBuffer(total * ElementBytes);
    }

    /// <summary>F32 or F16.</summary>
    public DType ElementType { get; }

    /// <summary>Bytes of one cached value.</summary>
    public int ElementBytes => ElementType == DType.F16 ? sizeof(ushort) : sizeof(float);

    public int Layers { get; }

    /// <summary>The widest layer's key/value row (every layer's, unless the model is structurally pruned).</summary>
    public int KvDim { get; }

    public int Capacity { get; }

    /// <summary>Positions filled so far.</summary>
    public int Length { get; set; }

    public long ByteSize => _keys.Length + _values.Length;

    /// <summary>The width of one cached key (or value) row of a layer.</summary>
    public int KvDimOf(int layer) => _widths[layer];

    /// <summary>A layer's cached keys: <see cref="Capacity"/> rows of <see cref="KvDimOf"/> values of <see cref="ElementType"/>.</summary>
    public byte* Keys(int layer) => _keys.Pointer + (_offsets[layer] * ElementBytes);

    public byte* Values(int layer) => _values.Pointer + (_offsets[layer] * ElementBytes);

    /// <summary>Stores <paramref name="count"/> rows of keys and values (float32) of a layer from position <paramref name="start"/>.</summary>
    public void Store(int layer, int start, float* keys, float* values, int count)
    {
        long n = (long)count * _widths[layer];
        long offset = (long)start * _widths[layer];
        if (ElementType == DType.F32)
        {
            long bytes = n * sizeof(float);
            Buffer.MemoryCopy(keys, (float*)Keys(layer) + offset, bytes, bytes);
            Buffer.MemoryCopy(values, (float*)Values(layer) + offset, bytes, bytes);
            return;
        }

        ToHalves(keys, (Half*)Keys(layer) + offset, n);
        ToHalves(values, (Half*)Values(layer) + offset, n);
    }

    private static void ToHalves(float* source, Half* destination, long count)
    {
        for (long i = 0; i < count; i++)
        {
            destination[i] = (Half)source[i];
        }
    }

    public void Dispose()
    {
        _keys.Dispose();
        _values.Dispose();
    }
}
