namespace Minnow.Tensors;

/// <summary>Storage type of a tensor's elements.</summary>
public enum DType
{
    F32,
    F16,
    BF16,
    /// <summary>GGUF Q8_0: blocks of 32 values, one fp16 scale + 32 int8.</summary>
    Q8_0,
    /// <summary>GGUF Q4_0: blocks of 32 values, one fp16 scale + 16 bytes of 4-bit values (offset 8).</summary>
    Q4_0,

    /// <summary>
    /// GGUF Q4_1: INT4 with a scale and a zero point per group of 32: fp16 d, fp16 m (the group's minimum,
    /// −d · zero point), then 16 bytes of 4-bit q; value = q · d + m (value j in the low nibble of byte j, value
    /// j + 16 in its high nibble).
    /// </summary>
    Q4_1,

    // The types below occur in GGUF files quantized by llama.cpp. Minnow has no kernels for them: a model's tensors
    // in these types are converted to F32 when it is loaded (see DequantizeKQuants for the block layouts).

    /// <summary>GGUF Q5_0: blocks of 32 values, fp16 scale + 4 bytes of fifth bits + 16 bytes of low nibbles (offset 16).</summary>
    Q5_0,
    /// <summary>GGUF Q5_1: blocks of 32 values, fp16 scale and minimum + 4 bytes of fifth bits + 16 bytes of low nibbles.</summary>
    Q5_1,
    /// <summary>GGUF Q8_1: blocks of 32 values, fp16 scale and fp16 sum + 32 int8.</summary>
    Q8_1,
    /// <summary>GGUF Q2_K: super-blocks of 256 values, 2-bit quants with 4-bit scales and minimums.</summary>
    Q2_K,
    /// <summary>GGUF Q3_K: super-blocks of 256 values, 3-bit quants with 6-bit scales.</summary>
    Q3_K,
    /// <summary>GGUF Q4_K: super-blocks of 256 values, 4-bit quants with 6-bit scales and minimums.</summary>
    Q4_K,
    /// <summary>GGUF Q5_K: super-blocks of 256 values, 5-bit quants with 6-bit scales and minimums.</summary>
    Q5_K,
    /// <summary>GGUF Q6_K: super-blocks of 256 values, 6-bit quants with int8 scales.</summary>
    Q6_K,

    /// <summary>
    /// Minnow's INT4 with a scale and zero point per group of 64: fp16 d, fp16 m, then two Q4_1 nibble blocks of
    /// 16 bytes (values 0..31, then 32..63); value = q · d + m. Not a llama.cpp type (export Q4_1 or Q4_0 for it).
    /// </summary>
    Q4_1_G64,

    /// <summary>The same with groups of 128 (four nibble blocks).</summary>
    Q4_1_G128,

    /// <summary>
    /// Minnow's sparse matrix with F16 values: per row a bitmap of the kept columns, then the kept values packed
    /// (<see cref="SparseMatrix"/>). Its size depends on the values, not only the shape. Not a llama.cpp type.
    /// </summary>
    SparseF16,

    /// <summary>
    /// Minnow's sparse matrix with 8-bit values: per row a bitmap of the kept columns, an fp16 scale per 64 columns,
    /// then the kept values packed as int8 (value = q · scale, <see cref="SparseMatrix"/>). Not a llama.cpp type.
    /// </summary>
    SparseQ8,

    /// <summary>
    /// Plain int8 values (ggml's I8). In a GGUF file a linear layer stored as I8 has a companion F16 tensor of one
    /// scale per row (<c>NAME.scale</c>): INT8 per output channel, which the loader expands into Q8_0 blocks that all
    /// carry the row's scale (exact), so the integer kernels run it. No kernel reads I8 directly.
    /// </summary>
    I8,

    /// <summary>
    /// Minnow's INT3 with a scale and zero point per group of 32: fp16 d, fp16 m (the group's minimum), then the 32
    /// codes q in [0, 7] in 12 bytes (value = q · d + m): 8 bytes of low bits, byte j holding bits 0-1 of values j,
    /// j + 8, j + 16 and j + 24 at bit positions 0, 2, 4 and 6, then 4 bytes of high bits, bit j of the
    /// little-endian 32-bit word being bit 2 of value j (<see cref="GroupCodes"/>). The layout is chosen so that the low
    /// plane becomes Q4_1's nibble block with one mask (bytes 0..7) and one shift and mask (bytes 8..15), as
    /// llama.cpp's Q3_K splits its codes into a 2-bit and a 1-bit plane. 4.0 bits per weight. Not a llama.cpp type.
    /// </summary>
    Q3_1_G32,

    /// <summary>The same with groups of 64: fp16 d, fp16 m, then two 12-byte code blocks (3.5 bits per weight).</summary>
    Q3_1_G64,

    /// <summary>The same with groups of 128: fp16 d, fp16 m, then four 12-byte code blocks (3.25 bits per weight).</summary>
    Q3_1_G128,

    /// <summary>
    /// Minnow's sparse matrix with 8-bit values and one scale per row: per row a bitmap of the kept columns, one fp16
    /// scale, then the kept values packed as int8 (value = q · scale, <see cref="SparseMatrix"/>); uint32 row offsets.
    /// 5 bits per weight at 50% sparsity plus 48 per row. Not a llama.cpp type.
    /// </summary>
    SparseI8,
}

