using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>How the rotated pairs of a head vector are formed.</summary>
public enum RopeStyle
{
    /// <summary>Pairs (i, i + rotaryDim/2): Hugging Face's rotate_half (Llama, Qwen2, GPT-NeoX in HF layout).</summary>
    RotateHalf,
    /// <summary>Pairs (2i, 2i + 1): llama2.c's layout.</summary>
    Interleaved,

    /// <summary>
    /// q/k rows stored as llama.cpp's GGUF Llama files hold them, Hugging Face rows (i, i + d/2) as (2i, 2i + 1)
    /// within each head: each head vector is put back in Hugging Face order, then rotated as <see cref="RotateHalf"/>.
    /// The same rotation as <see cref="Interleaved"/>, but the cached keys and the attention sums are in the Hugging
    /// Face checkpoint's order, so a model exported to GGUF and reloaded computes its logits bit for bit.
    /// </summary>
    InterleavedRows,
}

public static class RopeStyles
{
    /// <summary>Whether q/k projections' rows are stored in the interleaved order (for adapters and exports of their rows).</summary>
    public static bool HasInterleavedRows(this RopeStyle style) => style is RopeStyle.Interleaved or RopeStyle.InterleavedRows;
}

/// <summary>
/// Rotary position embedding applied in place to <c>heads</c> consecutive vectors of <c>headDim</c> floats;
/// only the first <c>rotaryDim</c> dimensions of each head rotate (partial rotary, GPT-NeoX).
/// <c>cos</c>/<c>sin</c> hold rotaryDim/2 values for this position. Every path computes a·cos − b·sin and
/// b·cos + a·sin with the same roundings, so all vector widths agree with the scalar body bit for bit.
/// </summary>
public static unsafe class Rope
{
    public static void Apply(float* x, int heads, int headDim, int rotaryDim, float* cos, float* sin, RopeStyle style) =>
        Apply(x, heads, headDim, rotaryDim, cos, sin, style, KernelIsa.Current);

    internal static void Apply(float* x, int heads, int headDim, int rotaryDim, float* cos, float* sin, RopeStyle style, VectorWidth width)
    {
        int half = rotaryDim / 2;
        Span<float> head = style == RopeStyle.InterleavedRows ? stackalloc float[headDim] : default;
        for (int h = 0; h < heads; h++)
        {
            float* v = x + ((long)h * headDim);
            if (style == RopeStyle.InterleavedRows)
            {
                Deinterleave(v, head);
                RotateHalf(v, v + half, cos, sin, half, width);
            }
            else if (style == RopeStyle.RotateHalf)
            {
                RotateHalf(v, v + half, cos, sin, half, width);
            }
            else
            {
                Interleaved(v, cos, sin, half, width);
            }
        }
    }

    /// <summary>Values (2i, 2i + 1) of a head vector become (i, i + d/2) (<paramref name="scratch"/>: d floats).</summary>
    private static void Deinterleave(float* v, Span<float> scratch)
    {
        int half = scratch.Length / 2;
        for (int i = 0; i < half; i++)
        {
            scratch[i] = v[2 * i];
            scratch[half + i] = v[(2 * i) + 1];
        }

        scratch.CopyTo(new Span<float>(v, scratch.Length));
    }

