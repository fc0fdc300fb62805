using System.Diagnostics;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Quantization;

/// <summary>What happened to one tensor.</summary>
public sealed record TensorReport
{
    public required string Name { get; init; }

    /// <summary>Storage type in the quantized model.</summary>
    public required DType Type { get; init; }

    public required long[] Shape { get; init; }

    public required long Bytes { get; init; }

    /// <summary>"gptq", "awq", "rtn", or "kept" (vectors, fallbacks).</summary>
    public required string Method { get; init; }

    /// <summary>‖WX − ŴX‖ / ‖WX‖ on the calibration data (null without calibration or for tensors that are not linear layers).</summary>
    public double? RelativeOutputError { get; init; }

    /// <summary>The same for plain round to nearest to the same format (a reference point for GPTQ and AWQ).</summary>
    public double? RoundToNearestError { get; init; }

    /// <summary>AWQ: the α chosen for the layer's input group.</summary>
    public double? AwqAlpha { get; init; }

    /// <summary>SmoothQuant: the migration strength α applied to the layer's input group (null when not smoothed).</summary>
    public double? SmoothAlpha { get; init; }
}

/// <summary>The per input channel scales SmoothQuant applied to one input group (weights × s, the norm ÷ s).</summary>
public sealed record SmoothingScale(string Group, double Alpha, float[] Scales);

/// <summary>A quantized model held in memory, ready to run or to export (<see cref="Export.GgufExporter"/>).</summary>
public sealed class QuantizedModel : IDisposable
{
    internal QuantizedModel(TransformerModel model, IReadOnlyList<TensorReport> tensors, IReadOnlyList<AwqGroupScale> awq,
        IReadOnlyList<SmoothingScale> smoothing, double seconds)
    {
        Model = model;
        Tensors = tensors;
        AwqScales = awq;
        SmoothingScales = smoothing;
        Seconds = seconds;
    }

    public TransformerModel Model { get; }

    public IReadOnlyList<TensorReport> Tensors { get; }

    public IReadOnlyList<AwqGroupScale> AwqScales { get; }

    public IReadOnlyList<SmoothingScale> SmoothingScales { get; }

    /// <summary>Time spent quantizing (calibration not included).</summary>
    public double Seconds { get; }

    public long Bytes => Model.Weights.ByteSize;

    public long Parameters => Model.Weights.ParameterCount;

    /// <summary>Bits per weight over all the model's tensors (as llama.cpp's "BPW").</summary>
    public double BitsPerWeight => Bytes * 8.0 / Parameters;

    public void Dispose() => Model.Dispose();
}

