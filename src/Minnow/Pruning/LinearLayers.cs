using Minnow.Models;

namespace Minnow.Pruning;

/// <summary>What a linear layer does inside its block.</summary>
public enum LinearKind
{
    Query,
    Key,
    Value,
    /// <summary>A fused query/key/value projection (GPT-NeoX, GPT-2).</summary>
    FusedQkv,
    AttentionOutput,
    Gate,
    Up,
    Down,
}

/// <summary>
/// One prunable linear layer: the weight's Hugging Face name, its block, its role, and whether it is stored
/// transposed as [in, out] (GPT-2's Conv1D) rather than [out, in].
/// </summary>
public sealed record LinearLayer(string Name, int Layer, LinearKind Kind, bool StoredTransposed)
{
    public string? BiasName => Name.EndsWith(".weight", StringComparison.Ordinal) ? Name[..^".weight".Length] + ".bias" : null;
}

/// <summary>The linear layers pruning works on: attention and MLP projections (never embeddings, norms or the head).</summary>
public static class LinearLayers
{
    public static IReadOnlyList<LinearLayer> Of(ModelConfig c, Func<string, bool> has)
    {
        var result = new List<LinearLayer>();
        for (int l = 0; l < c.Layers; l++)
        {
            switch (c.Architecture)
            {
                case Architecture.Llama:
                    {
                        string p = $"model.layers.{l}.";
                        result.Add(new(p + "self_attn.q_proj.weight", l, LinearKind.Query, false));
                        result.Add(new(p + "self_attn.k_proj.weight", l, LinearKind.Key, false));
                        result.Add(new(p + "self_attn.v_proj.weight", l, LinearKind.Value, false));
                        result.Add(new(p + "self_attn.o_proj.weight", l, LinearKind.AttentionOutput, false));
                        result.Add(new(p + "mlp.gate_proj.weight", l, LinearKind.Gate, false));
                        result.Add(new(p + "mlp.up_proj.weight", l, LinearKind.Up, false));
                        result.Add(new(p + "mlp.down_proj.weight", l, LinearKind.Down, false));
                        break;
                    }

                case Architecture.GptNeoX:
                    {
                        string p = $"gpt_neox.layers.{l}.";
                        result.Add(new(p + "attention.query_key_value.weight", l, LinearKind.FusedQkv, false));
                        result.Add(new(p + "attention.dense.weight", l, LinearKind.AttentionOutput, false));
                        result.Add(new(p + "mlp.dense_h_to_4h.weight", l, LinearKind.Up, false));
                        result.Add(new(p + "mlp.dense_4h_to_h.weight", l, LinearKind.Down, false));
                        break;
                    }

                case Architecture.Gpt2:
                    {
                        string p = (has("transformer.wte.weight") ? "transformer." : "") + $"h.{l}.";
                        bool t = c.Conv1DLayout;
                        result.Add(new(p + "attn.c_attn.weight", l, LinearKind.FusedQkv, t));
                        result.Add(new(p + "attn.c_proj.weight", l, LinearKind.AttentionOutput, t));
                        result.Add(new(p + "mlp.c_fc.weight", l, LinearKind.Up, t));
                        result.Add(new(p + "mlp.c_proj.weight", l, LinearKind.Down, t));
                        break;
                    }

                default:
                    throw new MinnowException($"pruning does not support architecture {c.Architecture}.");
            }
        }

        foreach (var layer in result)
        {
            if (!has(layer.Name))
            {
                throw new MinnowException($"missing tensor '{layer.Name}'.");
            }
        }

        return result;
    }

    /// <summary>
    /// The token embedding and, when the model has its own, the output head (Hugging Face names): what
    /// <see cref="PruningOptions.IncludeEmbeddings"/> prunes. A tied head is the embedding, pruned once.
    /// </summary>
    public static IReadOnlyList<string> Embeddings(ModelConfig c, Func<string, bool> has)
    {
        string[] candidates = c.Architecture switch
        {
            Architecture.Llama => ["model.embed_tokens.weight", "lm_head.weight"],
            Architecture.GptNeoX => ["gpt_neox.embed_in.weight", "embed_out.weight"],
            Architecture.Gpt2 => [has("transformer.wte.weight") ? "transformer.wte.weight" : "wte.weight", "lm_head.weight"],
            _ => throw new MinnowException($"pruning does not support architecture {c.Architecture}."),
        };
        return candidates.Where(has).ToList();
    }
}
