using Minnow.Kernels;
using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>
/// The Llama family (Llama, TinyLlama, SmolLM, Mistral, Qwen2): pre-norm RMSNorm blocks, rotary attention with
/// grouped-query heads (Qwen2: q/k/v bias), SwiGLU MLP, tied or untied output head.
/// </summary>
public sealed unsafe class LlamaModel : TransformerModel
{
    private sealed class Layer
    {
        public required float* AttentionNorm, MlpNorm, QBias, KBias, VBias;
        public required Tensor Wq, Wk, Wv, Wo, Gate, Up, Down;

        /// <summary>[Wq, Wk, Wv] and [Gate, Up]: the projections that read the same input.</summary>
        public required Tensor[] Qkv, GateUp;
    }

    private readonly Tensor _embed, _head;
    private readonly float* _finalNorm;
    private readonly Layer[] _layers;

    public LlamaModel(ModelConfig config, WeightSet w, WorkerPool? pool = null) : base(config, w, pool)
    {
        var c = config;
        int d = c.HiddenSize;
        _embed = w.Matrix("model.embed_tokens.weight", c.VocabSize, d);
        _head = c.TieEmbeddings && !w.Has("lm_head.weight") ? _embed : w.Matrix("lm_head.weight", c.VocabSize, d);
        _finalNorm = w.Vector("model.norm.weight", d);
        _layers = new Layer[c.Layers];
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"model.layers.{i}.";
            int f = c.IntermediateOf(i), qDim = c.QDimOf(i), kvDim = c.KvDimOf(i);
            var layer = new Layer
            {
                AttentionNorm = w.Vector(p + "input_layernorm.weight", d),
                MlpNorm = w.Vector(p + "post_attention_layernorm.weight", d),
                Wq = w.Matrix(p + "self_attn.q_proj.weight", qDim, d),
                Wk = w.Matrix(p + "self_attn.k_proj.weight", kvDim, d),
                Wv = w.Matrix(p + "self_attn.v_proj.weight", kvDim, d),
                Wo = w.Matrix(p + "self_attn.o_proj.weight", d, qDim),
                QBias = c.QkvBias ? w.Vector(p + "self_attn.q_proj.bias", qDim) : null,
                KBias = c.QkvBias ? w.Vector(p + "self_attn.k_proj.bias", kvDim) : null,
                VBias = c.QkvBias ? w.Vector(p + "self_attn.v_proj.bias", kvDim) : null,
                Gate = w.Matrix(p + "mlp.gate_proj.weight", f, d),
                Up = w.Matrix(p + "mlp.up_proj.weight", f, d),
                Down = w.Matrix(p + "mlp.down_proj.weight", d, f),
                Qkv = [],
                GateUp = [],
            };
            layer.Qkv = [layer.Wq, layer.Wk, layer.Wv];
            layer.GateUp = [layer.Gate, layer.Up];
            _layers[i] = layer;
        }
    }

    protected override IEnumerable<Tensor> Matrices =>
        _layers.SelectMany(l => new[] { l.Wq, l.Wk, l.Wv, l.Wo, l.Gate, l.Up, l.Down }).Append(_head);

    protected override void ForwardLayers(ForwardBatch b, ForwardWorkspace w)
    {
        int n = b.RowCount, d = Config.HiddenSize;
        Embed(_embed, b, w.X);
        for (int l = 0; l < _layers.Length; l++)
        {
            var layer = _layers[l];

            // Attention: x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
            RmsNormRows(w.X, layer.AttentionNorm, w.Xb, n);
            LinearFused(b, layer.Qkv, w.Xb, [(nint)w.Q, (nint)w.K, (nint)w.V], [(nint)layer.QBias, (nint)layer.KBias, (nint)layer.VBias]);
            ApplyRope(b, w, l, w.Q, w.K);
            Attend(b, l, w.Q, w.K, w.V, w.AttnOut);
            Linear(b, layer.Wo, w.AttnOut, w.Xb2);
            AddRows(w.X, w.Xb2, n, d);

            // MLP: x += down(silu(gate·norm(x)) * up·norm(x))
            RmsNormRows(w.X, layer.MlpNorm, w.Xb, n);
            LinearFused(b, layer.GateUp, w.Xb, [(nint)w.Hb, (nint)w.Hb2], [0, 0]);
            SwiGlu.Compute(w.Hb, w.Hb2, n * Config.IntermediateOf(l));
            Linear(b, layer.Down, w.Hb, w.Xb2);
            AddRows(w.X, w.Xb2, n, d);
        }

        RmsNormRows(w.X, _finalNorm, w.Xb, n);
        Logits(b, w, _head, w.Xb, w.Xb2);
    }
}
