using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// The native buffers a training model keeps its activations in: allocated together for the largest batch seen,
/// reused by every later step, and released together when a larger batch needs more room.
/// </summary>
public sealed unsafe class ActivationArena : IDisposable
{
    private readonly List<NativeBuffer> _buffers = [];

    /// <summary>Bytes currently allocated.</summary>
    public long Bytes => _buffers.Sum(b => b.Length);

    /// <summary>A new buffer of <paramref name="floats"/> floats (at least one), owned by the arena.</summary>
    public float* Floats(long floats)
    {
        var b = NativeBuffer.Floats(Math.Max(floats, 1));
        _buffers.Add(b);
        return b.FloatPointer;
    }

    /// <summary>Frees every buffer; pointers handed out before are no longer valid.</summary>
    public void Release()
    {
        foreach (var b in _buffers)
        {
            b.Dispose();
        }

        _buffers.Clear();
    }

    public void Dispose() => Release();
}
