using System.Text.Json;
using Minnow.Formats;
using Minnow.Kernels;

namespace Minnow.Models;

public enum Architecture
{
    /// <summary>Llama, TinyLlama, SmolLM, Mistral, Qwen2: RMSNorm, RoPE, grouped-query attention, SwiGLU.</summary>
    Llama,
    /// <summary>GPT-NeoX / Pythia: LayerNorm, partial rotary, fused QKV, parallel residual, GELU.</summary>
    GptNeoX,
    /// <summary>GPT-2: LayerNorm, learned positions, Conv1D weights, tanh GELU.</summary>
    Gpt2,
}

public enum Activation
{
    Silu,
    Gelu,
    GeluTanh,
}

/// <summary>llama3-style frequency-dependent RoPE scaling (<c>rope_scaling.rope_type == "llama3"</c>).</summary>
public sealed record Llama3RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositions);

/// <summary>The shape and hyper-parameters of a model, normalised from whichever format it came in.</summary>
public sealed record ModelConfig
{
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["llama", "mistral", "qwen2", "gpt_neox", "gpt2"];

    public required Architecture Architecture { get; init; }

    /// <summary>The model_type it was loaded as (e.g. "llama", "qwen2").</summary>
    public required string ModelType { get; init; }

    public required int HiddenSize { get; init; }

    public required int IntermediateSize { get; init; }

    public required int Layers { get; init; }

    public required int Heads { get; init; }

    public required int KvHeads { get; init; }

    public required int HeadDim { get; init; }

    public required int VocabSize { get; init; }

    public required int MaxPositions { get; init; }

    public required float NormEps { get; init; }

    public double RopeTheta { get; init; } = 10000;

    /// <summary>Dimensions of each head that rotate (HeadDim unless rotary is partial).</summary>
    public int RotaryDim { get; init; }

    public RopeStyle RopeStyle { get; init; } = RopeStyle.RotateHalf;

    public Llama3RopeScaling? RopeScaling { get; init; }

    /// <summary>
    /// Per-frequency divisors of the RoPE inverse frequencies (GGUF's <c>rope_freqs.weight</c>, which is how
    /// llama.cpp stores llama3 scaling); null when absent.
    /// </summary>
    public float[]? RopeFrequencyFactors { get; init; }

    public bool TieEmbeddings { get; init; }

    /// <summary>
    /// GPT-NeoX: the fused query_key_value rows are grouped per head as [q_h, k_h, v_h] (Hugging Face); false when
    /// laid out as [all q | all k | all v] (GGUF).
    /// </summary>
    public bool FusedQkvPerHead { get; init; } = true;

    /// <summary>GPT-2: weights stored [in, out] as Hugging Face's Conv1D (false when already [out, in], as in GGUF).</summary>
    public bool Conv1DLayout { get; init; } = true;

    /// <summary>q/k/v projections carry a bias (Qwen2).</summary>
    public bool QkvBias { get; init; }

    public bool ParallelResidual { get; init; }

    public Activation Activation { get; init; } = Activation.Silu;

    public int? BosTokenId { get; init; }

    public int? EosTokenId { get; init; }

    public int QDim => Heads * HeadDim;

    public int KvDim => KvHeads * HeadDim;

    /// <summary>
    /// Per-layer query head counts when layers differ (a structurally pruned model; config.json
    /// <c>minnow_layer_heads</c>); null when every layer has <see cref="Heads"/>.
    /// </summary>
    public int[]? LayerHeads { get; init; }

    /// <summary>Per-layer key/value head counts (<c>minnow_layer_kv_heads</c>); null when every layer has <see cref="KvHeads"/>.</summary>
    public int[]? LayerKvHeads { get; init; }

    /// <summary>Per-layer MLP widths (<c>minnow_layer_intermediate</c>); null when every layer has <see cref="IntermediateSize"/>.</summary>
    public int[]? LayerIntermediate { get; init; }

    /// <summary>True when some layer's head count or MLP width differs from the others (per-layer arrays present).</summary>
    public bool HasPerLayerShapes => LayerHeads != null || LayerKvHeads != null || LayerIntermediate != null;

    public int HeadsOf(int layer) => LayerHeads?[layer] ?? Heads;

    public int KvHeadsOf(int layer) => LayerKvHeads?[layer] ?? KvHeads;

    public int IntermediateOf(int layer) => LayerIntermediate?[layer] ?? IntermediateSize;

