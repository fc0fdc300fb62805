using System.Text.Json;
using Minnow.Formats.Safetensors;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// A trainable Llama-architecture model (RMSNorm, rotate-half RoPE with optional llama3 scaling, causal
/// grouped-query attention with optional q/k/v bias, SwiGLU MLP, tied or untied head) in float32, with an explicit
/// forward pass that keeps its activations and a backward pass that adds the gradient of the mean next-token
/// cross-entropy to <see cref="ParameterStore.Grads"/>. Activation buffers are allocated once for the largest
/// batch seen and reused. Every op is deterministic, so a step gives bit-identical results on any thread count.
/// </summary>
public sealed unsafe class LlamaTrainingModel : ITrainingModel
{
    private sealed class LayerParams
    {
        public required Parameter AttnNorm, MlpNorm, Wq, Wk, Wv, Wo, Gate, Up, Down;
        public Parameter? Bq, Bk, Bv;
    }

    private sealed class LayerActs
    {
        public float* Xn1, Q, K, V, Probs, Attn, Xn2, H1, H2, Act;
    }

    private readonly WorkerPool _pool;
    private readonly Parameter _embed, _head, _finalNorm;
    private readonly LayerParams[] _layers;
    private readonly RopeTable _rope;
    private readonly ActivationArena _arena = new();
    private LayerActs[] _acts = [];
    private float*[] _resid = [];
    private float* _xfNorm, _logits, _teacherLogits, _tmp, _dX, _dXn, _dQ, _dK, _dV, _dAttn, _dH1, _dH2, _dAct, _rstd, _rowLoss;
    private float* _cos, _sin, _negSin;
    private int* _inputs, _targets;
    private int _capacityBatch, _capacitySeq;
    private LoraLayers? _lora;
    private FakeQuantizer? _fakeQuant;
    private DType? _fakeScheme;
    private IDistillationTeacher? _teacher;

    public LlamaTrainingModel(ModelConfig config, WorkerPool? pool = null)
    {
        if (config.Architecture != Architecture.Llama || config.Activation != Activation.Silu ||
            config.RopeStyle != Kernels.RopeStyle.RotateHalf || config.RotaryDim != config.HeadDim)
        {
            throw new MinnowException($"training supports the Llama architecture (SiLU, full rotate-half RoPE); got {config.ModelType}.");
        }

        config.Validate("training config");
        Config = config;
        _pool = pool ?? WorkerPool.Shared;
        _rope = new RopeTable(config);
        var c = config;
        int d = c.HiddenSize;
        var specs = new List<(string, long[], bool)> { ("model.embed_tokens.weight", [c.VocabSize, d], true) };
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"model.layers.{i}.";
            int qd = c.QDimOf(i), kvd = c.KvDimOf(i), f = c.IntermediateOf(i);
            specs.Add((p + "input_layernorm.weight", [d], false));
            specs.Add((p + "self_attn.q_proj.weight", [qd, d], true));
            specs.Add((p + "self_attn.k_proj.weight", [kvd, d], true));
            specs.Add((p + "self_attn.v_proj.weight", [kvd, d], true));
            if (c.QkvBias)
            {
                specs.Add((p + "self_attn.q_proj.bias", [qd], false));
                specs.Add((p + "self_attn.k_proj.bias", [kvd], false));
                specs.Add((p + "self_attn.v_proj.bias", [kvd], false));
            }

            specs.Add((p + "self_attn.o_proj.weight", [d, qd], true));
            specs.Add((p + "post_attention_layernorm.weight", [d], false));
            specs.Add((p + "mlp.gate_proj.weight", [f, d], true));
            specs.Add((p + "mlp.up_proj.weight", [f, d], true));
            specs.Add((p + "mlp.down_proj.weight", [d, f], true));
        }

        specs.Add(("model.norm.weight", [d], false));
        if (!c.TieEmbeddings)
        {
            specs.Add(("lm_head.weight", [c.VocabSize, d], true));
        }

