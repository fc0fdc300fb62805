using System.Text.Json;
using Minnow.Formats.Safetensors;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// A trainable GPT-NeoX (Pythia) or GPT-2 model in float32: LayerNorm with weight and bias, biased linear layers,
/// causal multi-head attention over a fused q/k/v projection, GELU MLP. GPT-NeoX: query_key_value laid out per
/// head as [q, k, v], partial rotate-half rotary on the first rotary_dim of each head, parallel
/// (x + attn(ln1(x)) + mlp(ln2(x))) or sequential residual, exact GELU, untied embed_out. GPT-2: learned position
/// embeddings, Conv1D weights stored [in, out], [q | k | v] c_attn, sequential residual, tanh GELU, tied head.
/// Parameters carry the Hugging Face names and shapes of the checkpoint. Like <see cref="LlamaTrainingModel"/>,
/// the forward pass keeps its activations (buffers allocated once for the largest batch seen and reused), the
/// backward pass adds the gradient of the mean next-token cross-entropy to <see cref="ParameterStore.Grads"/>,
/// and every op is deterministic, so a step gives bit-identical results on any thread count.
/// </summary>
public sealed unsafe class GptTrainingModel : ITrainingModel
{
    private const string Gpt2Prefix = "transformer.";

    private sealed class LayerParams
    {
        public required Parameter Ln1Weight, Ln1Bias, Ln2Weight, Ln2Bias, Qkv, QkvBias, Out, OutBias, Up, UpBias, Down, DownBias;
    }

    private sealed class LayerActs
    {
        public float* Xn1, Q, K, V, Probs, Attn, Mid, Xn2, H, Act;
    }

    private readonly WorkerPool _pool;
    private readonly Parameter _embed, _head, _finalWeight, _finalBias;
    private readonly Parameter? _positions;
    private readonly LayerParams[] _layers;
    private readonly bool _conv1D, _parallelResidual;
    private readonly FusedQkvLayout _qkvLayout;
    private readonly RopeTable? _rope;
    private readonly ActivationArena _arena = new();
    private LayerActs[] _acts = [];
    private float*[] _layerInputs = [];
    private float* _xfNorm, _logits, _qkv, _tmp, _dX, _dXn, _dQ, _dK, _dV, _dAttn, _dH, _dAct, _mean, _rstd, _rowLoss;
    private float* _cos, _sin, _negSin;
    private int* _inputs, _targets;
    private int _capacityBatch, _capacitySeq;

    public GptTrainingModel(ModelConfig config, WorkerPool? pool = null)
    {
        if (config.Architecture is not (Architecture.GptNeoX or Architecture.Gpt2) || config.Activation is not (Activation.Gelu or Activation.GeluTanh))
        {
            throw new MinnowException($"GptTrainingModel trains GPT-NeoX and GPT-2 models with a GELU MLP; got {config.ModelType} ({config.Activation}).");
        }

        if (config.HasPerLayerShapes || config.KvHeads != config.Heads)
        {
            throw new MinnowException($"training {config.ModelType} needs the same number of heads and MLP width in every layer, and as many key/value heads as query heads.");
        }

        if (config.Architecture == Architecture.GptNeoX ? !config.FusedQkvPerHead || config.RopeStyle != Kernels.RopeStyle.RotateHalf : !config.Conv1DLayout)
        {
            throw new MinnowException($"training {config.ModelType} needs the Hugging Face layout (per-head query_key_value, Conv1D [in, out] weights, rotate-half rotary).");
        }

        config.Validate("training config");
        Config = config;
        _pool = pool ?? WorkerPool.Shared;
        bool gpt2 = config.Architecture == Architecture.Gpt2;
        _conv1D = gpt2;
        _parallelResidual = !gpt2 && config.ParallelResidual;
        _qkvLayout = gpt2 ? FusedQkvLayout.Blocked : FusedQkvLayout.PerHead;
        _rope = !gpt2 && config.RotaryDim > 0 ? new RopeTable(config) : null;
        var names = gpt2 ? Gpt2Names : NeoXNames;

        Parameters = new ParameterStore(ParameterSpecs(config));
        var ps = Parameters;
        _embed = ps[names.Embed];
        _positions = gpt2 ? ps[Gpt2Prefix + "wpe.weight"] : null;
        _head = gpt2 || config.TieEmbeddings ? _embed : ps["embed_out.weight"];
        _finalWeight = ps[names.FinalNorm + ".weight"];
        _finalBias = ps[names.FinalNorm + ".bias"];
        _layers = new LayerParams[config.Layers];
        for (int i = 0; i < config.Layers; i++)
        {
            string p = names.Layer(i);
            _layers[i] = new LayerParams
            {
                Ln1Weight = ps[p + names.Ln1 + ".weight"],
                Ln1Bias = ps[p + names.Ln1 + ".bias"],
                Ln2Weight = ps[p + names.Ln2 + ".weight"],
                Ln2Bias = ps[p + names.Ln2 + ".bias"],
                Qkv = ps[p + names.Qkv + ".weight"],
                QkvBias = ps[p + names.Qkv + ".bias"],
                Out = ps[p + names.Out + ".weight"],
                OutBias = ps[p + names.Out + ".bias"],
                Up = ps[p + names.Up + ".weight"],
                UpBias = ps[p + names.Up + ".bias"],
                Down = ps[p + names.Down + ".weight"],
                DownBias = ps[p + names.Down + ".bias"],
            };
        }
    }

