using Minnow.Tensors;

namespace Minnow.Formats.Gguf;

/// <summary>The ggml tensor type ids used in GGUF files, and their mapping to <see cref="DType"/>.</summary>
public static class GgmlType
{
    public const uint F32 = 0;
    public const uint F16 = 1;
    public const uint Q4_0 = 2;
    public const uint Q4_1 = 3;
    public const uint Q5_0 = 6;
    public const uint Q5_1 = 7;
    public const uint Q8_0 = 8;
    public const uint Q8_1 = 9;
    public const uint Q2_K = 10;
    public const uint Q3_K = 11;
    public const uint Q4_K = 12;
    public const uint Q5_K = 13;
    public const uint Q6_K = 14;
    public const uint IQ2_XXS = 16;
    public const uint I8 = 24;
    public const uint BF16 = 30;

    /// <summary>Minnow's own ids for INT4 groups of 64 and 128 (<see cref="DType.Q4_1_G64"/>); llama.cpp has no such types.</summary>
    public const uint MinnowQ4_1_G64 = 1064;
    public const uint MinnowQ4_1_G128 = 1128;

    /// <summary>Minnow's own ids for INT3 groups of 32, 64 and 128 (<see cref="DType.Q3_1_G32"/>); llama.cpp has no such types and cannot read them.</summary>
    public const uint MinnowQ3_1_G32 = 1332;
    public const uint MinnowQ3_1_G64 = 1364;
    public const uint MinnowQ3_1_G128 = 1428;

    /// <summary>Minnow's own ids for its sparse matrices (<see cref="DType.SparseF16"/>, <see cref="DType.SparseQ8"/>, <see cref="DType.SparseI8"/>); llama.cpp has no such types.</summary>
    public const uint MinnowSparseF16 = 2016;
    public const uint MinnowSparseQ8 = 2008;
    public const uint MinnowSparseI8 = 2024;

    /// <summary>The ggml types Minnow loads, for messages ("F32, F16, ...").</summary>
    public static string SupportedNames => "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, I8 (with a per-row F16 .scale tensor), and Minnow's Q4_1_G64, Q4_1_G128, Q3_1_G32, Q3_1_G64, Q3_1_G128, SPARSE_F16, SPARSE_Q8, SPARSE_I8";

    private static readonly string[] Names =
    [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
        "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16",
        "I32", "I64", "F64", "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4",
        "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",
    ];

    /// <summary>The ggml name of a type id ("Q4_K"), or "type N" when unknown.</summary>
    public static string Name(uint type) => type switch
    {
        MinnowQ4_1_G64 => "Q4_1_G64 (Minnow)",
        MinnowQ4_1_G128 => "Q4_1_G128 (Minnow)",
        MinnowQ3_1_G32 => "Q3_1_G32 (Minnow)",
        MinnowQ3_1_G64 => "Q3_1_G64 (Minnow)",
        MinnowQ3_1_G128 => "Q3_1_G128 (Minnow)",
        MinnowSparseF16 => "SPARSE_F16 (Minnow)",
        MinnowSparseQ8 => "SPARSE_Q8 (Minnow)",
        MinnowSparseI8 => "SPARSE_I8 (Minnow)",
        _ => type < Names.Length ? Names[type] : $"type {type}",
    };

    public static DType? ToDType(uint type) => type switch
    {
        F32 => DType.F32,
        F16 => DType.F16,
        Q4_0 => DType.Q4_0,
        Q8_0 => DType.Q8_0,
        BF16 => DType.BF16,
        Q4_1 => DType.Q4_1,
        Q5_0 => DType.Q5_0,
        Q5_1 => DType.Q5_1,
        Q8_1 => DType.Q8_1,
        Q2_K => DType.Q2_K,
        Q3_K => DType.Q3_K,
        Q4_K => DType.Q4_K,
        Q5_K => DType.Q5_K,
        Q6_K => DType.Q6_K,
        MinnowQ4_1_G64 => DType.Q4_1_G64,
        MinnowQ4_1_G128 => DType.Q4_1_G128,
        MinnowQ3_1_G32 => DType.Q3_1_G32,
        MinnowQ3_1_G64 => DType.Q3_1_G64,
        MinnowQ3_1_G128 => DType.Q3_1_G128,
        MinnowSparseF16 => DType.SparseF16,
        MinnowSparseQ8 => DType.SparseQ8,
        MinnowSparseI8 => DType.SparseI8,
        I8 => DType.I8,
        _ => null,
    };

    public static uint FromDType(DType type) => type switch
    {
        DType.F32 => F32,
        DType.F16 => F16,
        DType.Q4_0 => Q4_0,
        DType.Q8_0 => Q8_0,
        DType.BF16 => BF16,
        DType.Q4_1 => Q4_1,
        DType.Q5_0 => Q5_0,
        DType.Q5_1 => Q5_1,
        DType.Q8_1 => Q8_1,
        DType.Q2_K => Q2_K,
        DType.Q3_K => Q3_K,
        DType.Q4_K => Q4_K,
        DType.Q5_K => Q5_K,
        DType.Q6_K => Q6_K,
        DType.Q4_1_G64 => MinnowQ4_1_G64,
        DType.Q4_1_G128 => MinnowQ4_1_G128,
        DType.Q3_1_G32 => MinnowQ3_1_G32,
        DType.Q3_1_G64 => MinnowQ3_1_G64,
        DType.Q3_1_G128 => MinnowQ3_1_G128,
        DType.SparseF16 => MinnowSparseF16,
        DType.SparseQ8 => MinnowSparseQ8,
        DType.SparseI8 => MinnowSparseI8,
        DType.I8 => I8,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };
}
