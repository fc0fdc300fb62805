using Minnow.Models;

namespace Minnow.Quantization;

/// <summary>
/// The activations one or more linear layers read: q/k/v read the same normalised hidden state, and so do
/// gate/up. <see cref="NormWeight"/> names the norm that produces it when the layers read a norm's output directly
/// (then a per-channel scale can be folded into the norm exactly), else null.
/// </summary>
public sealed record InputGroup(string Key, int Width, IReadOnlyList<string> Members, string? NormWeight, string? NormBias);

/// <summary>A linear layer a quantizer may rewrite: its Hugging Face weight name, shape [rows = outputs, columns = inputs], and input group.</summary>
public sealed record LinearLayer(string Name, int Rows, int Columns, string Group, bool StoredTransposed);

/// <summary>
/// The linear layers of a model (attention and MLP projections, not the embedding or output head), grouped by the
/// input they read, for each supported architecture.
/// </summary>
public sealed class LayerPlan
{
    private readonly Dictionary<string, LinearLayer> _byName = new(StringComparer.Ordinal);
    private readonly Dictionary<string, InputGroup> _groups = new(StringComparer.Ordinal);
    private readonly List<LinearLayer> _layers = [];

    private LayerPlan()
    {
    }

    public IReadOnlyList<LinearLayer> Layers => _layers;

    public IReadOnlyDictionary<string, InputGroup> Groups => _groups;

    public LinearLayer? Find(string weightName) => _byName.GetValueOrDefault(weightName);

    public static LayerPlan For(ModelConfig c, Func<string, bool> has)
    {
        var plan = new LayerPlan();
        int d = c.HiddenSize;
        for (int i = 0; i < c.Layers; i++)
        {
            // Structured pruning leaves each layer its own head count and MLP width.
            int f = c.IntermediateOf(i), qDim = c.QDimOf(i), kvDim = c.KvDimOf(i);
            switch (c.Architecture)
            {
                case Architecture.Llama:
                    {
                        string p = $"model.layers.{i}.";
                        plan.Group(p + "input_layernorm.weight", d, p + "input_layernorm.weight", null,
                            (p + "self_attn.q_proj.weight", qDim), (p + "self_attn.k_proj.weight", kvDim), (p + "self_attn.v_proj.weight", kvDim));
                        plan.Group(p + "self_attn.o_proj.weight", qDim, null, null, (p + "self_attn.o_proj.weight", d));
                        plan.Group(p + "post_attention_layernorm.weight", d, p + "post_attention_layernorm.weight", null,
                            (p + "mlp.gate_proj.weight", f), (p + "mlp.up_proj.weight", f));
                        plan.Group(p + "mlp.down_proj.weight", f, null, null, (p + "mlp.down_proj.weight", d));
                        break;
                    }

                case Architecture.GptNeoX:
                    {
                        string p = $"gpt_neox.layers.{i}.";
                        plan.Group(p + "input_layernorm.weight", d, p + "input_layernorm.weight", p + "input_layernorm.bias",
                            (p + "attention.query_key_value.weight", 3 * qDim));
                        plan.Group(p + "attention.dense.weight", qDim, null, null, (p + "attention.dense.weight", d));
                        plan.Group(p + "post_attention_layernorm.weight", d, p + "post_attention_layernorm.weight", p + "post_attention_layernorm.bias",
                            (p + "mlp.dense_h_to_4h.weight", f));
                        plan.Group(p + "mlp.dense_4h_to_h.weight", f, null, null, (p + "mlp.dense_4h_to_h.weight", d));
                        break;
                    }

                case Architecture.Gpt2:
                    {
                        string p = (has("transformer.wte.weight") ? "transformer." : "") + $"h.{i}.";
                        bool t = c.Conv1DLayout;
                        plan.Group(p + "ln_1.weight", d, p + "ln_1.weight", p + "ln_1.bias", t, (p + "attn.c_attn.weight", 3 * qDim));
                        plan.Group(p + "attn.c_proj.weight", qDim, null, null, t, (p + "attn.c_proj.weight", d));
                        plan.Group(p + "ln_2.weight", d, p + "ln_2.weight", p + "ln_2.bias", t, (p + "mlp.c_fc.weight", f));
                        plan.Group(p + "mlp.c_proj.weight", f, null, null, t, (p + "mlp.c_proj.weight", d));
                        break;
                    }

                default:
                    throw new MinnowException($"quantization does not support architecture {c.Architecture}.");
            }
        }

        return plan;
    }

    private void Group(string key, int width, string? norm, string? bias, params (string Name, int Rows)[] members) =>
        Group(key, width, norm, bias, false, members);

    private void Group(string key, int width, string? norm, string? bias, bool transposed, params (string Name, int Rows)[] members)
    {
        _groups[key] = new InputGroup(key, width, members.Select(m => m.Name).ToArray(), norm, bias);
        foreach (var (name, rows) in members)
        {
            var layer = new LinearLayer(name, rows, width, key, transposed);
            _layers.Add(layer);
            _byName[name] = layer;
        }
    }
}
