using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>Keys and values of every layer for up to <see cref="Capacity"/> positions, in float32.</summary>
public sealed unsafe class KvCache : IDisposable
{
    private readonly NativeBuffer _keys;
    private readonly NativeBuffer _values;

    public KvCache(ModelConfig config, int capacity)
    {
        Layers = config.Layers;
        KvDim = config.KvDim;
        Capacity = capacity;
        _keys = NativeBuffer.Floats((long)Layers * capacity * KvDim);
        _values = NativeBuffer.Floats((long)Layers * capacity * KvDim);
    }

    public int Layers { get; }

    public int KvDim { get; }

    public int Capacity { get; }

    /// <summary>Positions filled so far.</summary>
    public int Length { get; set; }

    public long ByteSize => _keys.Length + _values.Length;

    public float* Keys(int layer) => _keys.FloatPointer + ((long)layer * Capacity * KvDim);

    public float* Values(int layer) => _values.FloatPointer + ((long)layer * Capacity * KvDim);

    public void Dispose()
    {
        _keys.Dispose();
        _values.Dispose();
    }
}
