using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>
/// GPT-2: learned position embeddings, pre-norm LayerNorm blocks, a fused c_attn projection [q | k | v],
/// tanh GELU, tied output head. HF stores its Conv1D weights as [in, out]; they are transposed once at load.
/// Tensor names may carry the "transformer." prefix or not.
/// </summary>
public sealed unsafe class Gpt2Model : TransformerModel
{
    private sealed class Layer
    {
        public required float* Ln1W, Ln1B, Ln2W, Ln2B, AttnBias, ProjBias, FcBias, OutBias;
        public required Tensor Attn, Proj, Fc, Out;
    }

    private readonly Tensor _embed, _positions, _head;
    private readonly float* _finalW, _finalB;
    private readonly Layer[] _layers;

    public Gpt2Model(ModelConfig config, WeightSet w, WorkerPool? pool = null) : base(config, w, pool)
    {
        var c = config;
        int d = c.HiddenSize;
        string prefix = w.Has("transformer.wte.weight") ? "transformer." : "";
        _embed = w.Matrix(prefix + "wte.weight", c.VocabSize, d);
        _positions = w.Matrix(prefix + "wpe.weight", c.MaxPositions, d);
        _head = w.Has("lm_head.weight") ? w.Matrix("lm_head.weight", c.VocabSize, d) : _embed;
        _finalW = w.Vector(prefix + "ln_f.weight", d);
        _finalB = w.Vector(prefix + "ln_f.bias", d);
        _layers = new Layer[c.Layers];
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"{prefix}h.{i}.";
            int f = c.IntermediateOf(i), qDim = c.QDimOf(i);
            _layers[i] = new Layer
            {
                Ln1W = w.Vector(p + "ln_1.weight", d),
                Ln1B = w.Vector(p + "ln_1.bias", d),
                Ln2W = w.Vector(p + "ln_2.weight", d),
                Ln2B = w.Vector(p + "ln_2.bias", d),
                Attn = Conv1D(w, p + "attn.c_attn.weight", 3 * qDim, d),
                AttnBias = w.Vector(p + "attn.c_attn.bias", 3 * qDim),
                Proj = Conv1D(w, p + "attn.c_proj.weight", d, qDim),
                ProjBias = w.Vector(p + "attn.c_proj.bias", d),
                Fc = Conv1D(w, p + "mlp.c_fc.weight", f, d),
                FcBias = w.Vector(p + "mlp.c_fc.bias", f),
                Out = Conv1D(w, p + "mlp.c_proj.weight", d, f),
                OutBias = w.Vector(p + "mlp.c_proj.bias", d),
            };
        }
    }

    private Tensor Conv1D(WeightSet w, string name, int rows, int cols) =>
        Config.Conv1DLayout ? w.TransposedMatrix(name, rows, cols) : w.Matrix(name, rows, cols);

    protected override IEnumerable<Tensor> Matrices =>
        _layers.SelectMany(l => new[] { l.Attn, l.Proj, l.Fc, l.Out }).Append(_head);

    protected override void ForwardLayers(ForwardBatch b, ForwardWorkspace w)
    {
        int n = b.RowCount, d = Config.HiddenSize;
        Embed(_embed, b, w.X);
        AddPositions(_positions, b, w.X, w.Xb);
        for (int l = 0; l < _layers.Length; l++)
        {
            var layer = _layers[l];

            // Attention: x += proj(attention(split(c_attn(ln1(x)))))
            LayerNormRows(w.X, layer.Ln1W, layer.Ln1B, w.Xb, n);
            Linear(b, layer.Attn, w.Xb, w.Qkv, layer.AttnBias);
            SplitQkv(w, l, w.Qkv, n);
            Attend(b, l, w.Q, w.K, w.V, w.AttnOut);
            Linear(b, layer.Proj, w.AttnOut, w.Xb2, layer.ProjBias);
            AddRows(w.X, w.Xb2, n, d);

            // MLP: x += c_proj(gelu(c_fc(ln2(x))))
            LayerNormRows(w.X, layer.Ln2W, layer.Ln2B, w.Xb, n);
            Linear(b, layer.Fc, w.Xb, w.Hb, layer.FcBias);
            Activate(w.Hb, n * Config.IntermediateOf(l));
            Linear(b, layer.Out, w.Hb, w.Xb2, layer.OutBias);
            AddRows(w.X, w.Xb2, n, d);
        }

        LayerNormRows(w.X, _finalW, _finalB, w.Xb, n);
        Logits(b, w, _head, w.Xb, w.Xb2);
    }
}