        Parameters = new ParameterStore(specs);
        var ps = Parameters;
        _embed = ps["model.embed_tokens.weight"];
        _head = c.TieEmbeddings ? _embed : ps["lm_head.weight"];
        _finalNorm = ps["model.norm.weight"];
        _layers = new LayerParams[c.Layers];
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"model.layers.{i}.";
            _layers[i] = new LayerParams
            {
                AttnNorm = ps[p + "input_layernorm.weight"],
                MlpNorm = ps[p + "post_attention_layernorm.weight"],
                Wq = ps[p + "self_attn.q_proj.weight"],
                Wk = ps[p + "self_attn.k_proj.weight"],
                Wv = ps[p + "self_attn.v_proj.weight"],
                Wo = ps[p + "self_attn.o_proj.weight"],
                Bq = c.QkvBias ? ps[p + "self_attn.q_proj.bias"] : null,
                Bk = c.QkvBias ? ps[p + "self_attn.k_proj.bias"] : null,
                Bv = c.QkvBias ? ps[p + "self_attn.v_proj.bias"] : null,
                Gate = ps[p + "mlp.gate_proj.weight"],
                Up = ps[p + "mlp.up_proj.weight"],
                Down = ps[p + "mlp.down_proj.weight"],
            };
        }
    }

    public ModelConfig Config { get; }

    public ParameterStore Parameters { get; }

    /// <summary>The attached LoRA adapters, or null (see <see cref="AttachLora"/>).</summary>
    public LoraLayers? Lora => _lora;

    /// <summary>
    /// Attaches LoRA adapters: the forward pass adds them to their linear layers, and the backward pass computes
    /// gradients for them only (the base weights are frozen: no gradients are computed for them).
    /// </summary>
    public void AttachLora(LoraLayers lora)
    {
        var m = lora.Model;
        if (m.Layers != Config.Layers || m.HiddenSize != Config.HiddenSize ||
            Enumerable.Range(0, m.Layers).Any(l => m.QDimOf(l) != Config.QDimOf(l) || m.KvDimOf(l) != Config.KvDimOf(l) || m.IntermediateOf(l) != Config.IntermediateOf(l)))
        {
            throw new MinnowException("the LoRA adapters were made for a model of another shape.");
        }

        _lora = lora;
    }

    /// <summary>
    /// Knowledge distillation: while a teacher is set, <see cref="ForwardBackward"/> trains towards the teacher's
    /// next-token distributions instead of the targets (loss KL(p_teacher ‖ p_model), <see cref="DistillationLossOp"/>;
    /// targets still say which positions count). <see cref="Evaluate"/> still scores the targets. Null turns it off.
    /// </summary>
    public IDistillationTeacher? Teacher
    {
        get => _teacher;
        set
        {
            if (value != null && _teacher == null)
            {
                _capacityBatch = _capacitySeq = 0; // reallocate with room for the teacher's logits
            }

            _teacher = value;
        }
    }

    /// <summary>The fake quantizer of quantization-aware training, or null (see <see cref="EnableFakeQuantization"/>).</summary>
    public FakeQuantizer? FakeQuantization => _fakeQuant;

    /// <summary>
    /// Quantization-aware training: from now on every forward pass of the linear layers (q, k, v, o, gate, up,
    /// down) uses Q(W) = dequantize(quantize_rtn(W)) in <paramref name="scheme"/>, recomputed from the current float
    /// weights at each pass, and the backward pass uses Q(W) for the input gradient while the weight gradient goes
    /// to the float W unchanged (the straight-through estimator). Each matrix gets the format round-to-nearest
    /// quantization will store it in (<see cref="Quantization.ModelQuantizer"/>): a linear layer whose rows are not
    /// whole blocks of the scheme is Q8_0 when they are whole blocks of 32 (else it stays float32), and the embedding
    /// and output head are Q8_0. With <paramref name="activations"/>, the inputs of those matrices are fake-quantized
    /// too, 8 bits per block of 32, as the integer kernels quantize them at run time. Norms stay in float32. Null
    /// turns it off.
    /// </summary>
    public void EnableFakeQuantization(DType? scheme, bool activations = false)
    {
        if (scheme is not null && scheme == _fakeScheme && _fakeQuant?.QuantizesInputs == activations)
        {
            return; // already on, as asked
        }

        _fakeScheme = scheme;
        _fakeQuant?.Dispose();
        _fakeQuant = null;
        if (scheme is DType type)
        {
            static DType? Format(Parameter p, DType scheme) =>
                p.Shape[1] % scheme.BlockSize() == 0 ? scheme : p.Shape[1] % DType.Q8_0.BlockSize() == 0 ? DType.Q8_0 : null;
            var matrices = new List<(Parameter, DType)>();
            foreach (var p in _layers.SelectMany(w => new[] { w.Wq, w.Wk, w.Wv, w.Wo, w.Gate, w.Up, w.Down }).Append(_embed).Append(_head).Distinct())
            {
                if ((p == _embed || p == _head ? Format(p, DType.Q8_0) : Format(p, type)) is DType format)
                {
                    matrices.Add((p, format));
                }
            }

            _fakeQuant = new FakeQuantizer(Parameters, matrices, activations);
        }
    }

    /// <summary>
    /// A config for a new Llama model: head size hidden/heads, rms_norm_eps 1e-5, RoPE theta 10000, tied embeddings.
    /// </summary>
    public static ModelConfig CreateConfig(int vocab, int hidden, int layers, int heads, int kvHeads, int ffn, int maxPositions,
        bool tieEmbeddings = true, int? bosTokenId = null, int? eosTokenId = null)
    {
        if (heads <= 0 || hidden % heads != 0)
        {
            throw new MinnowException($"hidden size {hidden} is not a multiple of {heads} heads.");
        }

        int headDim = hidden / heads;
        var config = new ModelConfig
        {
            Architecture = Architecture.Llama,
            ModelType = "llama",
            HiddenSize = hidden,
            IntermediateSize = ffn,
            Layers = layers,
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            RotaryDim = headDim,
            VocabSize = vocab,
            MaxPositions = maxPositions,
            NormEps = 1e-5f,
            RopeTheta = 10000,
            TieEmbeddings = tieEmbeddings,
            BosTokenId = bosTokenId,
            EosTokenId = eosTokenId,
        };
        config.Validate("model shape");
        if (headDim % 2 != 0)
        {
            throw new MinnowException($"head size {headDim} (hidden/heads) must be even for RoPE.");
        }

        return config;
    }

    /// <summary>
    /// A freshly initialised model: matrices ~ N(0, 0.02²) (the residual projections o_proj and down_proj scaled by
    /// 1/√(2·layers)), norms 1, biases 0. Same seed, same weights, on any machine.
    /// </summary>
    public static LlamaTrainingModel CreateRandom(ModelConfig config, long seed, WorkerPool? pool = null)
    {
        var model = new LlamaTrainingModel(config, pool);
        var rng = SplitMix64.For(seed, 0x1417);
        double residualStd = 0.02 / Math.Sqrt(2.0 * config.Layers);
        foreach (var p in model.Parameters.All)
        {
            var values = model.Parameters.ValueSpan(p);
            if (p.Shape.Length == 1)
            {
                values.Fill(p.Name.EndsWith(".bias", StringComparison.Ordinal) ? 0f : 1f);
                continue;
            }

            double std = p.Name.Contains("o_proj", StringComparison.Ordinal) || p.Name.Contains("down_proj", StringComparison.Ordinal) ? residualStd : 0.02;
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = (float)(rng.NextGaussian() * std);
            }
        }

        return model;
    }

    /// <summary>A trainable copy of loaded weights (any stored type is converted to float32).</summary>
    public static LlamaTrainingModel FromWeights(ModelConfig config, WeightSet weights, WorkerPool? pool = null)
    {
        var model = new LlamaTrainingModel(config, pool);
        foreach (var p in model.Parameters.All)
        {
            var t = weights.Get(p.Name);
            if (t.ElementCount != p.Count || t.Rank != p.Shape.Length || !t.Shape.SequenceEqual(p.Shape))
            {
                model.Dispose();
                throw new MinnowException($"{weights.Source}: tensor '{p.Name}' has shape {t.ShapeText} but the config implies [{string.Join(", ", p.Shape)}].");
            }

            var values = model.Parameters.ValueSpan(p);
            int cols = t.Columns;
            for (int r = 0; r < t.Rows; r++)
            {
                t.ReadRow(r, values.Slice(r * cols, cols));
            }
        }

        return model;
    }

    /// <summary>Loads a Hugging Face folder (config.json + safetensors) for training.</summary>
    public static LlamaTrainingModel Load(string path, WorkerPool? pool = null)
    {
        string folder = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path))!;
        var config = ModelConfig.FromHuggingFace(Path.Combine(folder, "config.json"));
        using var checkpoint = SafetensorsCheckpoint.Open(path);
        using var weights = new WeightSet(checkpoint.Tensors, path, null);
        return FromWeights(config, weights, pool);
    }

    // ---- Forward and backward ----

    /// <summary>
    /// Runs <paramref name="batch"/> sequences of <paramref name="seqLen"/> tokens ([batch·seqLen] row-major) and
    /// adds <paramref name="lossScale"/> × ∂(mean NLL)/∂θ to the gradients, where the mean is over positions whose
    /// target is not negative. Returns that mean NLL (unscaled) and the number of targets. With a
    /// <see cref="Teacher"/>, the loss is the mean KL divergence from the teacher's distributions instead.
    /// </summary>
    public (double MeanLoss, int Targets) ForwardBackward(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, int batch, int seqLen, float lossScale = 1f)
    {
        int count = Prepare(inputs, targets, batch, seqLen);
        int n = batch * seqLen;
        Forward(batch, seqLen);
        float scale = count > 0 ? lossScale / count : 0f;
        double total;
        if (_teacher != null)
        {
            _teacher.Logits(inputs, batch, seqLen, _teacherLogits);
            total = DistillationLossOp.Compute(_logits, _teacherLogits, _targets, n, Config.VocabSize, _rowLoss, true, scale, _pool);
        }
        else
        {
            total = CrossEntropyOp.Compute(_logits, _targets, n, Config.VocabSize, _rowLoss, true, scale, _pool);
        }

        Backward(batch, seqLen);
        return (count > 0 ? total / count : 0, count);
    }

    /// <summary>Forward only: the summed NLL over positions with a target, and their number.</summary>
    public (double TotalLoss, int Targets) Evaluate(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, int batch, int seqLen)
    {
        int count = Prepare(inputs, targets, batch, seqLen);
        Forward(batch, seqLen);
        double total = CrossEntropyOp.Compute(_logits, _targets, batch * seqLen, Config.VocabSize, _rowLoss, false, 0f, _pool);
        return (total, count);
    }

    private int Prepare(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, int batch, int seqLen)
    {
        TrainingBatch.Validate(inputs, targets, batch, seqLen, Config);
        EnsureCapacity(batch, seqLen);
        return TrainingBatch.Stage(inputs, targets, _inputs, _targets);
    }

    private float* P(Parameter p) => Parameters.Value(p);

    // The weights a linear layer multiplies by: Q(W) under fake quantization, else W.
    private float* W(Parameter p) => _fakeQuant != null ? _fakeQuant.Weights(p) : Parameters.Value(p);

    // Base gradients: none while LoRA adapters are attached (the base is frozen).
    private float* G(Parameter p) => _lora != null ? null : Parameters.Grad(p);

    private float* PB(Parameter? p) => p == null ? null : Parameters.Value(p);

    private float* GB(Parameter? p) => p == null || _lora != null ? null : Parameters.Grad(p);

    private void Forward(int batch, int seqLen)
    {
        var c = Config;
        int n = batch * seqLen, d = c.HiddenSize, vocab = c.VocabSize;
        var pool = _pool;
        var lora = _lora;
        _fakeQuant?.Refresh(pool);
        EmbeddingOp.Forward(W(_embed), _inputs, n, d, _resid[0], pool);
        for (int l = 0; l < _layers.Length; l++)
        {
            var w = _layers[l];
            var a = _acts[l];
            float* x = _resid[2 * l], mid = _resid[(2 * l) + 1], next = _resid[(2 * l) + 2];
            int heads = c.HeadsOf(l), kvHeads = c.KvHeadsOf(l), qd = c.QDimOf(l), kvd = c.KvDimOf(l), f = c.IntermediateOf(l);
            RmsNormOp.Forward(x, P(w.AttnNorm), a.Xn1, n, d, c.NormEps, pool);
            _fakeQuant?.QuantizeInputs(w.Wq, a.Xn1, n, d, pool);
            LinearOp.Forward(a.Xn1, n, d, W(w.Wq), qd, PB(w.Bq), a.Q, pool);
            lora?.Forward(l, LoraTarget.QProj, a.Xn1, n, a.Q);
            LinearOp.Forward(a.Xn1, n, d, W(w.Wk), kvd, PB(w.Bk), a.K, pool);
            lora?.Forward(l, LoraTarget.KProj, a.Xn1, n, a.K);
            LinearOp.Forward(a.Xn1, n, d, W(w.Wv), kvd, PB(w.Bv), a.V, pool);
            lora?.Forward(l, LoraTarget.VProj, a.Xn1, n, a.V);
            RopeOp.Apply(a.Q, n, seqLen, heads, c.HeadDim, c.RotaryDim, _cos, _sin, pool);
            RopeOp.Apply(a.K, n, seqLen, kvHeads, c.HeadDim, c.RotaryDim, _cos, _sin, pool);
            AttentionOp.Forward(a.Q, a.K, a.V, a.Probs, a.Attn, batch, seqLen, heads, kvHeads, c.HeadDim, pool);
            _fakeQuant?.QuantizeInputs(w.Wo, a.Attn, n, qd, pool);
            LinearOp.Forward(a.Attn, n, qd, W(w.Wo), d, null, _tmp, pool);
            lora?.Forward(l, LoraTarget.OProj, a.Attn, n, _tmp);
            ResidualOp.Add(x, _tmp, mid, (long)n * d, pool);

            RmsNormOp.Forward(mid, P(w.MlpNorm), a.Xn2, n, d, c.NormEps, pool);
            _fakeQuant?.QuantizeInputs(w.Gate, a.Xn2, n, d, pool);
            LinearOp.Forward(a.Xn2, n, d, W(w.Gate), f, null, a.H1, pool);
            lora?.Forward(l, LoraTarget.GateProj, a.Xn2, n, a.H1);
            LinearOp.Forward(a.Xn2, n, d, W(w.Up), f, null, a.H2, pool);
            lora?.Forward(l, LoraTarget.UpProj, a.Xn2, n, a.H2);
            SwiGluOp.Forward(a.H1, a.H2, a.Act, (long)n * f, pool);
            _fakeQuant?.QuantizeInputs(w.Down, a.Act, n, f, pool);
            LinearOp.Forward(a.Act, n, f, W(w.Down), d, null, _tmp, pool);
            lora?.Forward(l, LoraTarget.DownProj, a.Act, n, _tmp);
            ResidualOp.Add(mid, _tmp, next, (long)n * d, pool);
        }

        RmsNormOp.Forward(_resid[2 * _layers.Length], P(_finalNorm), _xfNorm, n, d, c.NormEps, pool);
        _fakeQuant?.QuantizeInputs(_head, _xfNorm, n, d, pool);
        LinearOp.Forward(_xfNorm, n, d, W(_head), vocab, null, _logits, pool);
    }

    /// <summary>Backward from the logits' gradient (left in the logits buffer by the cross-entropy).</summary>
    private void Backward(int batch, int seqLen)
    {
        var c = Config;
        int n = batch * seqLen, d = c.HiddenSize;
        var pool = _pool;
        var lora = _lora;
        LinearOp.Backward(_xfNorm, _logits, n, d, W(_head), c.VocabSize, _dXn, false, G(_head), null, pool);
        new Span<float>(_dX, n * d).Clear();
        RmsNormOp.Backward(_resid[2 * _layers.Length], P(_finalNorm), _dXn, _dX, G(_finalNorm), _rstd, n, d, c.NormEps, pool);
        for (int l = _layers.Length - 1; l >= 0; l--)
        {
            var w = _layers[l];
            var a = _acts[l];
            float* x = _resid[2 * l], mid = _resid[(2 * l) + 1];
            int heads = c.HeadsOf(l), kvHeads = c.KvHeadsOf(l), qd = c.QDimOf(l), kvd = c.KvDimOf(l), f = c.IntermediateOf(l);

            // MLP: next = mid + down(silu(gate·xn2) * up·xn2), xn2 = norm(mid); _dX holds ∂L/∂next.
            LinearOp.Backward(a.Act, _dX, n, f, W(w.Down), d, _dAct, false, G(w.Down), null, pool);
            lora?.Backward(l, LoraTarget.DownProj, a.Act, _dX, n, _dAct);
            SwiGluOp.Backward(a.H1, a.H2, _dAct, _dH1, _dH2, (long)n * f, pool);
            LinearOp.Backward(a.Xn2, _dH1, n, d, W(w.Gate), f, _dXn, false, G(w.Gate), null, pool);
            lora?.Backward(l, LoraTarget.GateProj, a.Xn2, _dH1, n, _dXn);
            LinearOp.Backward(a.Xn2, _dH2, n, d, W(w.Up), f, _dXn, true, G(w.Up), null, pool);
            lora?.Backward(l, LoraTarget.UpProj, a.Xn2, _dH2, n, _dXn);
            RmsNormOp.Backward(mid, P(w.MlpNorm), _dXn, _dX, G(w.MlpNorm), _rstd, n, d, c.NormEps, pool);

            // Attention: mid = x + Wo·attention(rope(q), rope(k), v), q/k/v = W·norm(x); _dX holds ∂L/∂mid.
            LinearOp.Backward(a.Attn, _dX, n, qd, W(w.Wo), d, _dAttn, false, G(w.Wo), null, pool);
            lora?.Backward(l, LoraTarget.OProj, a.Attn, _dX, n, _dAttn);
            AttentionOp.Backward(a.Q, a.K, a.V, a.Probs, _dAttn, _dQ, _dK, _dV, batch, seqLen, heads, kvHeads, c.HeadDim, pool);
            RopeOp.Apply(_dQ, n, seqLen, heads, c.HeadDim, c.RotaryDim, _cos, _negSin, pool);
            RopeOp.Apply(_dK, n, seqLen, kvHeads, c.HeadDim, c.RotaryDim, _cos, _negSin, pool);
            LinearOp.Backward(a.Xn1, _dQ, n, d, W(w.Wq), qd, _dXn, false, G(w.Wq), GB(w.Bq), pool);
            lora?.Backward(l, LoraTarget.QProj, a.Xn1, _dQ, n, _dXn);
            LinearOp.Backward(a.Xn1, _dK, n, d, W(w.Wk), kvd, _dXn, true, G(w.Wk), GB(w.Bk), pool);
            lora?.Backward(l, LoraTarget.KProj, a.Xn1, _dK, n, _dXn);
            LinearOp.Backward(a.Xn1, _dV, n, d, W(w.Wv), kvd, _dXn, true, G(w.Wv), GB(w.Bv), pool);
            lora?.Backward(l, LoraTarget.VProj, a.Xn1, _dV, n, _dXn);
            RmsNormOp.Backward(x, P(w.AttnNorm), _dXn, _dX, G(w.AttnNorm), _rstd, n, d, c.NormEps, pool);
        }

        if (lora == null)
        {
            EmbeddingOp.Backward(_inputs, _dX, n, d, G(_embed), pool);
        }
    }

    // ---- Buffers ----

    /// <summary>Bytes of activation memory currently allocated.</summary>
    public long ActivationBytes => _arena.Bytes;

    /// <summary>Allocates activations for batches up to [batch, seqLen] (once; later calls that fit reuse them).</summary>
    public void EnsureCapacity(int batch, int seqLen)
    {
        if (batch <= _capacityBatch && seqLen <= _capacitySeq)
        {
            return;
        }

        batch = Math.Max(batch, _capacityBatch);
        seqLen = Math.Max(seqLen, _capacitySeq);
        _arena.Release();
        var c = Config;
        long n = (long)batch * seqLen;
        int d = c.HiddenSize, f = c.MaxIntermediate;
        _resid = new float*[(2 * c.Layers) + 1];
        for (int i = 0; i < _resid.Length; i++)
        {
            _resid[i] = Alloc(n * d);
        }

        _acts = new LayerActs[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            int lf = c.IntermediateOf(l);
            _acts[l] = new LayerActs
            {
                Xn1 = Alloc(n * d),
                Q = Alloc(n * c.QDimOf(l)),
                K = Alloc(n * c.KvDimOf(l)),
                V = Alloc(n * c.KvDimOf(l)),
                Probs = Alloc(AttentionOp.ProbsLength(batch, seqLen, c.HeadsOf(l))),
                Attn = Alloc(n * c.QDimOf(l)),
                Xn2 = Alloc(n * d),
                H1 = Alloc(n * lf),
                H2 = Alloc(n * lf),
                Act = Alloc(n * lf),
            };
        }

        _xfNorm = Alloc(n * d);
        _logits = Alloc(n * c.VocabSize);
        _teacherLogits = _teacher != null ? Alloc(n * c.VocabSize) : null;
        _tmp = Alloc(n * d);
        _dX = Alloc(n * d);
        _dXn = Alloc(n * d);
        _dQ = Alloc(n * c.MaxQDim);
        _dK = Alloc(n * c.MaxKvDim);
        _dV = Alloc(n * c.MaxKvDim);
        _dAttn = Alloc(n * c.MaxQDim);
        _dH1 = Alloc(n * f);
        _dH2 = Alloc(n * f);
        _dAct = Alloc(n * f);
        _rstd = Alloc(n);
        _rowLoss = Alloc(n);
        _inputs = (int*)Alloc(n);
        _targets = (int*)Alloc(n);

        int half = c.RotaryDim / 2;
        _cos = Alloc((long)seqLen * half);
        _sin = Alloc((long)seqLen * half);
        _negSin = Alloc((long)seqLen * half);
        RopeOp.FillTables(_rope, seqLen, c.RotaryDim, _cos, _sin, _negSin);

        _capacityBatch = batch;
        _capacitySeq = seqLen;
    }

    private float* Alloc(long floats) => _arena.Floats(floats);

    // ---- Export ----

    /// <summary>
    /// Writes a Hugging Face checkpoint: config.json and model.safetensors (atomically), weights stored as
    /// <paramref name="dtype"/>.
    /// </summary>
    public void SaveHuggingFace(string folder, DType dtype = DType.F32)
    {
        Directory.CreateDirectory(folder);
        var writer = new SafetensorsWriter();
        writer.AddMetadata("format", "pt");
        Parameters.AddTo(writer, dtype);

        writer.Save(Path.Combine(folder, "model.safetensors"));
        AtomicFile.WriteAllText(Path.Combine(folder, "config.json"), ConfigJson(Config, dtype));
    }

    string ITrainingModel.HuggingFaceConfigJson() => ConfigJson(Config);

    /// <summary>A Hugging Face config.json for a Llama-architecture config.</summary>
    public static string ConfigJson(ModelConfig c, DType dtype = DType.F32)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartArray("architectures");
            json.WriteStringValue("LlamaForCausalLM");
            json.WriteEndArray();
            json.WriteString("model_type", "llama");
            json.WriteNumber("hidden_size", c.HiddenSize);
            json.WriteNumber("intermediate_size", c.IntermediateSize);
            json.WriteNumber("num_attention_heads", c.Heads);
            json.WriteNumber("num_key_value_heads", c.KvHeads);
            json.WriteNumber("head_dim", c.HeadDim);
            json.WriteNumber("num_hidden_layers", c.Layers);
            foreach (var (key, sizes) in new[] { ("minnow_layer_heads", c.LayerHeads), ("minnow_layer_kv_heads", c.LayerKvHeads), ("minnow_layer_intermediate", c.LayerIntermediate) })
            {
                if (sizes != null)
                {
                    json.WriteStartArray(key);
                    foreach (int size in sizes)
                    {
                        json.WriteNumberValue(size);
                    }

                    json.WriteEndArray();
                }
            }

            json.WriteNumber("vocab_size", c.VocabSize);
            json.WriteNumber("max_position_embeddings", c.MaxPositions);
            json.WriteNumber("rms_norm_eps", c.NormEps);
            json.WriteNumber("rope_theta", c.RopeTheta);
            if (c.RopeScaling is { } s)
            {
                json.WriteStartObject("rope_scaling");
                json.WriteString("rope_type", "llama3");
                json.WriteNumber("factor", s.Factor);
                json.WriteNumber("low_freq_factor", s.LowFreqFactor);
                json.WriteNumber("high_freq_factor", s.HighFreqFactor);
                json.WriteNumber("original_max_position_embeddings", s.OriginalMaxPositions);
                json.WriteEndObject();
            }
            else
            {
                json.WriteNull("rope_scaling");
            }

            json.WriteString("hidden_act", "silu");
            json.WriteBoolean("tie_word_embeddings", c.TieEmbeddings);
            json.WriteBoolean("attention_bias", c.QkvBias);
            json.WriteBoolean("mlp_bias", false);
            if (c.BosTokenId is int bos)
            {
                json.WriteNumber("bos_token_id", bos);
            }

            if (c.EosTokenId is int eos)
            {
                json.WriteNumber("eos_token_id", eos);
            }

            json.WriteString("torch_dtype", dtype switch { DType.F16 => "float16", DType.BF16 => "bfloat16", _ => "float32" });
            json.WriteEndObject();
        }

        return System.Text.Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    public void Dispose()
    {
        _arena.Release();
        _fakeQuant?.Dispose();
        _fakeQuant = null;
        Parameters.Dispose();
    }
}

/// <summary>out = a + b elementwise (the residual connection), parallel over chunks.</summary>
public static unsafe class ResidualOp
{
    private const int Chunk = 8192;

    private struct Job
    {
        public float* A;
        public float* B;
        public float* Out;
        public long Count;
    }

    public static void Add(float* a, float* b, float* output, long count, WorkerPool pool)
    {
        var job = new Job { A = a, B = b, Out = output, Count = count };
        pool.For(checked((int)((count + Chunk - 1) / Chunk)), 4, &Run, &job);
    }

    private static void Run(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        long i0 = (long)start * Chunk, i1 = Math.Min(job.Count, (long)end * Chunk);
        VectorMath.Copy(job.A + i0, job.Out + i0, i1 - i0);
        VectorMath.Add(job.B + i0, job.Out + i0, (int)(i1 - i0));
    }
}