/// <summary>
/// Quantizes a model's weights to GGUF Q8_0, Q4_0, INT4 groups (Q4_1, Q4_1_G64, Q4_1_G128) or Minnow's INT3 groups
/// (Q3_1_G32, Q3_1_G64, Q3_1_G128) as llama.cpp lays them out: linear layers by round to nearest, GPTQ or AWQ; the
/// token embedding and output head by round to nearest (Q8_0 when the scheme is a 4- or 3-bit one, as llama.cpp keeps
/// them); linear layers whose rows are not whole groups in F16; vectors in F32. The result is a
/// self-contained model (it does not borrow the source's memory) that <see cref="Export.GgufExporter"/> writes
/// unchanged.
/// </summary>
public static unsafe class ModelQuantizer
{
    public static QuantizedModel Quantize(TransformerModel source, QuantizationOptions options, ActivationStatistics? statistics = null,
        IProgress<(int Done, int Total)>? progress = null, CancellationToken cancellation = default, WorkerPool? pool = null)
    {
        options.Validate();
        if (options.Method != QuantizationMethod.Rtn && statistics is null)
        {
            throw new MinnowException($"{QuantizationOptions.MethodName(options.Method)} needs calibration data.");
        }

        var watch = Stopwatch.StartNew();
        var config = source.Config;
        var weights = source.Weights;
        var plan = statistics?.Plan ?? LayerPlan.For(config, weights.Has);
        string arch = GgufNames.ArchitectureOf(config);
        var owner = new BufferOwner();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var reports = new Dictionary<string, TensorReport>(StringComparer.Ordinal);
        var awqScales = new List<AwqGroupScale>();
        var smoothingScales = new List<SmoothingScale>();
        var normScales = new Dictionary<string, float[]>(StringComparer.Ordinal);
        int total = weights.All.Count, done = 0;

        try
        {
            // Linear layers, one input group at a time.
            foreach (var group in plan.Groups.Values)
            {
                cancellation.ThrowIfCancellationRequested();
                var members = group.Members.Select(name => plan.Find(name)!).Where(l => weights.Has(l.Name)).ToList();
                if (members.Count == 0)
                {
                    continue;
                }

                var matrices = members.Select(l => (Layer: l, Weights: ReadMatrix(weights.Get(l.Name), l))).ToList();
                bool blocks = group.Width % Math.Max(BlockCodec.BlockSize, options.Scheme.BlockSize()) == 0;
                bool calibrated = statistics?.Has(group.Key) == true;
                using var error = calibrated ? new OutputError(statistics!.Hessian(group.Key), group.Width) : null;
                var method = !blocks ? "kept" : options.Method switch
                {
                    QuantizationMethod.Gptq when calibrated => "gptq",
                    QuantizationMethod.Awq when calibrated && group.NormWeight != null && weights.Has(group.NormWeight) => "awq",
                    _ => "rtn",
                };

                // SmoothQuant (int8): input channel j scaled by s_j in the weights, 1/s_j folded into the norm.
                float[]? smooth = null;
                if (options.PerChannel && options.SmoothAlpha > 0 && blocks && calibrated && group.NormWeight != null && weights.Has(group.NormWeight))
                {
                    smooth = SmoothQuant.Scales(statistics!.MaxAbs(group.Key), matrices.Select(m => (m.Weights, m.Layer.Rows)).ToList(), options.SmoothAlpha);
                    smoothingScales.Add(new SmoothingScale(group.Key, options.SmoothAlpha, smooth));
                    normScales[group.NormWeight] = smooth;
                    if (group.NormBias != null)
                    {
                        normScales[group.NormBias] = smooth;
                    }
                }

                GptqHessian? gptq = method == "gptq"
                    ? Gptq.Prepare(smooth is null ? statistics!.Hessian(group.Key) : ScaleHessian(statistics!.Hessian(group.Key), smooth), group.Width,
                        options.Dampening, options.ActOrder)
                    : null;
                AwqGroupScale? awq = null;
                if (method == "awq")
                {
                    awq = Awq.Search(group.Key, matrices.Select(m => (m.Weights, m.Layer.Rows)).ToList(), statistics!.MeanAbs(group.Key), error!,
                        options.Scheme, options.AwqGridSteps, cancellation);
                    awqScales.Add(awq);
                    normScales[group.NormWeight!] = awq.Scales;
                    if (group.NormBias != null)
                    {
                        normScales[group.NormBias] = awq.Scales;
                    }
                }

                foreach (var (layer, w) in matrices)
                {
                    cancellation.ThrowIfCancellationRequested();
                    long[] shape = [layer.Rows, layer.Columns];
                    var scheme = options.SchemeOf(layer.Name);
                    bool perChannel = options.PerChannel && scheme == DType.Q8_0;
                    var scaled = smooth is null ? w : Awq.ScaleColumns(w, layer.Rows, layer.Columns, smooth);
                    Tensor tensor;
                    float[]? effective = null;
                    if (!blocks)
                    {
                        tensor = owner.Store(layer.Name, DType.F16, shape, Dequantize.FromFloats(DType.F16, w));
                        effective = tensor.ToFloatArray();
                    }
                    else if (gptq != null)
                    {
                        var codec = Gptq.Quantize(scaled, layer.Rows, gptq, scheme, options.LazyBatchSize, options.ScaleSearch, cancellation, perChannel);
                        tensor = owner.Store(layer.Name, scheme, shape, codec.ToBytes());
                        effective = Unscale(codec.ToFloats(), layer.Rows, layer.Columns, smooth);
                    }
                    else if (awq != null)
                    {
                        effective = Awq.Effective(w, layer.Rows, layer.Columns, awq.Scales, scheme, out var codec);
                        tensor = owner.Store(layer.Name, scheme, shape, codec.ToBytes());
                    }
                    else if (perChannel)
                    {
                        var codec = BlockCodec.RoundToNearestPerChannel(scaled, layer.Rows, layer.Columns);
                        tensor = owner.Store(layer.Name, scheme, shape, codec.ToBytes());
                        effective = Unscale(codec.ToFloats(), layer.Rows, layer.Columns, smooth);
                    }
                    else
                    {
                        var bytes = Dequantize.FromFloats(scheme, w);
                        tensor = owner.Store(layer.Name, scheme, shape, bytes);
                        if (error != null)
                        {
                            effective = tensor.ToFloatArray();
                        }
                    }

                    tensors[layer.Name] = tensor;
                    double? relative = error != null && effective != null ? error.Relative(w, effective, layer.Rows) : null;
                    double? rtnRelative = relative;
                    if (error != null && blocks && perChannel && (method != "rtn" || smooth != null))
                    {
                        // The reference: per-channel round to nearest without smoothing.
                        rtnRelative = error.Relative(w, BlockCodec.RoundToNearestPerChannel(w, layer.Rows, layer.Columns).ToFloats(), layer.Rows);
                    }
                    else if (error != null && blocks && method != "rtn")
                    {
                        var rtn = new float[w.Length];
                        Dequantize.Row(scheme, ToPointer(Dequantize.FromFloats(scheme, w), out var pin), rtn);
                        pin.Dispose();
                        rtnRelative = error.Relative(w, rtn, layer.Rows);
                    }

                    reports[layer.Name] = new TensorReport
                    {
                        Name = layer.Name,
                        Type = tensor.Type,
                        Shape = shape,
                        Bytes = tensor.ByteSize,
                        Method = method,
                        RelativeOutputError = relative,
                        RoundToNearestError = rtnRelative,
                        AwqAlpha = awq?.Alpha,
                        SmoothAlpha = smooth is null ? null : options.SmoothAlpha,
                    };
                    progress?.Report((++done, total));
                }
            }

            // Everything else: embeddings, head, norms, biases.
            foreach (var (name, source1) in weights.All)
            {
                if (tensors.ContainsKey(name))
                {
                    continue;
                }

                cancellation.ThrowIfCancellationRequested();
                Tensor tensor;
                string method = "kept";
                if (source1.Rank < 2)
                {
                    var values = source1.ToFloatArray();
                    if (normScales.TryGetValue(name, out var s))
                    {
                        for (int j = 0; j < values.Length; j++)
                        {
                            values[j] /= s[j];
                        }

                        method = options.PerChannel ? "smooth" : "awq";
                    }

                    tensor = owner.Store(name, DType.F32, source1.Shape, Dequantize.FromFloats(DType.F32, values));
                }
                else
                {
                    string hfName = arch == "gpt2" && name.StartsWith("transformer.", StringComparison.Ordinal) ? name["transformer.".Length..] : name;
                    string? ggufName = GgufNames.FromHuggingFace(arch, hfName);
                    if (ggufName is null)
                    {
                        tensor = owner.Store(name, source1.Type, source1.Shape, new ReadOnlySpan<byte>(source1.Data, checked((int)source1.ByteSize)).ToArray());
                    }
                    else
                    {
                        var type = options.TypeOverrides is not null && options.TypeOverrides.TryGetValue(name, out var chosen) && source1.Shape[^1] % BlockCodec.BlockSize == 0
                            ? chosen
                            : StorageType(options.Scheme, source1.Shape, ggufName);
                        if (type == source1.Type)
                        {
                            tensor = owner.Store(name, type, source1.Shape, new ReadOnlySpan<byte>(source1.Data, checked((int)source1.ByteSize)).ToArray());
                        }
                        else if (options.PerChannel && type == DType.Q8_0 && source1.Rank == 2)
                        {
                            // The embedding and the output head: one scale per row (per token, per vocabulary output).
                            var codec = BlockCodec.RoundToNearestPerChannel(source1.ToFloatArray(), (int)source1.Shape[0], (int)source1.Shape[1]);
                            tensor = owner.Store(name, type, source1.Shape, codec.ToBytes());
                            method = "rtn";
                        }
                        else
                        {
                            tensor = owner.Store(name, type, source1.Shape, Dequantize.FromFloats(type, source1.ToFloatArray()));
                            method = type is DType.Q8_0 or DType.Q4_0 || type.IsIntGroup() ? "rtn" : "kept";
                        }
                    }
                }

                tensors[name] = tensor;
                reports[name] = new TensorReport { Name = name, Type = tensor.Type, Shape = tensor.Shape, Bytes = tensor.ByteSize, Method = method };
                progress?.Report((++done, total));
            }

            var quantizedConfig = config.Architecture == Architecture.Gpt2 ? config with { Conv1DLayout = false } : config;
            var set = new WeightSet(tensors, weights.Source + $" ({options.Scheme.Name()}, {QuantizationOptions.MethodName(options.Method)})", owner);
            TransformerModel model;
            try
            {
                model = ModelFactory.Create(quantizedConfig, set, pool);
            }
            catch
            {
                set.Dispose();
                throw;
            }

            // Linear layers in the order the model runs them, then the other tensors by name.
            var ordered = plan.Layers.Where(l => reports.ContainsKey(l.Name)).Select(l => reports[l.Name])
                .Concat(weights.All.Keys.Where(k => plan.Find(k) is null).OrderBy(k => k, StringComparer.Ordinal).Select(k => reports[k]))
                .ToList();
            return new QuantizedModel(model, ordered, awqScales, smoothingScales, watch.Elapsed.TotalSeconds);
        }
        catch
        {
            owner.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Applies AWQ scales to an F32 copy of the model without quantizing anything: W·diag(s) for the group's
    /// layers, the norm divided by s. The result computes the same function (up to float rounding).
    /// </summary>
    public static TransformerModel ApplyScales(TransformerModel source, IReadOnlyList<AwqGroupScale> scales, WorkerPool? pool = null) =>
        ApplyScales(source, scales.Select(s => (s.Group, s.Scales)).ToList(), pool);

    /// <summary>The same with SmoothQuant's scales: the F32 model <see cref="Quantize"/> rounds when it smooths.</summary>
    public static TransformerModel ApplyScales(TransformerModel source, IReadOnlyList<SmoothingScale> scales, WorkerPool? pool = null) =>
        ApplyScales(source, scales.Select(s => (s.Group, s.Scales)).ToList(), pool);

    private static TransformerModel ApplyScales(TransformerModel source, IReadOnlyList<(string Group, float[] Scales)> scales, WorkerPool? pool)
    {
        var weights = source.Weights;
        var plan = LayerPlan.For(source.Config, weights.Has);
        var owner = new BufferOwner();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var bySource = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var scale in scales)
        {
            var group = plan.Groups[scale.Group];
            foreach (var name in group.Members)
            {
                var layer = plan.Find(name)!;
                var scaled = Awq.ScaleColumns(ReadMatrix(weights.Get(name), layer), layer.Rows, layer.Columns, scale.Scales);
                tensors[name] = owner.Store(name, DType.F32, [layer.Rows, layer.Columns], Dequantize.FromFloats(DType.F32, scaled));
            }

            bySource[group.NormWeight!] = scale.Scales;
            if (group.NormBias != null)
            {
                bySource[group.NormBias] = scale.Scales;
            }
        }

        bool transposedAny = false;
        foreach (var (name, t) in weights.All)
        {
            if (tensors.ContainsKey(name))
            {
                transposedAny |= plan.Find(name)?.StoredTransposed == true;
                continue;
            }

            var layer = plan.Find(name);
            var values = layer != null ? ReadMatrix(t, layer) : t.ToFloatArray();
            if (bySource.TryGetValue(name, out var s))
            {
                for (int j = 0; j < values.Length; j++)
                {
                    values[j] /= s[j];
                }
            }

            transposedAny |= layer?.StoredTransposed == true;
            tensors[name] = owner.Store(name, DType.F32, layer != null ? [layer.Rows, layer.Columns] : t.Shape, Dequantize.FromFloats(DType.F32, values));
        }

        var config = transposedAny ? source.Config with { Conv1DLayout = false } : source.Config;
        var set = new WeightSet(tensors, weights.Source + " (AWQ-scaled)", owner);
        try
        {
            return ModelFactory.Create(config, set, pool);
        }
        catch
        {
            set.Dispose();
            throw;
        }
    }

    /// <summary>The Hessian of inputs divided by s per channel: H'[a, b] = H[a, b] / (s_a · s_b), in place.</summary>
    private static double[] ScaleHessian(double[] hessian, float[] s)
    {
        int n = s.Length;
        for (int a = 0; a < n; a++)
        {
            for (int b = 0; b < n; b++)
            {
                hessian[(a * n) + b] /= (double)s[a] * s[b];
            }
        }

        return hessian;
    }

    /// <summary>Q(W·diag(s))·diag(s)⁻¹: the weights a smoothed layer stands for (the values unchanged without smoothing), in place.</summary>
    private static float[] Unscale(float[] values, int rows, int columns, float[]? s)
    {
        if (s is null)
        {
            return values;
        }

        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < columns; j++)
            {
                values[(r * columns) + j] /= s[j];
            }
        }