public static class DTypeInfo
{
    /// <summary>Number of elements in one storage block (1 for plain floating types).</summary>
    public static int BlockSize(this DType type) => type switch
    {
        DType.Q8_0 or DType.Q4_0 or DType.Q4_1 or DType.Q5_0 or DType.Q5_1 or DType.Q8_1 => 32,
        DType.Q4_1_G64 or DType.Q3_1_G64 => 64,
        DType.Q4_1_G128 or DType.Q3_1_G128 => 128,
        DType.Q3_1_G32 => 32,
        DType.Q2_K or DType.Q3_K or DType.Q4_K or DType.Q5_K or DType.Q6_K => 256,
        _ => 1,
    };

    /// <summary>Bytes used by one block (one element for plain floating types).</summary>
    public static int BlockBytes(this DType type) => type switch
    {
        DType.F32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.I8 => 1,
        DType.Q8_0 => 34,
        DType.Q4_0 => 18,
        DType.Q4_1 => 20,
        DType.Q4_1_G64 => 36,
        DType.Q4_1_G128 => 68,
        DType.Q3_1_G32 => 16,
        DType.Q3_1_G64 => 28,
        DType.Q3_1_G128 => 52,
        DType.Q5_0 => 22,
        DType.Q5_1 => 24,
        DType.Q8_1 => 36,
        DType.Q2_K => 84,
        DType.Q3_K => 110,
        DType.Q4_K => 144,
        DType.Q5_K => 176,
        DType.Q6_K => 210,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>
    /// Bytes needed to store <paramref name="elements"/> values (a multiple of the block size); not defined for the
    /// sparse types, whose size depends on their content (<see cref="SparseMatrix.ByteSize"/>).
    /// </summary>
    public static long ByteCount(this DType type, long elements) => elements / type.BlockSize() * type.BlockBytes();

    /// <summary>
    /// True for the types Minnow reads from GGUF files but has no kernels for (Q5_0, Q5_1, Q8_1 and the
    /// K-quants): their tensors are converted to F32 when a model is loaded.
    /// </summary>
    public static bool IsLoadOnly(this DType type) => type is DType.Q5_0 or DType.Q5_1 or DType.Q8_1
        or DType.Q2_K or DType.Q3_K or DType.Q4_K or DType.Q5_K or DType.Q6_K;

    /// <summary>True for Minnow's sparse matrix types (<see cref="SparseMatrix"/>), whose size is not a function of the shape.</summary>
    public static bool IsSparse(this DType type) => type is DType.SparseF16 or DType.SparseQ8 or DType.SparseI8;

    /// <summary>True for INT4 with a scale and zero point per group: Q4_1 (32), Q4_1_G64, Q4_1_G128.</summary>
    public static bool IsInt4Group(this DType type) => type is DType.Q4_1 or DType.Q4_1_G64 or DType.Q4_1_G128;

    /// <summary>True for INT3 with a scale and zero point per group: Q3_1_G32, Q3_1_G64, Q3_1_G128.</summary>
    public static bool IsInt3Group(this DType type) => type is DType.Q3_1_G32 or DType.Q3_1_G64 or DType.Q3_1_G128;

    /// <summary>True for the group-wise integer types with a scale and a minimum per group (INT4 or INT3): value = q · d + m.</summary>
    public static bool IsIntGroup(this DType type) => type.IsInt4Group() || type.IsInt3Group();

    /// <summary>The largest code of a group-wise integer type: 15 for INT4, 7 for INT3 (codes start at 0).</summary>
    public static int MaxGroupCode(this DType type) => type.IsInt3Group() ? 7 : type.IsInt4Group() ? 15
        : throw new ArgumentOutOfRangeException(nameof(type), $"{type} is not a group-wise integer type.");

    public static string Name(this DType type) => type switch
    {
        DType.F32 => "F32",
        DType.F16 => "F16",
        DType.BF16 => "BF16",
        DType.Q8_0 => "Q8_0",
        DType.Q4_0 => "Q4_0",
        DType.Q4_1 => "Q4_1",
        DType.Q5_0 => "Q5_0",
        DType.Q5_1 => "Q5_1",
        DType.Q8_1 => "Q8_1",
        DType.Q2_K => "Q2_K",
        DType.Q3_K => "Q3_K",
        DType.Q4_K => "Q4_K",
        DType.Q5_K => "Q5_K",
        DType.Q6_K => "Q6_K",
        DType.Q4_1_G64 => "Q4_1_G64",
        DType.Q4_1_G128 => "Q4_1_G128",
        DType.Q3_1_G32 => "Q3_1_G32",
        DType.Q3_1_G64 => "Q3_1_G64",
        DType.Q3_1_G128 => "Q3_1_G128",
        DType.SparseF16 => "SPARSE_F16",
        DType.SparseQ8 => "SPARSE_Q8",
        DType.SparseI8 => "SPARSE_I8",
        DType.I8 => "I8",
        _ => type.ToString(),
    };
}