    public int QDimOf(int layer) => HeadsOf(layer) * HeadDim;

    public int KvDimOf(int layer) => KvHeadsOf(layer) * HeadDim;

    /// <summary>The widest query projection over the layers (buffer sizes).</summary>
    public int MaxQDim => (LayerHeads?.Max() ?? Heads) * HeadDim;

    /// <summary>The widest key/value projection over the layers (buffer sizes).</summary>
    public int MaxKvDim => (LayerKvHeads?.Max() ?? KvHeads) * HeadDim;

    /// <summary>The widest MLP over the layers (buffer sizes).</summary>
    public int MaxIntermediate => LayerIntermediate?.Max() ?? IntermediateSize;

    /// <summary>Reads a Hugging Face config.json.</summary>
    public static ModelConfig FromHuggingFace(string configPath)
    {
        if (!File.Exists(configPath))
        {
            throw new MinnowException($"{configPath}: file not found (a Hugging Face model folder needs config.json).");
        }

        using var doc = JsonInput.ParseFile(configPath);
        return FromHuggingFace(doc.RootElement, configPath);
    }

    public static ModelConfig FromHuggingFace(JsonElement c, string source)
    {
        if (c.ValueKind != JsonValueKind.Object)
        {
            throw new MinnowException($"{source}: not a model config (the JSON is not an object).");
        }

        var config = FromHuggingFaceUniform(c, source);
        int[]? heads = OptIntArray(c, source, "minnow_layer_heads", config.Layers);
        int[]? kvHeads = OptIntArray(c, source, "minnow_layer_kv_heads", config.Layers);
        int[]? ffn = OptIntArray(c, source, "minnow_layer_intermediate", config.Layers);
        if (heads is null && kvHeads is null && ffn is null)
        {
            return config;
        }

        if (config.Architecture != Architecture.Llama && kvHeads != null && !kvHeads.SequenceEqual(heads ?? Enumerable.Repeat(config.Heads, config.Layers)))
        {
            throw new MinnowException($"{source}: {config.ModelType} has as many key/value heads as query heads in every layer; minnow_layer_kv_heads must equal minnow_layer_heads.");
        }

        return config with
        {
            LayerHeads = heads,
            LayerKvHeads = kvHeads ?? (config.Architecture == Architecture.Llama ? null : heads),
            LayerIntermediate = ffn,
        };
    }

