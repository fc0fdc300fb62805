using Google.Protobuf;
using Minnow.Export.Onnx.Proto;
using Minnow.Kernels;
using Minnow.Models;
using Minnow.Tensors;
using DataType = Minnow.Export.Onnx.Proto.TensorProto.Types.DataType;

namespace Minnow.Export.Onnx;

/// <summary>How the linear layers' weights are stored in the exported graph.</summary>
public enum OnnxWeightType
{
    /// <summary>Block-quantized weights as they are (MatMulNBits), float weights as F32.</summary>
    Auto,
    F32,
    /// <summary>F16 storage, widened to F32 where used (the graph computes in F32 on the CPU).</summary>
    F16,
    /// <summary>8-bit blocks of 32 (Minnow's Q8_0) as MatMulNBits; already quantized weights as they are.</summary>
    Int8,
    /// <summary>INT4 groups (Minnow's round-to-nearest) as MatMulNBits; already quantized weights as they are.</summary>
    Int4,
}

public sealed record OnnxExportOptions
{
    public OnnxWeightType Type { get; init; } = OnnxWeightType.Auto;

    /// <summary>Group size for <see cref="OnnxWeightType.Int4"/> from float weights: 32, 64 or 128.</summary>
    public int Group { get; init; } = 32;

    /// <summary>
    /// MatMulNBits' accuracy_level: 0 (unset) keeps the activations in float32, so ONNX Runtime computes with exactly
    /// Minnow's weights; 4 lets it quantize the activations to int8 per block (faster, less exact: on the default model
    /// INT4 groups of 128 move perplexity by 0.3 % against 0.02 % at 0).
    /// </summary>
    public int AccuracyLevel { get; init; }

    /// <summary>Initializer bytes kept inside model.onnx; the rest go to model.onnx.data (protobuf's 2 GB cap).</summary>
    public long InlineLimit { get; init; } = OnnxGraphBuilder.DefaultInlineLimit;
}

/// <summary>What an ONNX export wrote.</summary>
public sealed record OnnxExportResult(string ModelFile, string? ExternalDataFile, int MatMulNBitsLayers, int FloatLayers, long Bytes);

/// <summary>
/// Writes a loaded model as an ONNX decoder with a KV cache in the layout Hugging Face Optimum and onnxruntime-genai
/// use: inputs <c>input_ids</c>, <c>attention_mask</c>, <c>position_ids</c> and <c>past_key_values.{i}.key|value</c>
/// [batch, kv_heads, past_sequence_length, head_dim]; outputs <c>logits</c> and <c>present.{i}.key|value</c>; batch
/// and sequence dimensions symbolic. Standard ONNX operators (opset 17) throughout, plus <c>com.microsoft</c>
/// <c>MatMulNBits</c> for block-quantized weights, which carry Minnow's codes, scales and minimums unchanged.
/// The graph is walked from the model's config and named weights in this one place for all architectures.
/// </summary>
public static class OnnxExporter
{
    public const int Opset = 17;
    public const string ModelFileName = "model.onnx";
    public const string ExternalDataFileName = "model.onnx.data";

