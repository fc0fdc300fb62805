using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>
/// Keys and values of every layer for up to <see cref="Capacity"/> positions, in float32. Each layer's rows are
/// as wide as its own key/value projection (layers of a structurally pruned model may differ).
/// </summary>
public sealed unsafe class KvCache : IDisposable
{
    private readonly NativeBuffer _keys;
    private readonly NativeBuffer _values;
    private readonly long[] _offsets;
    private readonly int[] _widths;

    public KvCache(ModelConfig config, int capacity)
    {
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

        _keys = NativeBuffer.Floats(total);
        _values = NativeBuffer.Floats(total);
    }

    public int Layers { get; }

    /// <summary>The widest layer's key/value row (every layer's, unless the model is structurally pruned).</summary>
    public int KvDim { get; }

    public int Capacity { get; }

    /// <summary>Positions filled so far.</summary>
    public int Length { get; set; }

    public long ByteSize => _keys.Length + _values.Length;

    /// <summary>The width of one cached key (or value) row of a layer.</summary>
    public int KvDimOf(int layer) => _widths[layer];

    public float* Keys(int layer) => _keys.FloatPointer + _offsets[layer];

    public float* Values(int layer) => _values.FloatPointer + _offsets[layer];

    public void Dispose()
    {
        _keys.Dispose();
        _values.Dispose();
    }
}