        return values;
    }

    /// <summary>GgufExporter's storage policy, so the file holds exactly what was evaluated in memory.</summary>
    private static DType StorageType(DType scheme, long[] shape, string ggufName)
    {
        if (shape.Length < 2 || ggufName == "position_embd.weight")
        {
            return DType.F32;
        }

        if (shape[^1] % Math.Max(BlockCodec.BlockSize, scheme.BlockSize()) != 0)
        {
            return shape[^1] % BlockCodec.BlockSize == 0 ? DType.Q8_0 : DType.F16;
        }

        // As llama.cpp keeps them with its 4-bit types: the embedding and the output head at 8 bits.
        return (scheme == DType.Q4_0 || scheme.IsIntGroup()) && ggufName is "output.weight" or "token_embd.weight" ? DType.Q8_0 : scheme;
    }

    /// <summary>A linear layer's weights as [outputs, inputs] float32 (GPT-2's Conv1D [inputs, outputs] transposed).</summary>
    public static float[] ReadMatrix(Tensor tensor, LinearLayer layer)
    {
        var values = tensor.ToFloatArray();
        if (!layer.StoredTransposed)
        {
            return values;
        }

        var result = new float[values.Length];
        for (int i = 0; i < layer.Columns; i++)
        {
            for (int o = 0; o < layer.Rows; o++)
            {
                result[((long)o * layer.Columns) + i] = values[((long)i * layer.Rows) + o];
            }
        }

        return result;
    }

    private static byte* ToPointer(byte[] bytes, out System.Buffers.MemoryHandle pin)
    {
        pin = bytes.AsMemory().Pin();
        return (byte*)pin.Pointer;
    }

    /// <summary>The native buffers behind a quantized model's tensors.</summary>
    internal sealed class BufferOwner : IDisposable
    {
        private readonly List<NativeBuffer> _buffers = [];

        public Tensor Store(string name, DType type, long[] shape, ReadOnlySpan<byte> data)
        {
            var buffer = new NativeBuffer(data.Length);
            data.CopyTo(new Span<byte>(buffer.Pointer, data.Length));
            _buffers.Add(buffer);
            return new Tensor(name, type, (long[])shape.Clone(), buffer.Pointer, buffer);
        }

        public void Dispose()
        {
            _buffers.ForEach(b => b.Dispose());
            _buffers.Clear();
        }
    }
}
