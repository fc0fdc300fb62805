using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Minnow.Tensors;

namespace Minnow.Kernels;

/// <summary>
/// How a weight row is stored, for the matrix kernels: a scalar body (the reference, value by value exactly as
/// <see cref="Dequantize.Row"/>) and a vector body (generic over the vector type through <see cref="Simd"/>), which
/// must produce the same values bit for bit. Plain formats (F32, F16, BF16) address a row by element index;
/// blocked formats (Q8_0, Q4_0) by block, 32 values sharing one fp16 scale.
/// </summary>
internal unsafe interface IWeightFormat
{
    /// <summary>True for the GGUF block formats (32 values and one scale per block).</summary>
    static abstract bool Blocked { get; }

    /// <summary>Bytes per block (blocked formats) or per value (plain formats).</summary>
    static abstract int BlockBytes { get; }

    /// <summary>The block's scale (blocked formats).</summary>
    static abstract float Scale(byte* block);

    /// <summary>What the vector body adds after scaling (blocked formats): Q4_0's −8 · scale.</summary>
    static abstract float Offset(float scale);

    /// <summary>Value j of a block (blocked) or of a row (plain), as float.</summary>
    static abstract float Value(byte* block, int j, float scale);

    /// <summary>Values j .. j + Count − 1 of a block or row (j a multiple of the vector's Count).</summary>
    static abstract T Load<T>(byte* block, int j, T scale, T offset)
        where T : struct;
}

internal readonly unsafe struct F32Format : IWeightFormat
{
    public static bool Blocked => false;

    public static int BlockBytes => sizeof(float);

    public static float Scale(byte* block) => 1f;

    public static float Offset(float scale) => 0f;

    public static float Value(byte* row, int i, float scale) => ((float*)row)[i];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* row, int i, T scale, T offset)
        where T : struct => Simd.Load<T>((float*)row + i);
}

internal readonly unsafe struct F16Format : IWeightFormat
{
    public static bool Blocked => false;

    public static int BlockBytes => sizeof(ushort);

    public static float Scale(byte* block) => 1f;

    public static float Offset(float scale) => 0f;

    public static float Value(byte* row, int i, float scale) => (float)((Half*)row)[i];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* row, int i, T scale, T offset)
        where T : struct => Simd.LoadHalves<T>((ushort*)row + i);
}

internal readonly unsafe struct BF16Format : IWeightFormat
{
    public static bool Blocked => false;

    public static int BlockBytes => sizeof(ushort);

    public static float Scale(byte* block) => 1f;

    public static float Offset(float scale) => 0f;

    public static float Value(byte* row, int i, float scale) => BFloat16.ToSingle(((ushort*)row)[i]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* row, int i, T scale, T offset)
        where T : struct => Simd.LoadBFloat16<T>((ushort*)row + i);
}

/// <summary>GGUF Q8_0: fp16 d, then 32 int8 q; value = q · d (exact in float: 8 × 11 significant bits).</summary>
internal readonly unsafe struct Q8_0Format : IWeightFormat
{
    public static bool Blocked => true;

    public static int BlockBytes => 34;

    public static float Scale(byte* block) => (float)BitConverter.UInt16BitsToHalf(Unsafe.ReadUnaligned<ushort>(block));

    public static float Offset(float scale) => 0f;

    public static float Value(byte* block, int j, float scale) => ((sbyte*)(block + 2))[j] * scale;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* block, int j, T scale, T offset)
        where T : struct => Simd.Multiply(Simd.LoadSBytes<T>((sbyte*)(block + 2) + j), scale);
}

/// <summary>
/// GGUF Q4_0: fp16 d, then 16 bytes; value j = ((qs[j] &amp; 0xF) − 8) · d, value j + 16 = ((qs[j] &gt;&gt; 4) − 8) · d.
/// The vector body computes nibble · d + (−8 · d) in one fused step: both products are exact in float, so the
/// single rounding gives the same value as the reference.
/// </summary>
internal readonly unsafe struct Q4_0Format : IWeightFormat
{
    public static bool Blocked => true;

    public static int BlockBytes => 18;

    public static float Scale(byte* block) => (float)BitConverter.UInt16BitsToHalf(Unsafe.ReadUnaligned<ushort>(block));

    public static float Offset(float scale) => -8f * scale;

    public static float Value(byte* block, int j, float scale)
    {
        byte* qs = block + 2;
        int q = j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4;
        return (q - 8) * scale;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* block, int j, T scale, T offset)
        where T : struct => Simd.MultiplyAdd(Simd.LoadNibbles<T>(block + 2, j), scale, offset);
}