    public static OnnxExportResult Export(TransformerModel model, string folder, OnnxExportOptions options, IProgress<(int Done, int Total)>? progress = null,
        CancellationToken ct = default)
    {
        if (options.Group is not (32 or 64 or 128))
        {
            throw new MinnowException($"--group must be 32, 64 or 128 (got {options.Group}).");
        }

        Directory.CreateDirectory(folder);
        string target = Path.Combine(folder, ModelFileName);
        string tmp = target + ".tmp";
        string dataTarget = Path.Combine(folder, ExternalDataFileName);
        string dataTmp = dataTarget + ".tmp";
        try
        {
            using var builder = new OnnxGraphBuilder(dataTmp, options.InlineLimit);
            var walker = new DecoderGraph(model, builder, options, progress, ct);
            walker.Build();
            builder.FinishExternalData();
            var onnx = new ModelProto
            {
                IrVersion = 8,
                ProducerName = "minnow",
                ProducerVersion = typeof(OnnxExporter).Assembly.GetName().Version?.ToString() ?? "0",
                Graph = builder.Graph,
            };
            onnx.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
            onnx.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
            onnx.MetadataProps.Add(new StringStringEntryProto { Key = "minnow.model_type", Value = model.Config.ModelType });

            // External data keeps the name the graph refers to: the final one.
            foreach (var t in builder.Graph.Initializer.Where(t => t.DataLocation == TensorProto.Types.DataLocation.External))
            {
                t.ExternalData[0].Value = ExternalDataFileName;
            }

            using (var stream = File.Create(tmp))
            {
                onnx.WriteTo(stream);
            }

            if (builder.HasExternalData)
            {
                File.Move(dataTmp, dataTarget, overwrite: true);
            }
            else if (File.Exists(dataTarget))
            {
                File.Delete(dataTarget);
            }

            File.Move(tmp, target, overwrite: true);
            long bytes = new FileInfo(target).Length + (builder.HasExternalData ? new FileInfo(dataTarget).Length : 0);
            return new OnnxExportResult(target, builder.HasExternalData ? dataTarget : null, walker.QuantizedLayers, walker.FloatLayers, bytes);
        }
        finally
        {
            File.Delete(tmp);
            File.Delete(dataTmp);
        }
    }

    /// <summary>The graph of one decoder, built from its config and weights.</summary>
    private sealed unsafe class DecoderGraph
    {
        private readonly ModelConfig _c;
        private readonly WeightSet _w;
        private readonly OnnxGraphBuilder _g;
        private readonly OnnxExportOptions _options;
        private readonly IProgress<(int Done, int Total)>? _progress;
        private readonly CancellationToken _ct;
        private string _maskBias = "", _cos = "", _sin = "";

        public DecoderGraph(TransformerModel model, OnnxGraphBuilder builder, OnnxExportOptions options, IProgress<(int Done, int Total)>? progress, CancellationToken ct)
        {
            _c = model.Config;
            _w = model.Weights;
            _g = builder;
            _options = options;
            _progress = progress;
            _ct = ct;
        }

        public int QuantizedLayers { get; private set; }

        public int FloatLayers { get; private set; }

        public void Build()
        {
            var c = _c;
            _g.Input(OnnxGraphBuilder.Value("input_ids", DataType.Int64, "batch_size", "sequence_length"));
            _g.Input(OnnxGraphBuilder.Value("attention_mask", DataType.Int64, "batch_size", "total_sequence_length"));
            _g.Input(OnnxGraphBuilder.Value("position_ids", DataType.Int64, "batch_size", "sequence_length"));
            for (int l = 0; l < c.Layers; l++)
            {
                foreach (var kind in new[] { "key", "value" })
                {
                    _g.Input(OnnxGraphBuilder.Value($"past_key_values.{l}.{kind}", DataType.Float, "batch_size", c.KvHeadsOf(l), "past_sequence_length", c.HeadDim));
                }
            }

            _g.Output(OnnxGraphBuilder.Value("logits", DataType.Float, "batch_size", "sequence_length", c.VocabSize));
            for (int l = 0; l < c.Layers; l++)
            {
                foreach (var kind in new[] { "key", "value" })
                {
                    _g.Output(OnnxGraphBuilder.Value($"present.{l}.{kind}", DataType.Float, "batch_size", c.KvHeadsOf(l), "total_sequence_length", c.HeadDim));
                }
            }

            BuildMask();
            if (c.RotaryDim > 0)
            {
                BuildRope();
            }

            switch (c.Architecture)
            {
                case Architecture.Llama:
                    BuildLlama();
                    break;
                case Architecture.GptNeoX:
                    BuildGptNeoX();
                    break;
                case Architecture.Gpt2:
                    BuildGpt2();
                    break;
                default:
                    throw new MinnowException($"{_w.Source}: ONNX export does not support {c.Architecture}.");
            }
        }

