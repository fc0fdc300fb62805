using Minnow.Models;

namespace Minnow.Loading;

/// <summary>
/// llama.cpp's tensor and architecture names, mapped to and from the Hugging Face names the architectures use.
/// </summary>
public static class GgufNames
{
    /// <summary>GGUF <c>general.architecture</c> for a model.</summary>
    public static string ArchitectureOf(ModelConfig config) => config.Architecture switch
    {
        Architecture.Llama => config.ModelType == "qwen2" ? "qwen2" : "llama",
        Architecture.GptNeoX => "gptneox",
        Architecture.Gpt2 => "gpt2",
        _ => throw new MinnowException($"architecture {config.Architecture} has no GGUF name."),
    };

    /// <summary>The Hugging Face name of a GGUF tensor, or null when the architecture does not use it.</summary>
    public static string? ToHuggingFace(string ggufArchitecture, string name)
    {
        var (global, perLayer) = Tables(ggufArchitecture);
        foreach (var (gguf, hf) in global)
        {
            if (name == gguf)
            {
                return hf;
            }
        }

        if (name.StartsWith("blk.", StringComparison.Ordinal))
        {
            int dot = name.IndexOf('.', 4);
            if (dot > 4 && int.TryParse(name.AsSpan(4, dot - 4), out int layer))
            {
                string rest = name[(dot + 1)..];
                foreach (var (gguf, hf) in perLayer)
                {
                    if (rest == gguf)
                    {
                        return string.Format(System.Globalization.CultureInfo.InvariantCulture, hf, layer);
                    }
                }
            }
        }

        return null;
    }

    /// <summary>The GGUF name of a Hugging Face tensor, or null when it has none.</summary>
    public static string? FromHuggingFace(string ggufArchitecture, string name)
    {
        var (global, perLayer) = Tables(ggufArchitecture);
        foreach (var (gguf, hf) in global)
        {
            if (name == hf)
            {
                return gguf;
            }
        }

        foreach (var (gguf, hf) in perLayer)
        {
            int brace = hf.IndexOf("{0}", StringComparison.Ordinal);
            string prefix = hf[..brace], suffix = hf[(brace + 3)..];
            if (name.StartsWith(prefix, StringComparison.Ordinal) && name.EndsWith(suffix, StringComparison.Ordinal) &&
                int.TryParse(name.AsSpan(prefix.Length, name.Length - prefix.Length - suffix.Length), out int layer))
            {
                return $"blk.{layer}.{gguf}";
            }
        }

        return null;
    }

    private static ((string Gguf, string Hf)[] Global, (string Gguf, string Hf)[] PerLayer) Tables(string arch) => arch switch
    {
        "llama" or "qwen2" or "mistral" or "deci" => (LlamaGlobal, LlamaLayer),
        "gptneox" => (NeoXGlobal, NeoXLayer),
        "gpt2" => (Gpt2Global, Gpt2Layer),
        _ => throw new MinnowException($"GGUF architecture '{arch}' is not supported; supported: llama, qwen2, deci, gptneox, gpt2."),
    };

    private static readonly (string, string)[] LlamaGlobal =
    [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];

    private static readonly (string, string)[] LlamaLayer =
    [
        ("attn_norm.weight", "model.layers.{0}.input_layernorm.weight"),
        ("attn_q.weight", "model.layers.{0}.self_attn.q_proj.weight"),
        ("attn_k.weight", "model.layers.{0}.self_attn.k_proj.weight"),
        ("attn_v.weight", "model.layers.{0}.self_attn.v_proj.weight"),
        ("attn_q.bias", "model.layers.{0}.self_attn.q_proj.bias"),
        ("attn_k.bias", "model.layers.{0}.self_attn.k_proj.bias"),
        ("attn_v.bias", "model.layers.{0}.self_attn.v_proj.bias"),
        ("attn_output.weight", "model.layers.{0}.self_attn.o_proj.weight"),
        ("ffn_norm.weight", "model.layers.{0}.post_attention_layernorm.weight"),
        ("ffn_gate.weight", "model.layers.{0}.mlp.gate_proj.weight"),
        ("ffn_up.weight", "model.layers.{0}.mlp.up_proj.weight"),
        ("ffn_down.weight", "model.layers.{0}.mlp.down_proj.weight"),
    ];

    private static readonly (string, string)[] NeoXGlobal =
    [
        ("token_embd.weight", "gpt_neox.embed_in.weight"),
        ("output_norm.weight", "gpt_neox.final_layer_norm.weight"),
        ("output_norm.bias", "gpt_neox.final_layer_norm.bias"),
        ("output.weight", "embed_out.weight"),
    ];

    private static readonly (string, string)[] NeoXLayer =
    [
        ("attn_norm.weight", "gpt_neox.layers.{0}.input_layernorm.weight"),
        ("attn_norm.bias", "gpt_neox.layers.{0}.input_layernorm.bias"),
        ("attn_qkv.weight", "gpt_neox.layers.{0}.attention.query_key_value.weight"),
        ("attn_qkv.bias", "gpt_neox.layers.{0}.attention.query_key_value.bias"),
        ("attn_output.weight", "gpt_neox.layers.{0}.attention.dense.weight"),
        ("attn_output.bias", "gpt_neox.layers.{0}.attention.dense.bias"),
        ("ffn_norm.weight", "gpt_neox.layers.{0}.post_attention_layernorm.weight"),
        ("ffn_norm.bias", "gpt_neox.layers.{0}.post_attention_layernorm.bias"),
        ("ffn_up.weight", "gpt_neox.layers.{0}.mlp.dense_h_to_4h.weight"),
        ("ffn_up.bias", "gpt_neox.layers.{0}.mlp.dense_h_to_4h.bias"),
        ("ffn_down.weight", "gpt_neox.layers.{0}.mlp.dense_4h_to_h.weight"),
        ("ffn_down.bias", "gpt_neox.layers.{0}.mlp.dense_4h_to_h.bias"),
    ];

    private static readonly (string, string)[] Gpt2Global =
    [
        ("token_embd.weight", "wte.weight"),
        ("position_embd.weight", "wpe.weight"),
        ("output_norm.weight", "ln_f.weight"),
        ("output_norm.bias", "ln_f.bias"),
        ("output.weight", "lm_head.weight"),
    ];

    private static readonly (string, string)[] Gpt2Layer =
    [
        ("attn_norm.weight", "h.{0}.ln_1.weight"),
        ("attn_norm.bias", "h.{0}.ln_1.bias"),
        ("attn_qkv.weight", "h.{0}.attn.c_attn.weight"),
        ("attn_qkv.bias", "h.{0}.attn.c_attn.bias"),
        ("attn_output.weight", "h.{0}.attn.c_proj.weight"),
        ("attn_output.bias", "h.{0}.attn.c_proj.bias"),
        ("ffn_norm.weight", "h.{0}.ln_2.weight"),
        ("ffn_norm.bias", "h.{0}.ln_2.bias"),
        ("ffn_up.weight", "h.{0}.mlp.c_fc.weight"),
        ("ffn_up.bias", "h.{0}.mlp.c_fc.bias"),
        ("ffn_down.weight", "h.{0}.mlp.c_proj.weight"),
        ("ffn_down.bias", "h.{0}.mlp.c_proj.bias"),
    ];
}
