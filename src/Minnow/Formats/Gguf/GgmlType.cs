using Minnow.Tensors;

namespace Minnow.Formats.Gguf;

/// <summary>The ggml tensor type ids used in GGUF files, and their mapping to <see cref="DType"/>.</summary>
public static class GgmlType
{
    public const uint F32 = 0;
    public const uint F16 = 1;
    public const uint Q4_0 = 2;
    public const uint Q8_0 = 8;
    public const uint BF16 = 30;

    private static readonly string[] Names =
    [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
        "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16",
        "I32", "I64", "F64", "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4",
        "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",
    ];

    /// <summary>The ggml name of a type id ("Q4_K"), or "type N" when unknown.</summary>
    public static string Name(uint type) => type < Names.Length ? Names[type] : $"type {type}";

    public static DType? ToDType(uint type) => type switch
    {
        F32 => DType.F32,
        F16 => DType.F16,
        Q4_0 => DType.Q4_0,
        Q8_0 => DType.Q8_0,
        BF16 => DType.BF16,
        _ => null,
    };

    public static uint FromDType(DType type) => type switch
    {
        DType.F32 => F32,
        DType.F16 => F16,
        DType.Q4_0 => Q4_0,
        DType.Q8_0 => Q8_0,
        DType.BF16 => BF16,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };
}