        // ---- Architectures: one screen each, in the order of the engine's forward passes ----

        private void BuildLlama()
        {
            var c = _c;
            var embed = _w.Get("model.embed_tokens.weight");
            string x = Embed(embed);
            for (int l = 0; l < c.Layers; l++)
            {
                string p = $"model.layers.{l}.";
                string h = RmsNorm(x, p + "input_layernorm.weight");
                int[]? qRows = RopeRows(c.HeadsOf(l)), kRows = RopeRows(c.KvHeadsOf(l));
                string q = Linear(h, Rows(p + "self_attn.q_proj", qRows, c.QkvBias));
                string k = Linear(h, Rows(p + "self_attn.k_proj", kRows, c.QkvBias));
                string v = Linear(h, Rows(p + "self_attn.v_proj", null, c.QkvBias));
                string attn = Attention(l, q, k, v);
                x = _g.Node("Add", [x, Linear(attn, Rows(p + "self_attn.o_proj", null, false))]);

                h = RmsNorm(x, p + "post_attention_layernorm.weight");
                string gate = Linear(h, Rows(p + "mlp.gate_proj", null, false));
                string up = Linear(h, Rows(p + "mlp.up_proj", null, false));
                string act = _g.Node("Mul", [_g.Node("Mul", [gate, _g.Node("Sigmoid", [gate])]), up]);
                x = _g.Node("Add", [x, Linear(act, Rows(p + "mlp.down_proj", null, false))]);
                Progress(l);
            }

            string normed = RmsNorm(x, "model.norm.weight");
            Head(normed, c.TieEmbeddings && !_w.Has("lm_head.weight") ? embed : _w.Get("lm_head.weight"), "lm_head");
        }

        private void BuildGptNeoX()
        {
            var c = _c;
            var embed = _w.Get("gpt_neox.embed_in.weight");
            string x = Embed(embed);
            for (int l = 0; l < c.Layers; l++)
            {
                string p = $"gpt_neox.layers.{l}.";
                int hd = c.HeadDim, heads = c.HeadsOf(l), qDim = heads * hd;

                // query_key_value rows per head [q_h, k_h, v_h] (Hugging Face) or [all q | all k | all v] (GGUF).
                int[] QkvRows(int part) => Enumerable.Range(0, qDim)
                    .Select(i => c.FusedQkvPerHead ? ((i / hd) * 3 * hd) + (part * hd) + (i % hd) : (part * qDim) + i).ToArray();

                string fused = p + "attention.query_key_value";
                string h = LayerNorm(x, p + "input_layernorm");
                int[] rope = RopeRows(heads) ?? Enumerable.Range(0, qDim).ToArray();
                string q = Linear(h, Part(fused, rope.Select(i => QkvRows(0)[i]).ToArray(), "q"));
                string k = Linear(h, Part(fused, rope.Select(i => QkvRows(1)[i]).ToArray(), "k"));
                string v = Linear(h, Part(fused, QkvRows(2), "v"));
                string attn = Linear(Attention(l, q, k, v), Rows(p + "attention.dense", null, _w.Has(p + "attention.dense.bias")));
                string mlpIn = c.ParallelResidual ? LayerNorm(x, p + "post_attention_layernorm") : "";
                x = _g.Node("Add", [x, attn]);
                if (!c.ParallelResidual)
                {
                    mlpIn = LayerNorm(x, p + "post_attention_layernorm");
                }

                string up = Activate(Linear(mlpIn, Rows(p + "mlp.dense_h_to_4h", null, _w.Has(p + "mlp.dense_h_to_4h.bias"))));
                x = _g.Node("Add", [x, Linear(up, Rows(p + "mlp.dense_4h_to_h", null, _w.Has(p + "mlp.dense_4h_to_h.bias")))]);
                Progress(l);
            }

            string normed = LayerNorm(x, "gpt_neox.final_layer_norm");
            Head(normed, c.TieEmbeddings && !_w.Has("embed_out.weight") ? embed : _w.Get("embed_out.weight"), "embed_out");
        }

