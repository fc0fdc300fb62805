using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Minnow.Tensors;

namespace Minnow.Kernels;

/// <summary>
/// How a weight row is stored, for the matrix kernels: scalar bodies (the reference, value by value exactly as
/// <see cref="Dequantize.Row"/>) and vector bodies (generic over the vector type through <see cref="Simd"/>),
/// which must produce the same values bit for bit. Plain formats (F32, F16, BF16) are read by element index and
/// implement the <c>Value/Load(row, i)</c> pair; blocked formats (Q8_0, Q4_0: 32 values sharing one fp16 scale)
/// are read block by block and implement the rest.
/// </summary>
internal unsafe interface IWeightFormat
{
    /// <summary>True for the GGUF block formats.</summary>
    static abstract bool Blocked { get; }

    /// <summary>Bytes per block (blocked formats) or per value (plain formats).</summary>
    static abstract int BlockBytes { get; }

    // ---- Plain formats ----

    /// <summary>Value i of a row, as float.</summary>
    static virtual float Value(byte* row, int i) => throw new NotSupportedException();

    /// <summary>Values i .. i + Count − 1 of a row.</summary>
    static virtual T Load<T>(byte* row, int i)
        where T : struct => throw new NotSupportedException();

    // ---- Blocked formats (the scale is the fp16 at the head of a GGUF block) ----

    /// <summary>The block's scale.</summary>
    static virtual float Scale(byte* block) => HalfConversion.ToSingle(Unsafe.ReadUnaligned<ushort>(block));

    /// <summary>The scales of four blocks, bit for bit as <see cref="Scale"/> computes them.</summary>
    static virtual Vector128<float> Scales(byte* b0, byte* b1, byte* b2, byte* b3) =>
        HalfConversion.ToSingle(Vector128.Create(
            (int)Unsafe.ReadUnaligned<short>(b0), Unsafe.ReadUnaligned<short>(b1), Unsafe.ReadUnaligned<short>(b2), Unsafe.ReadUnaligned<short>(b3)));

    /// <summary>What the vector body adds after scaling (Q4_0's −8 · scale), for four scales.</summary>
    static virtual Vector128<float> Offsets(Vector128<float> scales) => default;

    /// <summary>Value j of a block, as float.</summary>
    static virtual float Value(byte* block, int j, float scale) => throw new NotSupportedException();

    /// <summary>
    /// Values j .. j + Count − 1 of a block (j a multiple of Count; <paramref name="upper"/> = j ≥ 16, passed as a
    /// loop constant so the body can specialise), given the block's scale and offset broadcast.
    /// </summary>
    static virtual T Load<T>(byte* block, int j, bool upper, T scale, T offset)
        where T : struct => throw new NotSupportedException();
}

internal readonly unsafe struct F32Format : IWeightFormat
{
    public static bool Blocked => false;

    public static int BlockBytes => sizeof(float);

    public static float Value(byte* row, int i) => ((float*)row)[i];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* row, int i)
        where T : struct => Simd.Load<T>((float*)row + i);
}

internal readonly unsafe struct F16Format : IWeightFormat
{
    public static bool Blocked => false;

    public static int BlockBytes => sizeof(ushort);

    public static float Value(byte* row, int i) => HalfConversion.ToSingle(((ushort*)row)[i]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* row, int i)
        where T : struct => Simd.LoadHalves<T>((ushort*)row + i);
}

/// <summary>
/// F16 weights with no ±∞ or NaN (checked once per tensor, <see cref="MatMul"/>): the same values as
/// <see cref="F16Format"/>, converted with three vector operations fewer.
/// </summary>
internal readonly unsafe struct FiniteF16Format : IWeightFormat
{
    public static bool Blocked => false;

    public static int BlockBytes => sizeof(ushort);

    public static float Value(byte* row, int i) => HalfConversion.ToSingle(((ushort*)row)[i]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* row, int i)
        where T : struct => Simd.LoadFiniteHalves<T>((ushort*)row + i);
}

internal readonly unsafe struct BF16Format : IWeightFormat
{
    public static bool Blocked => false;

    public static int BlockBytes => sizeof(ushort);

    public static float Value(byte* row, int i) => BFloat16.ToSingle(((ushort*)row)[i]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* row, int i)
        where T : struct => Simd.LoadBFloat16<T>((ushort*)row + i);
}

/// <summary>GGUF Q8_0: fp16 d, then 32 int8 q; value = q · d (exact in float: 8 × 11 significant bits).</summary>
internal readonly unsafe struct Q8_0Format : IWeightFormat
{
    public static bool Blocked => true;

    public static int BlockBytes => 34;

    public static float Value(byte* block, int j, float scale) => ((sbyte*)(block + 2))[j] * scale;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* block, int j, bool upper, T scale, T offset)
        where T : struct => Simd.Multiply(Simd.LoadSBytes<T>((sbyte*)(block + 2) + j), scale);
}

/// <summary>
/// GGUF Q4_0: fp16 d, then 16 bytes; value j = ((qs[j] &amp; 0xF) − 8) · d, value j + 16 = ((qs[j] &gt;&gt; 4) − 8) · d.
/// The vector body computes nibble · d + (−8 · d) in one multiply-add: nibble · d and −8 · d are exact in float
/// and so is their sum, (nibble − 8) · d, so the result is the reference value whether or not the step is fused.
/// </summary>
internal readonly unsafe struct Q4_0Format : IWeightFormat
{
    public static bool Blocked => true;

    public static int BlockBytes => 18;

    public static Vector128<float> Offsets(Vector128<float> scales) => scales * Vector128.Create(-8f);

    public static float Value(byte* block, int j, float scale)
    {
        byte* qs = block + 2;
        int q = j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4;
        return (q - 8) * scale;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(byte* block, int j, bool upper, T scale, T offset)
        where T : struct => Simd.MultiplyAdd(Simd.LoadNibbles<T>(block + 2 + (j & 15), upper), scale, offset);
}