    /// <summary>(a, b) = (a·c − b·s, b·c + a·s) for a = lo[i], b = hi[i].</summary>
    private static void RotateHalf(float* lo, float* hi, float* cos, float* sin, int half, VectorWidth width)
    {
        int i = 0;
        if (width >= VectorWidth.V512)
        {
            for (; i <= half - Vector512<float>.Count; i += Vector512<float>.Count)
            {
                var a = Vector512.Load(lo + i);
                var b = Vector512.Load(hi + i);
                var c = Vector512.Load(cos + i);
                var s = Vector512.Load(sin + i);
                ((a * c) - (b * s)).Store(lo + i);
                ((b * c) + (a * s)).Store(hi + i);
            }
        }

        if (width >= VectorWidth.V256)
        {
            for (; i <= half - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var a = Vector256.Load(lo + i);
                var b = Vector256.Load(hi + i);
                var c = Vector256.Load(cos + i);
                var s = Vector256.Load(sin + i);
                ((a * c) - (b * s)).Store(lo + i);
                ((b * c) + (a * s)).Store(hi + i);
            }
        }

        if (width >= VectorWidth.V128)
        {
            for (; i <= half - Vector128<float>.Count; i += Vector128<float>.Count)
            {
                var a = Vector128.Load(lo + i);
                var b = Vector128.Load(hi + i);
                var c = Vector128.Load(cos + i);
                var s = Vector128.Load(sin + i);
                ((a * c) - (b * s)).Store(lo + i);
                ((b * c) + (a * s)).Store(hi + i);
            }
        }

        for (; i < half; i++)
        {
            float a = lo[i], b = hi[i];
            lo[i] = (a * cos[i]) - (b * sin[i]);
            hi[i] = (b * cos[i]) + (a * sin[i]);
        }
    }

    /// <summary>
    /// Pairs (v[2i], v[2i+1]). A vector holds Count/2 pairs [a0 b0 a1 b1 …]: it is multiplied by [c0 c0 c1 c1 …], its
    /// pair-swapped copy [b0 a0 b1 a1 …] by [s0 s0 s1 s1 …] with the even lanes negated
    /// (the sign bit of each 64-bit lane's low float), and the two added.
    /// </summary>
    private static void Interleaved(float* v, float* cos, float* sin, int pairs, VectorWidth width)
    {
        int i = 0;
        if (width >= VectorWidth.V512)
        {
            var dup = Vector512.Create(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
            var swap = Vector512.Create(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
            var negateEven = Vector512.Create(0x80000000UL).AsSingle();
            for (; i <= pairs - (Vector512<float>.Count / 2); i += Vector512<float>.Count / 2)
            {
                var p = Vector512.Load(v + (2 * i));
                var c = Vector512.Shuffle(Vector256.Load(cos + i).ToVector512Unsafe(), dup);
                var s = Vector512.Shuffle(Vector256.Load(sin + i).ToVector512Unsafe(), dup);
                ((p * c) + ((Vector512.Shuffle(p, swap) * s) ^ negateEven)).Store(v + (2 * i));
            }
        }

        if (width >= VectorWidth.V256)
        {
            var dup = Vector256.Create(0, 0, 1, 1, 2, 2, 3, 3);
            var swap = Vector256.Create(1, 0, 3, 2, 5, 4, 7, 6);
            var negateEven = Vector256.Create(0x80000000UL).AsSingle();
            for (; i <= pairs - (Vector256<float>.Count / 2); i += Vector256<float>.Count / 2)
            {
                var p = Vector256.Load(v + (2 * i));
                var c = Vector256.Shuffle(Vector128.Load(cos + i).ToVector256Unsafe(), dup);
                var s = Vector256.Shuffle(Vector128.Load(sin + i).ToVector256Unsafe(), dup);
                ((p * c) + ((Vector256.Shuffle(p, swap) * s) ^ negateEven)).Store(v + (2 * i));
            }
        }

        if (width >= VectorWidth.V128)
        {
            var dup = Vector128.Create(0, 0, 1, 1);
            var swap = Vector128.Create(1, 0, 3, 2);
            var negateEven = Vector128.Create(0x80000000UL).AsSingle();
            for (; i <= pairs - (Vector128<float>.Count / 2); i += Vector128<float>.Count / 2)
            {
                var p = Vector128.Load(v + (2 * i));
                var c = Vector128.Shuffle(Load2(cos + i), dup);
                var s = Vector128.Shuffle(Load2(sin + i), dup);
                ((p * c) + ((Vector128.Shuffle(p, swap) * s) ^ negateEven)).Store(v + (2 * i));
            }
        }

        for (; i < pairs; i++)
        {
            float a = v[2 * i], b = v[(2 * i) + 1];
            v[2 * i] = (a * cos[i]) - (b * sin[i]);
            v[(2 * i) + 1] = (b * cos[i]) + (a * sin[i]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Load2(float* p) => Vector128.CreateScalar(Unsafe.ReadUnaligned<ulong>(p)).AsSingle();
}
