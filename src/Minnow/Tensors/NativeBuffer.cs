using System.Runtime.InteropServices;

namespace Minnow.Tensors;

/// <summary>A 64-byte aligned block of native memory for activations and converted weights; zeroed on allocation.</summary>
public sealed unsafe class NativeBuffer : IDisposable
{
    public const int Alignment = 64;

    private void* _pointer;

    public NativeBuffer(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        Length = bytes;
        _pointer = NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), Alignment);
        NativeMemory.Clear(_pointer, (nuint)Math.Max(bytes, 1));
        GC.AddMemoryPressure(Math.Max(bytes, 1));
    }

    /// <summary>Allocates room for <paramref name="count"/> floats.</summary>
    public static NativeBuffer Floats(long count) => new(count * sizeof(float));

    public long Length { get; }

    public byte* Pointer => (byte*)_pointer;

    public float* FloatPointer => (float*)_pointer;

    public Span<float> AsFloatSpan() => new(_pointer, checked((int)(Length / sizeof(float))));

    public void Dispose()
    {
        if (_pointer != null)
        {
            NativeMemory.AlignedFree(_pointer);
            _pointer = null;
            GC.RemoveMemoryPressure(Math.Max(Length, 1));
        }

        GC.SuppressFinalize(this);
    }

    ~NativeBuffer() => Dispose();
}