        private void BuildGpt2()
        {
            var c = _c;
            string prefix = _w.Has("transformer.wte.weight") ? "transformer." : "";
            var embed = _w.Get(prefix + "wte.weight");
            string x = Embed(embed);
            string positions = _g.Node("Gather", [FloatTable(_w.Get(prefix + "wpe.weight"), "wpe"), "position_ids"], "position_embeddings");
            x = _g.Node("Add", [x, positions]);
            for (int l = 0; l < c.Layers; l++)
            {
                string p = $"{prefix}h.{l}.";
                int qDim = c.QDimOf(l), kvDim = c.KvDimOf(l);
                string h = LayerNorm(x, p + "ln_1");
                string cAttn = p + "attn.c_attn";
                string q = Linear(h, Part(cAttn, Enumerable.Range(0, qDim).ToArray(), "q"));
                string k = Linear(h, Part(cAttn, Enumerable.Range(qDim, kvDim).ToArray(), "k"));
                string v = Linear(h, Part(cAttn, Enumerable.Range(qDim + kvDim, kvDim).ToArray(), "v"));
                x = _g.Node("Add", [x, Linear(Attention(l, q, k, v), Rows(p + "attn.c_proj", null, true))]);
                h = LayerNorm(x, p + "ln_2");
                string up = Activate(Linear(h, Rows(p + "mlp.c_fc", null, true)));
                x = _g.Node("Add", [x, Linear(up, Rows(p + "mlp.c_proj", null, true))]);
                Progress(l);
            }

            string normed = LayerNorm(x, prefix + "ln_f");
            Head(normed, _w.Has("lm_head.weight") ? _w.Get("lm_head.weight") : embed, "lm_head");
        }

        // ---- Blocks ----

        private void Progress(int layer)
        {
            _ct.ThrowIfCancellationRequested();
            _progress?.Report((layer + 1, _c.Layers));
        }

        /// <summary>The attention bias [batch, 1, sequence, total]: 0 where a query may see a key (causal and not padding), −1e30 elsewhere.</summary>
        private void BuildMask()
        {
            var g = _g;
            string pastLength = g.Node("Shape", ["past_key_values.0.key"], null, "", OnnxGraphBuilder.Int("start", 2), OnnxGraphBuilder.Int("end", 3));
            string sequence = g.Node("Shape", ["input_ids"], null, "", OnnxGraphBuilder.Int("start", 1), OnnxGraphBuilder.Int("end", 2));
            string total = g.Node("Add", [pastLength, sequence]);
            string zero = g.Int64s([0], scalar: true), one = g.Int64s([1], scalar: true);
            string pastScalar = g.Node("Squeeze", [pastLength, g.Int64s([0])]);
            string totalScalar = g.Node("Squeeze", [total, g.Int64s([0])]);
            string queryPositions = g.Node("Range", [pastScalar, totalScalar, one]);
            string keyPositions = g.Node("Range", [zero, totalScalar, one]);
            string causal = g.Node("LessOrEqual", [g.Node("Unsqueeze", [keyPositions, g.Int64s([0])]), g.Node("Unsqueeze", [queryPositions, g.Int64s([1])])]);
            string padding = g.Node("Cast", ["attention_mask"], null, "", OnnxGraphBuilder.Int("to", (long)DataType.Bool));
            padding = g.Node("Unsqueeze", [padding, g.Int64s([1, 2])]);
            string allowed = g.Node("And", [causal, padding]);
            _maskBias = g.Node("Where", [allowed, g.Floats([0f]), g.Floats([-1e30f])], "attention_bias");
        }