    public ModelConfig Config { get; }

    public ParameterStore Parameters { get; }

    // ---- Names and shapes ----

    /// <summary>The Hugging Face tensor names of one architecture (layer-relative names after <see cref="Layer"/>).</summary>
    private sealed record TensorNames(string Embed, string FinalNorm, Func<int, string> Layer, string Ln1, string Ln2, string Qkv, string Out, string Up, string Down);

    private static readonly TensorNames NeoXNames = new(
        "gpt_neox.embed_in.weight", "gpt_neox.final_layer_norm", i => $"gpt_neox.layers.{i}.",
        "input_layernorm", "post_attention_layernorm", "attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h");

    private static readonly TensorNames Gpt2Names = new(
        Gpt2Prefix + "wte.weight", Gpt2Prefix + "ln_f", i => $"{Gpt2Prefix}h.{i}.",
        "ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj");

    /// <summary>Every tensor in checkpoint order with its Hugging Face shape (Conv1D weights [in, out] for GPT-2).</summary>
    private static List<(string, long[], bool)> ParameterSpecs(ModelConfig c)
    {
        bool gpt2 = c.Architecture == Architecture.Gpt2;
        var names = gpt2 ? Gpt2Names : NeoXNames;
        int d = c.HiddenSize, f = c.IntermediateSize, q = c.QDim;

        // A weight mapping in → out: [out, in] for nn.Linear, [in, out] for GPT-2's Conv1D.
        long[] Matrix(int inDim, int outDim) => gpt2 ? [inDim, outDim] : [outDim, inDim];

        var specs = new List<(string, long[], bool)> { (names.Embed, [c.VocabSize, d], true) };
        if (gpt2)
        {
            specs.Add((Gpt2Prefix + "wpe.weight", [c.MaxPositions, d], true));
        }

        for (int i = 0; i < c.Layers; i++)
        {
            string p = names.Layer(i);
            specs.Add((p + names.Ln1 + ".weight", [d], false));
            specs.Add((p + names.Ln1 + ".bias", [d], false));
            specs.Add((p + names.Qkv + ".weight", Matrix(d, 3 * q), true));
            specs.Add((p + names.Qkv + ".bias", [3 * q], false));
            specs.Add((p + names.Out + ".weight", Matrix(q, d), true));
            specs.Add((p + names.Out + ".bias", [d], false));
            specs.Add((p + names.Ln2 + ".weight", [d], false));
            specs.Add((p + names.Ln2 + ".bias", [d], false));
            specs.Add((p + names.Up + ".weight", Matrix(d, f), true));
            specs.Add((p + names.Up + ".bias", [f], false));
            specs.Add((p + names.Down + ".weight", Matrix(f, d), true));
            specs.Add((p + names.Down + ".bias", [d], false));
        }

        specs.Add((names.FinalNorm + ".weight", [d], false));
        specs.Add((names.FinalNorm + ".bias", [d], false));
        if (!gpt2 && !c.TieEmbeddings)
        {
            specs.Add(("embed_out.weight", [c.VocabSize, d], true));
        }

        return specs;
    }