    private static ModelConfig FromHuggingFaceUniform(JsonElement c, string source)
    {
        string modelType = Str(c, "model_type") ?? throw new MinnowException($"{source}: no model_type; supported: {string.Join(", ", SupportedModelTypes)}.");
        switch (modelType)
        {
            case "llama" or "mistral" or "qwen2":
                {
                    int hidden = Int(c, source, "hidden_size");
                    int heads = Int(c, source, "num_attention_heads");
                    int headDim = OptInt(c, "head_dim") ?? (heads > 0 ? hidden / heads : 0);
                    return new ModelConfig
                    {
                        Architecture = Architecture.Llama,
                        ModelType = modelType,
                        HiddenSize = hidden,
                        IntermediateSize = Int(c, source, "intermediate_size"),
                        Layers = Int(c, source, "num_hidden_layers"),
                        Heads = heads,
                        KvHeads = OptInt(c, "num_key_value_heads") ?? heads,
                        HeadDim = headDim,
                        RotaryDim = headDim,
                        VocabSize = Int(c, source, "vocab_size"),
                        MaxPositions = OptInt(c, "max_position_embeddings") ?? 2048,
                        NormEps = (float)(OptDouble(c, "rms_norm_eps") ?? 1e-6),
                        RopeTheta = OptDouble(c, "rope_theta") ?? 10000,
                        RopeScaling = ReadRopeScaling(c, source),
                        TieEmbeddings = OptBool(c, "tie_word_embeddings") ?? false,
                        QkvBias = modelType == "qwen2" || (OptBool(c, "attention_bias") ?? false),
                        Activation = ReadActivation(c, source, "hidden_act", Activation.Silu),
                        BosTokenId = OptInt(c, "bos_token_id"),
                        EosTokenId = OptInt(c, "eos_token_id"),
                    };
                }

            case "gpt_neox":
                {
                    int hidden = Int(c, source, "hidden_size");
                    int heads = Int(c, source, "num_attention_heads");
                    int headDim = heads > 0 ? hidden / heads : 0;
                    double pct = OptDouble(c, "rotary_pct") ?? 1.0;
                    return new ModelConfig
                    {
                        Architecture = Architecture.GptNeoX,
                        ModelType = modelType,
                        HiddenSize = hidden,
                        IntermediateSize = OptInt(c, "intermediate_size") ?? (4 * hidden),
                        Layers = Int(c, source, "num_hidden_layers"),
                        Heads = heads,
                        KvHeads = heads,
                        HeadDim = headDim,
                        RotaryDim = pct is >= 0 and <= 1 ? (int)(headDim * pct) : throw new MinnowException($"{source}: rotary_pct {pct} must be between 0 and 1."),
                        VocabSize = Int(c, source, "vocab_size"),
                        MaxPositions = OptInt(c, "max_position_embeddings") ?? 2048,
                        NormEps = (float)(OptDouble(c, "layer_norm_eps") ?? 1e-5),
                        RopeTheta = OptDouble(c, "rotary_emb_base") ?? OptDouble(c, "rope_theta") ?? 10000,
                        TieEmbeddings = OptBool(c, "tie_word_embeddings") ?? false,
                        ParallelResidual = OptBool(c, "use_parallel_residual") ?? true,
                        Activation = ReadActivation(c, source, "hidden_act", Activation.Gelu),
                        BosTokenId = OptInt(c, "bos_token_id"),
                        EosTokenId = OptInt(c, "eos_token_id"),
                    };
                }

            case "gpt2":
                {
                    int hidden = Int(c, source, "n_embd");
                    int heads = Int(c, source, "n_head");
                    return new ModelConfig
                    {
                        Architecture = Architecture.Gpt2,
                        ModelType = modelType,
                        HiddenSize = hidden,
                        IntermediateSize = OptInt(c, "n_inner") ?? (4 * hidden),
                        Layers = Int(c, source, "n_layer"),
                        Heads = heads,
                        KvHeads = heads,
                        HeadDim = heads > 0 ? hidden / heads : 0,
                        RotaryDim = 0,
                        VocabSize = Int(c, source, "vocab_size"),
                        MaxPositions = OptInt(c, "n_positions") ?? OptInt(c, "n_ctx") ?? 1024,
                        NormEps = (float)(OptDouble(c, "layer_norm_epsilon") ?? 1e-5),
                        TieEmbeddings = true,
                        Activation = ReadActivation(c, source, "activation_function", Activation.GeluTanh),
                        BosTokenId = OptInt(c, "bos_token_id"),
                        EosTokenId = OptInt(c, "eos_token_id"),
                    };
                }

            default:
                throw new MinnowException($"{source}: model_type '{modelType}' is not supported; supported: {string.Join(", ", SupportedModelTypes)}.");
        }
    }

    /// <summary>Widest hidden, MLP or attention size a config may give.</summary>
    public const int MaxWidth = 1 << 20;

    public const int MaxLayers = 4096;

    public const int MaxHeads = 4096;

    public const int MaxVocabulary = 1 << 24;

    public const int MaxContext = 1 << 24;