        /// <summary>cos and sin [batch, 1, sequence, rotary_dim] of every position, from the engine's inverse frequencies (llama3 scaling included).</summary>
        private void BuildRope()
        {
            var g = _g;
            var frequencies = new RopeTable(_c).InverseFrequencies.ToArray();
            string positions = g.Node("Cast", ["position_ids"], null, "", OnnxGraphBuilder.Int("to", (long)DataType.Float));
            positions = g.Node("Unsqueeze", [positions, g.Int64s([2])]);
            string angles = g.Node("Mul", [positions, g.Floats(frequencies, vector: true)]);
            string Table(string op) => g.Node("Unsqueeze", [g.Node("Concat", [g.Node(op, [angles]), g.Node(op, [angles])], null, "", OnnxGraphBuilder.Int("axis", -1)), g.Int64s([1])]);
            _cos = Table("Cos");
            _sin = Table("Sin");
        }

        /// <summary>
        /// Rows of a q or k projection in rotate-half order: identity for Hugging Face layouts; for weights stored in
        /// RoPE's interleaved order (llama2.c, GGUF), row 2i of each head's rotary part goes to i and 2i + 1 to i + R/2 —
        /// the same permutation of q and k leaves every attention score unchanged.
        /// </summary>
        private int[]? RopeRows(int heads)
        {
            if (!_c.RopeStyle.HasInterleavedRows())
            {
                return null;
            }

            int hd = _c.HeadDim, half = _c.RotaryDim / 2;
            var rows = new int[heads * hd];
            for (int h = 0; h < heads; h++)
            {
                for (int i = 0; i < hd; i++)
                {
                    // Output position i takes stored row: i < half → 2i; half ≤ i < R → 2(i − half) + 1; beyond R unchanged.
                    int stored = i < half ? 2 * i : i < 2 * half ? (2 * (i - half)) + 1 : i;
                    rows[(h * hd) + i] = (h * hd) + stored;
                }
            }

            return rows;
        }

        /// <summary>Rotates x [batch, heads, sequence, head_dim] (rotate-half; only the first rotary_dim values when partial).</summary>
        private string Rope(string x)
        {
            var g = _g;
            int hd = _c.HeadDim, r = _c.RotaryDim;
            string Slice(string v, long from, long to) => g.Node("Slice", [v, g.Int64s([from]), g.Int64s([to]), g.Int64s([3])]);
            string rotary = r == hd ? x : Slice(x, 0, r);
            string first = Slice(rotary, 0, r / 2), second = Slice(rotary, r / 2, r);
            string rotated = g.Node("Concat", [g.Node("Neg", [second]), first], null, "", OnnxGraphBuilder.Int("axis", -1));
            string result = g.Node("Add", [g.Node("Mul", [rotary, _cos]), g.Node("Mul", [rotated, _sin])]);
            return r == hd ? result : g.Node("Concat", [result, Slice(x, r, hd)], null, "", OnnxGraphBuilder.Int("axis", -1));
        }