    // ---- Creation and loading ----

    /// <summary>
    /// A freshly initialised model: matrices and embeddings ~ N(0, 0.02²) (the residual projections scaled by
    /// 1/√(2·layers), as GPT-2 does), LayerNorm weights 1, biases 0. Same seed, same weights, on any machine.
    /// </summary>
    public static GptTrainingModel CreateRandom(ModelConfig config, long seed, WorkerPool? pool = null)
    {
        var model = new GptTrainingModel(config, pool);
        var rng = SplitMix64.For(seed, 0x6e70);
        double residualStd = 0.02 / Math.Sqrt(2.0 * config.Layers);
        var residualProjections = model._layers.SelectMany(w => new[] { w.Out, w.Down }).ToHashSet();
        foreach (var p in model.Parameters.All)
        {
            var values = model.Parameters.ValueSpan(p);
            if (p.Shape.Length == 1)
            {
                values.Fill(p.Name.EndsWith(".bias", StringComparison.Ordinal) ? 0f : 1f);
                continue;
            }

            double std = residualProjections.Contains(p) ? residualStd : 0.02;
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = (float)(rng.NextGaussian() * std);
            }
        }

        return model;
    }

    /// <summary>
    /// A trainable copy of loaded weights (any stored type is converted to float32). GPT-2 tensors are found with
    /// or without the "transformer." prefix; a stored GPT-2 lm_head (the tied wte) is not needed.
    /// </summary>
    public static GptTrainingModel FromWeights(ModelConfig config, WeightSet weights, WorkerPool? pool = null)
    {
        var model = new GptTrainingModel(config, pool);
        try
        {
            foreach (var p in model.Parameters.All)
            {
                string name = p.Name;
                if (!weights.Has(name) && name.StartsWith(Gpt2Prefix, StringComparison.Ordinal) && weights.Has(name[Gpt2Prefix.Length..]))
                {
                    name = name[Gpt2Prefix.Length..];
                }

                var t = weights.Get(name);
                if (t.ElementCount != p.Count || t.Rank != p.Shape.Length || !t.Shape.SequenceEqual(p.Shape))
                {
                    throw new MinnowException($"{weights.Source}: tensor '{name}' has shape {t.ShapeText} but the config implies [{string.Join(", ", p.Shape)}].");
                }

                var values = model.Parameters.ValueSpan(p);
                int cols = t.Columns;
                for (int r = 0; r < t.Rows; r++)
                {
                    t.ReadRow(r, values.Slice(r * cols, cols));
                }
            }
        }
        catch
        {
            model.Dispose();
            throw;
        }

        return model;
    }

    /// <summary>Loads a Hugging Face folder (config.json + safetensors) for training.</summary>
    public static GptTrainingModel Load(string path, WorkerPool? pool = null)
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
    /// target is not negative. Returns that mean NLL (unscaled) and the number of targets.
    /// </summary>
    public (double MeanLoss, int Targets) ForwardBackward(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, int batch, int seqLen, float lossScale = 1f)
    {
        int count = Prepare(inputs, targets, batch, seqLen);
        Forward(batch, seqLen);
        float scale = count > 0 ? lossScale / count : 0f;
        double total = CrossEntropyOp.Compute(_logits, _targets, batch * seqLen, Config.VocabSize, _rowLoss, true, scale, _pool);
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

    private float* G(Parameter p) => Parameters.Grad(p);

    /// <summary>y = x·Wᵀ + b for an [out, in] weight (GPT-NeoX) or x·W + b for a Conv1D [in, out] weight (GPT-2).</summary>
    private void Project(float* x, int rows, int inDim, Parameter weight, int outDim, Parameter bias, float* y)
    {
        if (_conv1D)
        {
            Conv1DOp.Forward(x, rows, inDim, P(weight), outDim, P(bias), y, _pool);
        }
        else
        {
            LinearOp.Forward(x, rows, inDim, P(weight), outDim, P(bias), y, _pool);
        }
    }

    /// <summary>The backward of <see cref="Project"/>: writes dx, adds the weight and bias gradients.</summary>
    private void ProjectBackward(float* x, float* dy, int rows, int inDim, Parameter weight, int outDim, Parameter bias, float* dx)
    {
        if (_conv1D)
        {
            Conv1DOp.Backward(x, dy, rows, inDim, P(weight), outDim, dx, false, G(weight), G(bias), _pool);
        }
        else
        {
            LinearOp.Backward(x, dy, rows, inDim, P(weight), outDim, dx, false, G(weight), G(bias), _pool);
        }
    }

    private void Forward(int batch, int seqLen)
    {
        var c = Config;
        int n = batch * seqLen, d = c.HiddenSize, f = c.IntermediateSize, qDim = c.QDim;
        var pool = _pool;
        EmbeddingOp.Forward(P(_embed), _inputs, n, d, _layerInputs[0], pool);
        if (_positions != null)
        {
            PositionEmbeddingOp.Forward(P(_positions), _layerInputs[0], batch, seqLen, d, pool);
        }

        for (int l = 0; l < _layers.Length; l++)
        {
            var w = _layers[l];
            var a = _acts[l];
            float* x = _layerInputs[l], next = _layerInputs[l + 1];

            // Attention branch: attn(ln1(x)), q/k/v split from one fused projection, rotary on the first
            // rotary_dim of each head.
            LayerNormOp.Forward(x, P(w.Ln1Weight), P(w.Ln1Bias), a.Xn1, n, d, c.NormEps, pool);
            Project(a.Xn1, n, d, w.Qkv, 3 * qDim, w.QkvBias, _qkv);
            FusedQkvOp.Split(_qkv, a.Q, a.K, a.V, n, c.Heads, c.HeadDim, _qkvLayout, pool);
            if (_rope != null)
            {
                RopeOp.Apply(a.Q, n, seqLen, c.Heads, c.HeadDim, c.RotaryDim, _cos, _sin, pool);
                RopeOp.Apply(a.K, n, seqLen, c.Heads, c.HeadDim, c.RotaryDim, _cos, _sin, pool);
            }

            AttentionOp.Forward(a.Q, a.K, a.V, a.Probs, a.Attn, batch, seqLen, c.Heads, c.Heads, c.HeadDim, pool);
            Project(a.Attn, n, qDim, w.Out, d, w.OutBias, _tmp);

            // Parallel: next = x + attn(ln1(x)) + mlp(ln2(x)). Sequential: mid = x + attn(ln1(x)),
            // next = mid + mlp(ln2(mid)).
            float* mlpInput = _parallelResidual ? x : a.Mid;
            ResidualOp.Add(x, _tmp, _parallelResidual ? next : a.Mid, (long)n * d, pool);
            LayerNormOp.Forward(mlpInput, P(w.Ln2Weight), P(w.Ln2Bias), a.Xn2, n, d, c.NormEps, pool);
            Project(a.Xn2, n, d, w.Up, f, w.UpBias, a.H);
            GeluOp.Forward(a.H, a.Act, (long)n * f, c.Activation, pool);
            Project(a.Act, n, f, w.Down, d, w.DownBias, _tmp);
            ResidualOp.Add(_parallelResidual ? next : a.Mid, _tmp, next, (long)n * d, pool);
        }

        LayerNormOp.Forward(_layerInputs[_layers.Length], P(_finalWeight), P(_finalBias), _xfNorm, n, d, c.NormEps, pool);
        LinearOp.Forward(_xfNorm, n, d, P(_head), c.VocabSize, null, _logits, pool);
    }

    /// <summary>Backward from the logits' gradient (left in the logits buffer by the cross-entropy).</summary>
    private void Backward(int batch, int seqLen)
    {
        var c = Config;
        int n = batch * seqLen, d = c.HiddenSize, f = c.IntermediateSize, qDim = c.QDim;
        var pool = _pool;
        LinearOp.Backward(_xfNorm, _logits, n, d, P(_head), c.VocabSize, _dXn, false, G(_head), null, pool);
        new Span<float>(_dX, n * d).Clear();
        LayerNormOp.Backward(_layerInputs[_layers.Length], P(_finalWeight), _dXn, _dX, G(_finalWeight), G(_finalBias), _mean, _rstd, n, d, c.NormEps, pool);
        for (int l = _layers.Length - 1; l >= 0; l--)
        {
            var w = _layers[l];
            var a = _acts[l];
            float* x = _layerInputs[l];

            // _dX holds ∂L/∂next. Both branch outputs of a parallel block receive it unchanged, so both read it
            // before either LayerNorm adds its input gradient into it; a sequential block's MLP LayerNorm turns
            // it into ∂L/∂mid, which the attention branch then reads.
            ProjectBackward(a.Act, _dX, n, f, w.Down, d, w.DownBias, _dAct);
            if (_parallelResidual)
            {
                ProjectBackward(a.Attn, _dX, n, qDim, w.Out, d, w.OutBias, _dAttn);
            }

            GeluOp.Backward(a.H, _dAct, _dH, (long)n * f, c.Activation, pool);
            ProjectBackward(a.Xn2, _dH, n, d, w.Up, f, w.UpBias, _dXn);
            LayerNormOp.Backward(_parallelResidual ? x : a.Mid, P(w.Ln2Weight), _dXn, _dX, G(w.Ln2Weight), G(w.Ln2Bias), _mean, _rstd, n, d, c.NormEps, pool);
            if (!_parallelResidual)
            {
                ProjectBackward(a.Attn, _dX, n, qDim, w.Out, d, w.OutBias, _dAttn);
            }

            AttentionOp.Backward(a.Q, a.K, a.V, a.Probs, _dAttn, _dQ, _dK, _dV, batch, seqLen, c.Heads, c.Heads, c.HeadDim, pool);
            if (_rope != null)
            {
                RopeOp.Apply(_dQ, n, seqLen, c.Heads, c.HeadDim, c.RotaryDim, _cos, _negSin, pool);
                RopeOp.Apply(_dK, n, seqLen, c.Heads, c.HeadDim, c.RotaryDim, _cos, _negSin, pool);
            }

            FusedQkvOp.Merge(_dQ, _dK, _dV, _qkv, n, c.Heads, c.HeadDim, _qkvLayout, pool);
            ProjectBackward(a.Xn1, _qkv, n, d, w.Qkv, 3 * qDim, w.QkvBias, _dXn);
            LayerNormOp.Backward(x, P(w.Ln1Weight), _dXn, _dX, G(w.Ln1Weight), G(w.Ln1Bias), _mean, _rstd, n, d, c.NormEps, pool);
        }

        EmbeddingOp.Backward(_inputs, _dX, n, d, G(_embed), pool);
        if (_positions != null)
        {
            PositionEmbeddingOp.Backward(_dX, G(_positions), batch, seqLen, d, pool);
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
        int d = c.HiddenSize, f = c.IntermediateSize, qDim = c.QDim;
        _layerInputs = new float*[c.Layers + 1];
        for (int i = 0; i < _layerInputs.Length; i++)
        {
            _layerInputs[i] = Alloc(n * d);
        }

        _acts = new LayerActs[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            _acts[l] = new LayerActs
            {
                Xn1 = Alloc(n * d),
                Q = Alloc(n * qDim),
                K = Alloc(n * qDim),
                V = Alloc(n * qDim),
                Probs = Alloc(AttentionOp.ProbsLength(batch, seqLen, c.Heads)),
                Attn = Alloc(n * qDim),
                Mid = _parallelResidual ? null : Alloc(n * d),
                Xn2 = Alloc(n * d),
                H = Alloc(n * f),
                Act = Alloc(n * f),
            };
        }

        _xfNorm = Alloc(n * d);
        _logits = Alloc(n * c.VocabSize);
        _qkv = Alloc(n * 3 * qDim);
        _tmp = Alloc(n * d);
        _dX = Alloc(n * d);
        _dXn = Alloc(n * d);
        _dQ = Alloc(n * qDim);
        _dK = Alloc(n * qDim);
        _dV = Alloc(n * qDim);
        _dAttn = Alloc(n * qDim);
        _dH = Alloc(n * f);
        _dAct = Alloc(n * f);
        _mean = Alloc(n);
        _rstd = Alloc(n);
        _rowLoss = Alloc(n);
        _inputs = (int*)Alloc(n);
        _targets = (int*)Alloc(n);

        if (_rope != null)
        {
            int half = c.RotaryDim / 2;
            _cos = Alloc((long)seqLen * half);
            _sin = Alloc((long)seqLen * half);
            _negSin = Alloc((long)seqLen * half);
            RopeOp.FillTables(_rope, seqLen, c.RotaryDim, _cos, _sin, _negSin);
        }

        _capacityBatch = batch;
        _capacitySeq = seqLen;
    }

    private float* Alloc(long floats) => _arena.Floats(floats);

    // ---- Export ----

    /// <summary>
    /// Writes a Hugging Face checkpoint: config.json and model.safetensors (atomically), weights stored as
    /// <paramref name="dtype"/> under their Hugging Face names.
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

    /// <summary>The Hugging Face config.json of this model.</summary>
    public string HuggingFaceConfigJson() => ConfigJson(Config);

    /// <summary>A Hugging Face config.json for a GPT-NeoX or GPT-2 config.</summary>
    public static string ConfigJson(ModelConfig c, DType dtype = DType.F32)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartArray("architectures");
            string activation = c.Activation == Activation.Gelu ? "gelu" : "gelu_new";
            if (c.Architecture == Architecture.Gpt2)
            {
                json.WriteStringValue("GPT2LMHeadModel");
                json.WriteEndArray();
                json.WriteString("model_type", "gpt2");
                json.WriteNumber("n_embd", c.HiddenSize);
                json.WriteNumber("n_inner", c.IntermediateSize);
                json.WriteNumber("n_head", c.Heads);
                json.WriteNumber("n_layer", c.Layers);
                json.WriteNumber("vocab_size", c.VocabSize);
                json.WriteNumber("n_positions", c.MaxPositions);
                json.WriteNumber("n_ctx", c.MaxPositions);
                json.WriteNumber("layer_norm_epsilon", c.NormEps);
                json.WriteString("activation_function", activation);
                json.WriteBoolean("tie_word_embeddings", true);
            }
            else
            {
                json.WriteStringValue("GPTNeoXForCausalLM");
                json.WriteEndArray();
                json.WriteString("model_type", "gpt_neox");
                json.WriteNumber("hidden_size", c.HiddenSize);
                json.WriteNumber("intermediate_size", c.IntermediateSize);
                json.WriteNumber("num_attention_heads", c.Heads);
                json.WriteNumber("num_hidden_layers", c.Layers);
                json.WriteNumber("vocab_size", c.VocabSize);
                json.WriteNumber("max_position_embeddings", c.MaxPositions);
                json.WriteNumber("rotary_pct", (double)c.RotaryDim / c.HeadDim);
                json.WriteNumber("rotary_emb_base", c.RopeTheta);
                json.WriteBoolean("use_parallel_residual", c.ParallelResidual);
                json.WriteString("hidden_act", activation);
                json.WriteNumber("layer_norm_eps", c.NormEps);
                json.WriteBoolean("tie_word_embeddings", c.TieEmbeddings);
                json.WriteBoolean("attention_bias", true);
            }

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
        Parameters.Dispose();
    }
}