    /// <summary>Checks the numbers fit together (heads divide, sizes positive); throws a clear error otherwise.</summary>
    public void Validate(string source)
    {
        if (HiddenSize <= 0 || IntermediateSize <= 0 || Layers <= 0 || Heads <= 0 || KvHeads <= 0 || VocabSize <= 0 || HeadDim <= 0)
        {
            throw new MinnowException($"{source}: sizes must be positive (hidden {HiddenSize}, ffn {IntermediateSize}, layers {Layers}, heads {Heads}/{KvHeads}, vocab {VocabSize}).");
        }

        // Limits no real model comes near; past them a damaged config would overflow a size or ask for memory
        // that no file could fill before the weights' shapes are even compared with it.
        if (HiddenSize > MaxWidth || IntermediateSize > MaxWidth || Layers > MaxLayers || Heads > MaxHeads || KvHeads > MaxHeads ||
            HeadDim > MaxWidth || (long)Heads * HeadDim > MaxWidth || VocabSize > MaxVocabulary || MaxPositions <= 0 || MaxPositions > MaxContext)
        {
            throw new MinnowException($"{source}: impossible sizes (hidden {HiddenSize}, ffn {IntermediateSize}, layers {Layers}, heads {Heads}/{KvHeads} of {HeadDim}, " +
                $"vocab {VocabSize}, context {MaxPositions}); the limits are {MaxWidth} wide, {MaxLayers} layers, {MaxHeads} heads, {MaxVocabulary} tokens, {MaxContext} positions.");
        }

        if (!float.IsFinite(NormEps) || NormEps < 0 || !double.IsFinite(RopeTheta) || RopeTheta <= 0)
        {
            throw new MinnowException($"{source}: norm epsilon {NormEps} and RoPE theta {RopeTheta} must be finite and positive.");
        }

        if (RopeScaling is { } scaling && (!(scaling.Factor > 0) || !double.IsFinite(scaling.Factor) || !(scaling.LowFreqFactor > 0) || !(scaling.HighFreqFactor > scaling.LowFreqFactor) ||
            !double.IsFinite(scaling.HighFreqFactor) || scaling.OriginalMaxPositions <= 0))
        {
            throw new MinnowException($"{source}: rope_scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0.");
        }

        if (Heads % KvHeads != 0)
        {
            throw new MinnowException($"{source}: {Heads} attention heads are not a multiple of {KvHeads} key/value heads.");
        }

        if (RotaryDim < 0 || RotaryDim % 2 != 0 || RotaryDim > HeadDim)
        {
            throw new MinnowException($"{source}: rotary dimension {RotaryDim} must be even and at most the head size {HeadDim}.");
        }

        foreach (var (key, values) in new[] { ("minnow_layer_heads", LayerHeads), ("minnow_layer_kv_heads", LayerKvHeads), ("minnow_layer_intermediate", LayerIntermediate) })
        {
            if (values != null && (values.Length != Layers || values.Any(v => v <= 0)))
            {
                throw new MinnowException($"{source}: {key} must list a positive size for each of the {Layers} layers (got [{string.Join(", ", values)}]).");
            }
        }

        for (int l = 0; l < Layers && HasPerLayerShapes; l++)
        {
            if (HeadsOf(l) % KvHeadsOf(l) != 0)
            {
                throw new MinnowException($"{source}: layer {l} has {HeadsOf(l)} attention heads, not a multiple of its {KvHeadsOf(l)} key/value heads.");
            }
        }
    }

    private static Llama3RopeScaling? ReadRopeScaling(JsonElement c, string source)
    {
        if (!c.TryGetProperty("rope_scaling", out var s) || s.ValueKind != JsonValueKind.Object)
        {
            return null;
        }

        string type = Str(s, "rope_type") ?? Str(s, "type") ?? "";
        return type switch
        {
            "llama3" => new Llama3RopeScaling(
                OptDouble(s, "factor") ?? 8,
                OptDouble(s, "low_freq_factor") ?? 1,
                OptDouble(s, "high_freq_factor") ?? 4,
                OptInt(s, "original_max_position_embeddings") ?? 8192),
            "default" or "" => null,
            _ => throw new MinnowException($"{source}: rope_scaling type '{type}' is not supported (supported: llama3)."),
        };
    }

    private static Activation ReadActivation(JsonElement c, string source, string key, Activation fallback)
    {
        string? name = Str(c, key);
        return name switch
        {
            null => fallback,
            "silu" or "swish" => Activation.Silu,
            "gelu" => Activation.Gelu,
            "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => Activation.GeluTanh,
            _ => throw new MinnowException($"{source}: {key} '{name}' is not supported (supported: silu, gelu, gelu_new)."),
        };
    }

    /// <summary>An optional array of one integer per layer; a wrong length or a non-integer is an error.</summary>
    private static int[]? OptIntArray(JsonElement c, string source, string key, int layers)
    {
        if (!c.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() != layers ||
            v.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int n) || n <= 0))
        {
            throw new MinnowException($"{source}: '{key}' must be an array of {layers} positive integers, one per layer.");
        }

        return v.EnumerateArray().Select(e => e.GetInt32()).ToArray();
    }

    private static string? Str(JsonElement c, string key) =>
        c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static int Int(JsonElement c, string source, string key) =>
        OptInt(c, key) ?? throw new MinnowException($"{source}: missing or invalid integer '{key}'.");

    private static int? OptInt(JsonElement c, string key) =>
        c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : null;

    private static double? OptDouble(JsonElement c, string key) =>
        c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && double.IsFinite(d) ? d : null;

    private static bool? OptBool(JsonElement c, string key) =>
        c.TryGetProperty(key, out var v) && (v.ValueKind == JsonValueKind.True || v.ValueKind == JsonValueKind.False) ? v.GetBoolean() : null;
}