        /// <summary>
        /// Causal attention of one layer over its cache: q [batch, seq, heads·hd], k and v [batch, seq, kv_heads·hd];
        /// appends k (rotated) and v to the past as present.{l}.*; output [batch, seq, heads·hd]. Grouped-query heads
        /// share their key/value head by viewing q as [batch, kv_heads, group·seq, hd] (no copies of k or v).
        /// </summary>
        private string Attention(int layer, string q, string k, string v)
        {
            var g = _g;
            var c = _c;
            int heads = c.HeadsOf(layer), kvHeads = c.KvHeadsOf(layer), hd = c.HeadDim;
            string Heads(string t, int n) => g.Node("Transpose", [g.Node("Reshape", [t, g.Int64s([0, 0, n, hd])])], null, "", OnnxGraphBuilder.Ints("perm", 0, 2, 1, 3));
            string qh = Heads(q, heads), kh = Heads(k, kvHeads), vh = Heads(v, kvHeads);
            if (c.RotaryDim > 0)
            {
                qh = Rope(qh);
                kh = Rope(kh);
            }

            string keys = g.Node("Concat", [$"past_key_values.{layer}.key", kh], $"present.{layer}.key", "", OnnxGraphBuilder.Int("axis", 2));
            string values = g.Node("Concat", [$"past_key_values.{layer}.value", vh], $"present.{layer}.value", "", OnnxGraphBuilder.Int("axis", 2));
            string grouped = heads == kvHeads ? qh : g.Node("Reshape", [qh, g.Int64s([0, kvHeads, -1, hd])]);
            string scores = g.Node("MatMul", [grouped, g.Node("Transpose", [keys], null, "", OnnxGraphBuilder.Ints("perm", 0, 1, 3, 2))]);
            scores = g.Node("Mul", [scores, g.Floats([1f / MathF.Sqrt(hd)])]);
            if (heads != kvHeads)
            {
                scores = g.Node("Reshape", [scores, g.Int64s([0, heads, -1, 0])]);
            }

            string probabilities = g.Node("Softmax", [g.Node("Add", [scores, _maskBias])], null, "", OnnxGraphBuilder.Int("axis", -1));
            if (heads != kvHeads)
            {
                probabilities = g.Node("Reshape", [probabilities, g.Int64s([0, kvHeads, -1, 0])]);
            }

            string output = g.Node("MatMul", [probabilities, values]);
            if (heads != kvHeads)
            {
                output = g.Node("Reshape", [output, g.Int64s([0, heads, -1, hd])]);
            }

            output = g.Node("Transpose", [output], null, "", OnnxGraphBuilder.Ints("perm", 0, 2, 1, 3));
            return g.Node("Reshape", [output, g.Int64s([0, 0, heads * hd])]);
        }

        private string RmsNorm(string x, string weight)
        {
            var g = _g;
            string meanSquare = g.Node("ReduceMean", [g.Node("Mul", [x, x])], null, "", OnnxGraphBuilder.Ints("axes", -1), OnnxGraphBuilder.Int("keepdims", 1));
            string rms = g.Node("Sqrt", [g.Node("Add", [meanSquare, g.Floats([_c.NormEps])])]);
            return g.Node("Mul", [g.Node("Div", [x, rms]), Vector(weight, _c.HiddenSize)]);
        }

        private string LayerNorm(string x, string prefix) =>
            _g.Node("LayerNormalization", [x, Vector(prefix + ".weight", _c.HiddenSize), Vector(prefix + ".bias", _c.HiddenSize)], null, "",
                OnnxGraphBuilder.Int("axis", -1), OnnxGraphBuilder.Float("epsilon", _c.NormEps));

        private string Activate(string x)
        {
            var g = _g;
            switch (_c.Activation)
            {
                case Activation.Gelu:
                    // 0.5·x·(1 + erf(x/√2))
                    string erf = g.Node("Erf", [g.Node("Mul", [x, g.Floats([1f / MathF.Sqrt(2f)])])]);
                    return g.Node("Mul", [g.Node("Mul", [x, g.Floats([0.5f])]), g.Node("Add", [erf, g.Floats([1f])])]);
                case Activation.GeluTanh:
                    // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
                    string cube = g.Node("Mul", [g.Node("Mul", [x, x]), x]);
                    string inner = g.Node("Mul", [g.Node("Add", [x, g.Node("Mul", [cube, g.Floats([0.044715f])])]), g.Floats([MathF.Sqrt(2f / MathF.PI)])]);
                    return g.Node("Mul", [g.Node("Mul", [x, g.Floats([0.5f])]), g.Node("Add", [g.Node("Tanh", [inner]), g.Floats([1f])])]);
                default:
                    return g.Node("Mul", [x, g.Node("Sigmoid", [x])]);
            }
        }

        private string Embed(Tensor table) => _g.Node("Gather", [FloatTable(table, "embed_tokens"), "input_ids"], "inputs_embeds");

