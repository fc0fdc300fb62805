using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Minnow.Kernels;

/// <summary>
/// A per-thread float buffer that kernels reuse from call to call (one per <typeparamref name="TTag"/>, so two
/// kernels never share one). It lives on the pinned object heap, grows only when a call needs more than any before
/// it on that thread, and is freed with the thread: after warm-up the kernels allocate nothing.
/// </summary>
internal static unsafe class Scratch<TTag>
{
    [ThreadStatic]
    private static float[]? t_buffer;

    /// <summary>Room for <paramref name="count"/> floats, valid until the next call on this thread.</summary>
    public static float* Get(int count)
    {
        var buffer = t_buffer;
        if (buffer == null || buffer.Length < count)
        {
            buffer = Grow(count);
        }

        return (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static float[] Grow(int count)
    {
        int size = (int)Math.Min(Array.MaxLength, Math.Max(1024, (long)BitOperations.RoundUpToPowerOf2((uint)count)));
        var buffer = GC.AllocateUninitializedArray<float>(size, pinned: true);
        t_buffer = buffer;
        return buffer;
    }
}
