using Minnow.Tensors;

namespace Minnow.Quantization;

/// <summary>How the weights are rounded to the target format.</summary>
public enum QuantizationMethod
{
    /// <summary>Round to nearest, block by block: llama.cpp's reference quantizer, bit for bit.</summary>
    Rtn,

    /// <summary>GPTQ (Frantar et al. 2022): column-by-column rounding with Hessian-based error feedback.</summary>
    Gptq,

    /// <summary>
    /// AWQ-style activation-aware scaling (Lin et al. 2023): input channels of the layers fed by a norm are scaled
    /// by mean|x|^α (the inverse folded into the norm), then rounded to nearest.
    /// </summary>
    Awq,
}

/// <summary>The knobs of <see cref="ModelQuantizer"/>.</summary>
public sealed record QuantizationOptions
{
    /// <summary>
    /// The storage format of the linear layers: <see cref="DType.Q8_0"/>, <see cref="DType.Q4_0"/> or an INT4 group
    /// type (<see cref="DType.Q4_1"/>, <see cref="DType.Q4_1_G64"/>, <see cref="DType.Q4_1_G128"/>) or an INT3 group type
    /// (<see cref="DType.Q3_1_G32"/>, <see cref="DType.Q3_1_G64"/>, <see cref="DType.Q3_1_G128"/>), by any method.
    /// </summary>
    public DType Scheme { get; init; } = DType.Q4_0;

    public QuantizationMethod Method { get; init; } = QuantizationMethod.Rtn;

    /// <summary>
    /// Linear layers (by Hugging Face weight name) stored in another block format than <see cref="Scheme"/>: mixed
    /// precision keeps the most sensitive ones at Q8_0 (<see cref="MixedPrecision"/>).
    /// </summary>
    public IReadOnlyDictionary<string, DType>? TypeOverrides { get; init; }

    /// <summary>The block format of one linear layer.</summary>
    public DType SchemeOf(string layer) =>
        TypeOverrides is not null && TypeOverrides.TryGetValue(layer, out var type) ? type : Scheme;

    /// <summary>GPTQ: dampening added to the Hessian's diagonal, as a fraction of its mean diagonal.</summary>
    public double Dampening { get; init; } = 0.01;

    /// <summary>GPTQ: quantize columns in order of decreasing Hessian diagonal ("act-order").</summary>
    public bool ActOrder { get; init; } = true;

    /// <summary>GPTQ: columns per lazy batch (error feedback to later columns is applied once per batch).</summary>
    public int LazyBatchSize { get; init; } = 128;

    /// <summary>
    /// GPTQ Q4_0 and int4 / int3 groups: pick each group's scale (groups: scale and minimum) among a few candidates by
    /// Hessian-weighted error (false: llama.cpp's rules, Q4_0 d = max / -8, Q4_1 d = (max − min) / 15 (int3: / 7) and m = min, on
    /// the error-updated weights).
    /// </summary>
    public bool ScaleSearch { get; init; } = true;

    /// <summary>
    /// INT8 per output channel (<c>--scheme int8</c>): one symmetric scale per row, d = max|row| / 127, codes in
    /// [-127, 127]. Requires <see cref="Scheme"/> = <see cref="DType.Q8_0"/>: in memory the rows are Q8_0 blocks that all
    /// carry the row's scale, so the integer kernels run them unchanged; <see cref="Export.GgufExporter"/> with
    /// <c>rowScaledInt8</c> writes them as I8 codes and one F16 scale per row.
    /// </summary>
    public bool PerChannel { get; init; }

    /// <summary>
    /// SmoothQuant migration strength α (Xiao et al. 2023) for <see cref="PerChannel"/>: input channel j of the layers
    /// fed by a norm is scaled by s_j = max|x_j|^α / max|W_:,j|^(1−α), 1/s folded into the norm. 0 disables it.
    /// </summary>
    public double SmoothAlpha { get; init; }

    /// <summary>AWQ: number of steps of the α grid over [0, 1] (α = 0 is plain round to nearest).</summary>
    public int AwqGridSteps { get; init; } = 20;

    public void Validate()
    {
        if (Scheme is not (DType.Q8_0 or DType.Q4_0) && !Scheme.IsIntGroup())
        {
            throw new MinnowException($"quantization scheme must be q8_0, q4_0, int4 (q4_1, groups of 32, 64 or 128) or int3 (groups of 32, 64 or 128), not {Scheme.Name()}.");
        }

        if (PerChannel && Scheme != DType.Q8_0)
        {
            throw new MinnowException($"per-channel INT8 is stored in Q8_0 blocks (scheme {Scheme.Name()} given).");
        }

        if (PerChannel && Method == QuantizationMethod.Awq)
        {
            throw new MinnowException("--scheme int8 supports --method rtn or gptq, not awq (its activation scaling is SmoothQuant, --smooth-alpha).");
        }

        if (SmoothAlpha is < 0 or > 1 || !double.IsFinite(SmoothAlpha))
        {
            throw new MinnowException($"--smooth-alpha must be between 0 and 1 (got {SmoothAlpha}).");
        }

        if (SmoothAlpha > 0 && !PerChannel)
        {
            throw new MinnowException("--smooth-alpha applies to --scheme int8 only.");
        }

        foreach (var (layer, type) in TypeOverrides ?? new Dictionary<string, DType>())
        {
            if (type is not (DType.Q8_0 or DType.Q4_0))
            {
                throw new MinnowException($"{layer}: a layer can be stored as q8_0 or q4_0, not {type.Name()}.");
            }
        }

        if (Dampening is < 0 or > 10 || !double.IsFinite(Dampening))
        {
            throw new MinnowException($"the GPTQ dampening must be between 0 and 10 (got {Dampening}).");
        }

        if (LazyBatchSize < 1)
        {
            throw new MinnowException($"the GPTQ lazy batch size must be positive (got {LazyBatchSize}).");
        }

        if (AwqGridSteps < 1)
        {
            throw new MinnowException($"the AWQ grid must have at least one step (got {AwqGridSteps}).");
        }
    }

    /// <param name="group">For int4 and int3: the values sharing a scale and zero point, 32, 64 or 128.</param>
    public static DType ParseScheme(string? text, int group = 32) => text?.Trim().ToLowerInvariant() switch
    {
        "q8_0" or "q8" => DType.Q8_0,
        "q4_0" or "q4" => DType.Q4_0,
        "q4_1" => DType.Q4_1,
        "int4" => group switch
        {
            32 => DType.Q4_1,
            64 => DType.Q4_1_G64,
            128 => DType.Q4_1_G128,
            _ => throw new MinnowException($"--group must be 32, 64 or 128 (got {group})."),
        },
        "int3" => group switch
        {
            32 => DType.Q3_1_G32,
            64 => DType.Q3_1_G64,
            128 => DType.Q3_1_G128,
            _ => throw new MinnowException($"--group must be 32, 64 or 128 (got {group})."),
        },
        "int8" => DType.Q8_0,
        _ => throw new MinnowException($"--scheme '{text}' is not supported (q8_0, q4_0, int4, int3, q4_1, int8)."),
    };

    public static QuantizationMethod ParseMethod(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        "rtn" => QuantizationMethod.Rtn,
        "gptq" => QuantizationMethod.Gptq,
        "awq" => QuantizationMethod.Awq,
        _ => throw new MinnowException($"--method '{text}' is not supported (rtn, gptq, awq)."),
    };

    public static string MethodName(QuantizationMethod method) => method.ToString().ToLowerInvariant();
}