        /// <summary>A [rows, cols] table (embeddings, positions) as float values exactly as Minnow reads them.</summary>
        private string FloatTable(Tensor table, string name)
        {
            var values = table.ToFloatArray();
            if (_options.Type == OnnxWeightType.F16)
            {
                return Widen(_g.Weight(name + ".f16", DataType.Float16, table.Shape, System.Runtime.InteropServices.MemoryMarshal.AsBytes(ToHalves(values).AsSpan())));
            }

            return _g.Weight(name, values, table.Shape);
        }

        private string Widen(string half) => _g.Node("Cast", [half], null, "", OnnxGraphBuilder.Int("to", (long)DataType.Float));

        private static ushort[] ToHalves(float[] values)
        {
            var halves = new ushort[values.Length];
            for (int i = 0; i < values.Length; i++)
            {
                halves[i] = BitConverter.HalfToUInt16Bits((Half)values[i]);
            }

            return halves;
        }

        private string Vector(string name, int n)
        {
            var values = new float[n];
            new ReadOnlySpan<float>(_w.Vector(name, n), n).CopyTo(values);
            return _g.Weight(name, values, [n]);
        }

        private float[]? BiasOf(string name, int[]? rows, int n)
        {
            if (!_w.Has(name))
            {
                return null;
            }

            var t = _w.Get(name);
            var all = new float[t.ElementCount];
            new ReadOnlySpan<float>(_w.Vector(name, (int)t.ElementCount), all.Length).CopyTo(all);
            return rows is null ? all[..n] : rows.Select(r => all[r]).ToArray();
        }

        private OnnxLinear Rows(string prefix, int[]? rows, bool bias)
        {
            var weight = _w.Get(prefix + ".weight");
            bool conv1D = _c.Architecture == Architecture.Gpt2 && _c.Conv1DLayout;
            int n = rows?.Length ?? (conv1D ? weight.Columns : weight.Rows);
            return new OnnxLinear { Name = prefix, Weight = weight, Rows = rows, Conv1D = conv1D, Bias = bias ? BiasOf(prefix + ".bias", rows, n) : null };
        }

        private OnnxLinear Part(string prefix, int[] rows, string part)
        {
            var linear = Rows(prefix, rows, _w.Has(prefix + ".bias"));
            return new OnnxLinear { Name = prefix + "." + part, Weight = linear.Weight, Rows = rows, Conv1D = linear.Conv1D, Bias = linear.Bias };
        }

        /// <summary>The output head: logits [batch, seq, vocab].</summary>
        private void Head(string normed, Tensor head, string name)
        {
            var linear = new OnnxLinear { Name = name, Weight = head };
            Linear(normed, linear, "logits");
        }

