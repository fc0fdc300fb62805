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
}

public static class DTypeInfo
{
    /// <summary>Number of elements in one storage block (1 for plain floating types).</summary>
    public static int BlockSize(this DType type) => type switch
    {
        DType.Q8_0 or DType.Q4_0 => 32,
        _ => 1,
    };

    /// <summary>Bytes used by one block (one element for plain floating types).</summary>
    public static int BlockBytes(this DType type) => type switch
    {
        DType.F32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.Q8_0 => 34,
        DType.Q4_0 => 18,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>Bytes needed to store <paramref name="elements"/> values (a multiple of the block size).</summary>
    public static long ByteCount(this DType type, long elements) => elements / type.BlockSize() * type.BlockBytes();

    public static string Name(this DType type) => type switch
    {
        DType.F32 => "F32",
        DType.F16 => "F16",
        DType.BF16 => "BF16",
        DType.Q8_0 => "Q8_0",
        DType.Q4_0 => "Q4_0",
        _ => type.ToString(),
    };
}
