using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>
/// GPT-NeoX (Pythia): LayerNorm with bias, a fused query_key_value projection laid out per head, partial rotary
/// embeddings, exact GELU, and (usually) the parallel residual x + attn(ln1(x)) + mlp(ln2(x)).
/// </summary>
public sealed unsafe class GptNeoXModel : TransformerModel
{
    private sealed class Layer
    {
        public required float* Ln1W, Ln1B, Ln2W, Ln2B, QkvBias, DenseBias, UpBias, DownBias;
        public required Tensor Qkv, Dense, Up, Down;
    }

    private readonly Tensor _embed, _head;
    private readonly float* _finalW, _finalB;
    private readonly Layer[] _layers;

    public GptNeoXModel(ModelConfig config, WeightSet w, WorkerPool? pool = null) : base(config, w, pool)
    {
        var c = config;
        int d = c.HiddenSize;
        _embed = w.Matrix("gpt_neox.embed_in.weight", c.VocabSize, d);
        _head = c.TieEmbeddings && !w.Has("embed_out.weight") ? _embed : w.Matrix("embed_out.weight", c.VocabSize, d);
        _finalW = w.Vector("gpt_neox.final_layer_norm.weight", d);
        _finalB = w.Vector("gpt_neox.final_layer_norm.bias", d);
        _layers = new Layer[c.Layers];
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"gpt_neox.layers.{i}.";
            int f = c.IntermediateOf(i), qDim = c.QDimOf(i);
            _layers[i] = new Layer
            {
                Ln1W = w.Vector(p + "input_layernorm.weight", d),
                Ln1B = w.Vector(p + "input_layernorm.bias", d),
                Ln2W = w.Vector(p + "post_attention_layernorm.weight", d),
                Ln2B = w.Vector(p + "post_attention_layernorm.bias", d),
                Qkv = w.Matrix(p + "attention.query_key_value.weight", 3 * qDim, d),
                QkvBias = w.OptionalVector(p + "attention.query_key_value.bias", 3 * qDim),
                Dense = w.Matrix(p + "attention.dense.weight", d, qDim),
                DenseBias = w.OptionalVector(p + "attention.dense.bias", d),
                Up = w.Matrix(p + "mlp.dense_h_to_4h.weight", f, d),
                UpBias = w.OptionalVector(p + "mlp.dense_h_to_4h.bias", f),
                Down = w.Matrix(p + "mlp.dense_4h_to_h.weight", d, f),
                DownBias = w.OptionalVector(p + "mlp.dense_4h_to_h.bias", d),
            };
        }
    }

    protected override IEnumerable<Tensor> Matrices =>
        _layers.SelectMany(l => new[] { l.Qkv, l.Dense, l.Up, l.Down }).Append(_head);

    protected override void ForwardLayers(ForwardBatch b, ForwardWorkspace w)
    {
        int n = b.RowCount, d = Config.HiddenSize;
        Embed(_embed, b, w.X);
        for (int l = 0; l < _layers.Length; l++)
        {
            var layer = _layers[l];

            // Attention branch on ln1(x).
            LayerNormRows(w.X, layer.Ln1W, layer.Ln1B, w.Xb, n);
            Linear(b, layer.Qkv, w.Xb, w.Qkv, layer.QkvBias);
            if (Config.FusedQkvPerHead)
            {
                SplitQkvPerHead(w, l, w.Qkv, n);
            }
            else
            {
                SplitQkv(w, l, w.Qkv, n);
            }

            ApplyRope(b, w, l, w.Q, w.K);
            Attend(b, l, w.Q, w.K, w.V, w.AttnOut);
            Linear(b, layer.Dense, w.AttnOut, w.Xb2, layer.DenseBias);

            // MLP branch: on ln2(x) in parallel, or on ln2(x + attn) sequentially.
            if (Config.ParallelResidual)
            {
                LayerNormRows(w.X, layer.Ln2W, layer.Ln2B, w.Xb, n);
                AddRows(w.X, w.Xb2, n, d);
            }
            else
            {
                AddRows(w.X, w.Xb2, n, d);
                LayerNormRows(w.X, layer.Ln2W, layer.Ln2B, w.Xb, n);
            }

            Linear(b, layer.Up, w.Xb, w.Hb, layer.UpBias);
            Activate(w.Hb, n * Config.IntermediateOf(l));
            Linear(b, layer.Down, w.Hb, w.Xb2, layer.DownBias);
            AddRows(w.X, w.Xb2, n, d);
        }

        LayerNormRows(w.X, _finalW, _finalB, w.Xb, n);
        Logits(b, w, _head, w.Xb, w.Xb2);
    }
}