        /// <summary>y = x·Wᵀ (+ b): MatMulNBits for block-quantized weights, MatMul with the transposed weight otherwise.</summary>
        private string Linear(string x, OnnxLinear linear, string? output = null)
        {
            var g = _g;
            var type = _options.Type;
            bool quantize = type is OnnxWeightType.Int4 or OnnxWeightType.Int8;
            OnnxLinear source = linear;
            NativeBuffer? requantized = null;
            try
            {
                if (!linear.IsBlockQuantized && quantize)
                {
                    var target = type == OnnxWeightType.Int8 ? DType.Q8_0
                        : _options.Group switch { 64 => DType.Q4_1_G64, 128 => DType.Q4_1_G128, _ => DType.Q4_1 };
                    if (linear.InFeatures % target.BlockSize() == 0)
                    {
                        (source, requantized) = Quantize(linear, target);
                    }
                }

                if (source.IsBlockQuantized && type is not (OnnxWeightType.F32 or OnnxWeightType.F16))
                {
                    QuantizedLayers++;
                    var nbits = MatMulNBitsWeights.FromBlocks(source);
                    var inputs = new List<string>
                    {
                        x,
                        g.Weight(linear.Name + ".qweight", DataType.Uint8, [nbits.N, nbits.KBlocks, nbits.BlockSize * nbits.Bits / 8], nbits.B),
                        g.Weight(linear.Name + ".scales", DataType.Float, [(long)nbits.N * nbits.KBlocks], nbits.ScaleBytes),
                    };
                    if (nbits.ZeroPoints is { } zp)
                    {
                        inputs.Add(g.Weight(linear.Name + ".qzeros", DataType.Uint8, [zp.Length], zp));
                    }
                    bool last = linear.Bias is null && nbits.Minimums is null;
                    string y = g.Node("MatMulNBits", inputs, last ? output : null, "com.microsoft",
                        OnnxGraphBuilder.Int("K", nbits.K), OnnxGraphBuilder.Int("N", nbits.N), OnnxGraphBuilder.Int("bits", nbits.Bits),
                        OnnxGraphBuilder.Int("block_size", nbits.BlockSize), OnnxGraphBuilder.Int("accuracy_level", _options.AccuracyLevel));
                    if (nbits.Minimums is { } minimums)
                    {
                        // + Σ_g m[n, g] · Σ_{k in g} x[k]: the groups' minimums, which MatMulNBits' integer zero points cannot hold.
                        var transposedMinimums = new float[minimums.Length];
                        for (int r = 0; r < nbits.N; r++)
                        {
                            for (int b = 0; b < nbits.KBlocks; b++)
                            {
                                transposedMinimums[((long)b * nbits.N) + r] = minimums[((long)r * nbits.KBlocks) + b];
                            }
                        }

                        string groups = g.Node("Reshape", [x, g.Int64s([0, 0, nbits.KBlocks, nbits.BlockSize])]);
                        string sums = g.Node("ReduceSum", [groups, g.Int64s([-1])], null, "", OnnxGraphBuilder.Int("keepdims", 0));
                        string offset = g.Node("MatMul", [sums, g.Weight(linear.Name + ".minimums", transposedMinimums, [nbits.KBlocks, nbits.N])]);
                        y = g.Node("Add", [y, offset], linear.Bias is null ? output : null);
                    }

                    return linear.Bias is null ? y : g.Node("Add", [y, g.Weight(linear.Name + ".bias", linear.Bias, [linear.Bias.Length])], output);
                }

                FloatLayers++;
                int n = linear.OutFeatures, k = linear.InFeatures;
                var w = linear.ToFloats();
                var transposed = new float[w.Length];
                for (int r = 0; r < n; r++)
                {
                    for (int col = 0; col < k; col++)
                    {
                        transposed[((long)col * n) + r] = w[((long)r * k) + col];
                    }
                }

                string weight = type == OnnxWeightType.F16
                    ? Widen(g.Weight(linear.Name + ".weight.f16", DataType.Float16, [k, n], System.Runtime.InteropServices.MemoryMarshal.AsBytes(ToHalves(transposed).AsSpan())))
                    : g.Weight(linear.Name + ".weight", transposed, [k, n]);
                string product = g.Node("MatMul", [x, weight], linear.Bias is null ? output : null);
                return linear.Bias is null ? product : g.Node("Add", [product, g.Weight(linear.Name + ".bias", linear.Bias, [linear.Bias.Length])], output);
            }
            finally
            {
                requantized?.Dispose();
            }
        }

        /// <summary>Round-to-nearest quantization of a float layer with Minnow's codec (as <c>minnow quantize --method rtn</c>).</summary>
        private static (OnnxLinear, NativeBuffer) Quantize(OnnxLinear linear, DType target)
        {
            int n = linear.OutFeatures, k = linear.InFeatures;
            var floats = linear.ToFloats();
            long rowBytes = target.ByteCount(k);
            var buffer = new NativeBuffer(rowBytes * n);
            for (int r = 0; r < n; r++)
            {
                Dequantize.FromFloats(target, floats.AsSpan(r * k, k), new Span<byte>(buffer.Pointer + (r * rowBytes), (int)rowBytes));
            }

            var tensor = new Tensor(linear.Name + ".weight", target, [n, k], buffer.Pointer, buffer);
            return (new OnnxLinear { Name = linear.Name, Weight = tensor, Bias = linear.Bias }, buffer);
        }
    }
}
