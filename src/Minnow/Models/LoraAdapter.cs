using System.Globalization;
using System.Text;
using System.Text.Json;
using Minnow.Formats;
using Minnow.Formats.Safetensors;
using Minnow.Kernels;
using Minnow.Tensors;
using Minnow.Training;

namespace Minnow.Models;

/// <summary>The linear layers of a Llama block a LoRA adapter can target, by their Hugging Face names.</summary>
public enum LoraTarget
{
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

/// <summary>Names and shapes of LoRA targets: Hugging Face module names, weight names and PEFT tensor names.</summary>
public static class LoraTargets
{
    /// <summary>Every target, in block order.</summary>
    public static IReadOnlyList<LoraTarget> All { get; } = Enum.GetValues<LoraTarget>();

    /// <summary>The Hugging Face module name (<c>q_proj</c>, ..., <c>down_proj</c>).</summary>
    public static string Name(LoraTarget target) => target switch
    {
        LoraTarget.QProj => "q_proj",
        LoraTarget.KProj => "k_proj",
        LoraTarget.VProj => "v_proj",
        LoraTarget.OProj => "o_proj",
        LoraTarget.GateProj => "gate_proj",
        LoraTarget.UpProj => "up_proj",
        _ => "down_proj",
    };

    public static string AllNames => string.Join(",", All.Select(Name));

    public static bool TryParse(string name, out LoraTarget target)
    {
        foreach (var t in All)
        {
            if (Name(t) == name)
            {
                target = t;
                return true;
            }
        }

        target = default;
        return false;
    }

    /// <summary>Parses "q_proj,v_proj" (commas and/or spaces); an unknown name is a one-line error listing the valid ones.</summary>
    public static LoraTarget[] ParseList(string text, string source = "--targets")
    {
        var parts = text.Split([',', ' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0)
        {
            throw new MinnowException($"{source}: no target modules given (choose from {AllNames}).");
        }

        var targets = new List<LoraTarget>();
        foreach (string part in parts)
        {
            if (!TryParse(part, out var t))
            {
                throw new MinnowException($"{source}: '{part}' is not a target module of a Llama block (choose from {AllNames}).");
            }

            if (!targets.Contains(t))
            {
                targets.Add(t);
            }
        }

        return [.. targets.Order()];
    }

    /// <summary>The module path inside the model: <c>model.layers.{i}.self_attn.q_proj</c> or <c>model.layers.{i}.mlp.up_proj</c>.</summary>
    public static string ModulePath(int layer, LoraTarget target) =>
        string.Create(CultureInfo.InvariantCulture, $"model.layers.{layer}.{(target <= LoraTarget.OProj ? "self_attn" : "mlp")}.{Name(target)}");

    /// <summary>The base weight the target adapts (<c>model.layers.{i}.self_attn.q_proj.weight</c>).</summary>
    public static string WeightName(int layer, LoraTarget target) => ModulePath(layer, target) + ".weight";

    /// <summary>PEFT's saved name: <c>base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight</c> (or lora_B).</summary>
    public static string PeftName(int layer, LoraTarget target, bool a) => $"base_model.model.{ModulePath(layer, target)}.lora_{(a ? "A" : "B")}.weight";

    /// <summary>Parses a PEFT tensor name back into its layer, target and matrix; false when it is not one.</summary>
    public static bool TryParsePeftName(string name, out int layer, out LoraTarget target, out bool a)
    {
        layer = -1;
        target = default;
        a = false;
        const string prefix = "base_model.model.model.layers.";
        if (!name.StartsWith(prefix, StringComparison.Ordinal))
        {
            return false;
        }

        var parts = name[prefix.Length..].Split('.');
        // {i}.{self_attn|mlp}.{module}.lora_{A|B}.weight
        if (parts.Length != 5 || parts[4] != "weight" || parts[3] is not ("lora_A" or "lora_B") ||
            !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out layer) || !TryParse(parts[2], out target) ||
            parts[1] != (target <= LoraTarget.OProj ? "self_attn" : "mlp"))
        {
            return false;
        }

        a = parts[3] == "lora_A";
        return true;
    }

    /// <summary>The [out, in] shape of a target's base weight in a layer.</summary>
    public static (int Out, int In) Shape(ModelConfig c, int layer, LoraTarget target) => target switch
    {
        LoraTarget.QProj => (c.QDimOf(layer), c.HiddenSize),
        LoraTarget.KProj or LoraTarget.VProj => (c.KvDimOf(layer), c.HiddenSize),
        LoraTarget.OProj => (c.HiddenSize, c.QDimOf(layer)),
        LoraTarget.GateProj or LoraTarget.UpProj => (c.IntermediateOf(layer), c.HiddenSize),
        _ => (c.HiddenSize, c.IntermediateOf(layer)),
    };
}

/// <summary>The fields of a PEFT <c>adapter_config.json</c> for a LoRA adapter.</summary>
public sealed record LoraConfig
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";

    public required int Rank { get; init; }

    public required float Alpha { get; init; }

    public required IReadOnlyList<LoraTarget> Targets { get; init; }

    public float Dropout { get; init; }

    /// <summary>base_model_name_or_path: the model the adapter was trained on.</summary>
    public string? BaseModel { get; init; }

    /// <summary>Rank-stabilised LoRA: scale alpha/√r instead of alpha/r.</summary>
    public bool UseRsLora { get; init; }

    /// <summary>The factor on B·A: alpha/r (alpha/√r with rsLoRA).</summary>
    public float Scale => UseRsLora ? (float)(Alpha / Math.Sqrt(Rank)) : Alpha / Rank;

    /// <summary>adapter_config.json as PEFT writes it (inference_mode true, bias "none", task CAUSAL_LM).</summary>
    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartObject("alpha_pattern");
            w.WriteEndObject();
            w.WriteNull("auto_mapping");
            if (BaseModel is null)
            {
                w.WriteNull("base_model_name_or_path");
            }
            else
            {
                w.WriteString("base_model_name_or_path", BaseModel);
            }

            w.WriteString("bias", "none");
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteBoolean("inference_mode", true);
            w.WriteBoolean("init_lora_weights", true);
            w.WriteNull("layers_pattern");
            w.WriteNull("layers_to_transform");
            WriteNumber(w, "lora_alpha", Alpha);
            WriteNumber(w, "lora_dropout", Dropout);
            w.WriteNull("modules_to_save");
            w.WriteString("peft_type", "LORA");
            w.WriteNumber("r", Rank);
            w.WriteStartObject("rank_pattern");
            w.WriteEndObject();
            w.WriteNull("revision");
            w.WriteStartArray("target_modules");
            foreach (var t in Targets)
            {
                w.WriteStringValue(LoraTargets.Name(t));
            }

            w.WriteEndArray();
            w.WriteString("task_type", "CAUSAL_LM");
            w.WriteBoolean("use_dora", false);
            w.WriteBoolean("use_rslora", UseRsLora);
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    // Whole numbers as integers (PEFT writes "lora_alpha": 32), others as they are.
    private static void WriteNumber(Utf8JsonWriter w, string name, float value)
    {
        if (value == MathF.Round(value) && Math.Abs(value) < 1e9)
        {
            w.WriteNumber(name, (long)value);
        }
        else
        {
            w.WriteNumber(name, (double)(decimal)value);
        }
    }

    /// <summary>Reads adapter_config.json; anything Minnow cannot apply exactly is a one-line error.</summary>
    public static LoraConfig Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: not found (a PEFT LoRA adapter folder holds {ConfigFile} and {WeightsFile}).");
        }

        using var file = JsonInput.ParseFile(path);
        return Parse(file, path);
    }

    /// <summary>Reads adapter_config.json's bytes (from a sealed package); <paramref name="source"/> names it in errors.</summary>
    public static LoraConfig Parse(ReadOnlyMemory<byte> json, string source)
    {
        using var doc = JsonInput.Parse(json, source);
        return Parse(doc, source);
    }

    private static LoraConfig Parse(JsonDocument doc, string path)
    {
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new MinnowException($"{path}: not a PEFT adapter config (the JSON is not an object).");
            }

            string Text(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : "";
            bool Flag(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;
            bool Present(string name) => root.TryGetProperty(name, out var v) && v.ValueKind is not (JsonValueKind.Null or JsonValueKind.Undefined) &&
                !(v.ValueKind == JsonValueKind.Object && !v.EnumerateObject().Any()) && !(v.ValueKind == JsonValueKind.Array && v.GetArrayLength() == 0);

            if (Text("peft_type") != "LORA")
            {
                throw new MinnowException($"{path}: peft_type is '{Text("peft_type")}', expected \"LORA\".");
            }

            if (!root.TryGetProperty("r", out var r) || r.ValueKind != JsonValueKind.Number || !r.TryGetInt32(out int rank) || rank <= 0)
            {
                throw new MinnowException($"{path}: \"r\" must be a positive integer.");
            }

            float alpha = root.TryGetProperty("lora_alpha", out var la) && la.ValueKind == JsonValueKind.Number ? la.GetSingle() : 8f;
            if (Flag("fan_in_fan_out"))
            {
                throw new MinnowException($"{path}: fan_in_fan_out true (Conv1D layout) is not supported; Llama adapters use false.");
            }

            if (Flag("use_dora"))
            {
                throw new MinnowException($"{path}: DoRA adapters (use_dora true) are not supported.");
            }

            string bias = Text("bias");
            if (bias.Length > 0 && bias != "none")
            {
                throw new MinnowException($"{path}: bias \"{bias}\" is not supported (only \"none\").");
            }

            foreach (string unsupported in new[] { "rank_pattern", "alpha_pattern", "modules_to_save" })
            {
                if (Present(unsupported))
                {
                    throw new MinnowException($"{path}: {unsupported} is not supported (it must be empty).");
                }
            }

            if (!root.TryGetProperty("target_modules", out var tm))
            {
                throw new MinnowException($"{path}: no target_modules.");
            }

            string list = tm.ValueKind switch
            {
                JsonValueKind.Array => string.Join(",", tm.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString() : e.ToString())),
                JsonValueKind.String => tm.GetString()!,
                _ => throw new MinnowException($"{path}: target_modules must be a list of module names."),
            };

            return new LoraConfig
            {
                Rank = rank,
                Alpha = alpha,
                Targets = LoraTargets.ParseList(list, $"{path}: target_modules"),
                Dropout = root.TryGetProperty("lora_dropout", out var d) && d.ValueKind == JsonValueKind.Number ? d.GetSingle() : 0f,
                BaseModel = Text("base_model_name_or_path") is { Length: > 0 } b ? b : null,
                UseRsLora = Flag("use_rslora"),
            };
        }
    }

    /// <summary>
    /// Writes a PEFT adapter folder: <paramref name="tensors"/> as adapter_model.safetensors, then
    /// adapter_config.json, each atomically (temporary file + rename).
    /// </summary>
    public void Save(string folder, SafetensorsWriter tensors)
    {
        Directory.CreateDirectory(folder);
        tensors.AddMetadata("format", "pt");
        tensors.Save(Path.Combine(folder, WeightsFile));
        AtomicFile.WriteAllText(Path.Combine(folder, ConfigFile), ToJson());
    }
}

/// <summary>
/// A LoRA adapter loaded for a particular model: for each adapted linear layer W [out, in], A [r, in] and B [out, r]
/// with the scale folded into B, so that the layer computes y = W·x + scale·B·(A·x). Applied unmerged on top of
/// any storage type of W (F32, F16, BF16, Q8_0, Q4_0, ...), or merged into float32 weights.
/// </summary>
/// <remarks>
/// A model loaded from GGUF keeps llama.cpp's q/k row order (permuted for interleaved RoPE); B's rows of q_proj
/// and k_proj are permuted the same way at load, so a Hugging Face adapter applies to either layout.
/// </remarks>
public sealed unsafe class LoraAdapter : IDisposable
{
    /// <summary>One adapted layer: A [rank, in] and scale·B [out, rank], in the base model's row order.</summary>
    public sealed class Module
    {
        internal Module(int layer, LoraTarget target, int outDim, int inDim, int rank, float[] a, float[] scaledB)
        {
            Layer = layer;
            Target = target;
            Out = outDim;
            In = inDim;
            Rank = rank;
            A = a;
            ScaledB = scaledB;
            ScaledBt = new float[scaledB.Length];
            for (int o = 0; o < outDim; o++)
            {
                for (int j = 0; j < rank; j++)
                {
                    ScaledBt[((long)j * outDim) + o] = scaledB[((long)o * rank) + j];
                }
            }
        }

        public int Layer { get; }

        public LoraTarget Target { get; }

        public int Out { get; }

        public int In { get; }

        public int Rank { get; }

        public float[] A { get; }

        public float[] ScaledB { get; }

        /// <summary>scale·Bᵀ [rank, out], for the few-token path (decoding).</summary>
        internal float[] ScaledBt { get; }
    }

    private static long s_loads;
    private readonly Dictionary<string, Module> _byWeight;

    private LoraAdapter(string source, LoraConfig config, Dictionary<string, Module> modules)
    {
        Source = source;
        Config = config;
        _byWeight = modules;
        CacheKey = $"{source}#{Interlocked.Increment(ref s_loads)}";
    }

    /// <summary>The adapter folder (or sealed package).</summary>
    public string Source { get; }

    /// <summary>
    /// Names this load of the adapter for the engine's prefix cache: KV computed with it is reused only by sequences
    /// with the same loaded weights (a folder retrained and loaded again under the same path gets a new key).
    /// </summary>
    public string CacheKey { get; }

    /// <summary>Bytes the adapter's matrices hold in memory (A, scale·B and its transpose).</summary>
    public long MemoryBytes => _byWeight.Values.Sum(m => ((long)m.A.Length + m.ScaledB.Length + m.ScaledBt.Length) * sizeof(float));

    public LoraConfig Config { get; }

    /// <summary>Adapted layers by the name of their base weight (<c>model.layers.0.self_attn.q_proj.weight</c>).</summary>
    public IReadOnlyDictionary<string, Module> Modules => _byWeight;

    /// <summary>Trainable values in A and B.</summary>
    public long ParameterCount => _byWeight.Values.Sum(m => ((long)m.Rank * m.In) + ((long)m.Out * m.Rank));

    /// <summary>
    /// Loads a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors) for a model with
    /// <paramref name="model"/>'s shape. Tensors with a wrong name, target or shape are a one-line error naming the
    /// tensor and the expected shape.
    /// </summary>
    public static LoraAdapter Load(string folder, ModelConfig model)
    {
        if (!Directory.Exists(folder))
        {
            throw new MinnowException($"{folder}: adapter folder not found.");
        }

        if (model.Architecture != Architecture.Llama)
        {
            throw new MinnowException($"{folder}: LoRA adapters apply to Llama-architecture models; this model is {model.ModelType}.");
        }

        var config = LoraConfig.Load(Path.Combine(folder, LoraConfig.ConfigFile));
        string weightsPath = Path.Combine(folder, LoraConfig.WeightsFile);
        if (!File.Exists(weightsPath))
        {
            throw new MinnowException($"{weightsPath}: not found (only safetensors adapters are supported).");
        }

        using var file = SafetensorsFile.Open(weightsPath);
        return Load(Path.GetFullPath(folder), config, file, weightsPath, model);
    }

    /// <summary>
    /// Loads a PEFT adapter from <paramref name="files"/> (a sealed package decrypted into memory, or a folder): the
    /// bytes are read where they are, and nothing is written to disk.
    /// </summary>
    public static LoraAdapter Load(IModelFiles files, ModelConfig model, string? source = null)
    {
        ArgumentNullException.ThrowIfNull(files);
        ArgumentNullException.ThrowIfNull(model);
        if (!files.Contains(LoraConfig.ConfigFile) || !files.Contains(LoraConfig.WeightsFile))
        {
            throw new MinnowException($"{files.Location}: not a PEFT LoRA adapter (it must hold {LoraConfig.ConfigFile} and {LoraConfig.WeightsFile}).");
        }

        if (model.Architecture != Architecture.Llama)
        {
            throw new MinnowException($"{files.Location}: LoRA adapters apply to Llama-architecture models; this model is {model.ModelType}.");
        }

        var config = LoraConfig.Parse(files.ReadAllBytes(LoraConfig.ConfigFile), files.DisplayName(LoraConfig.ConfigFile));
        using var file = SafetensorsFile.Open(files.Open(LoraConfig.WeightsFile));
        return Load(source ?? files.Location, config, file, files.DisplayName(LoraConfig.WeightsFile), model);
    }

    private static LoraAdapter Load(string source, LoraConfig config, SafetensorsFile file, string weightsPath, ModelConfig model)
    {
        var found = new Dictionary<(int, LoraTarget), (Tensor? A, Tensor? B)>();
        foreach (var (name, t) in file.Tensors)
        {
            if (!LoraTargets.TryParsePeftName(name, out int layer, out var target, out bool isA))
            {
                throw new MinnowException($"{weightsPath}: tensor '{SafeText.Of(name)}' is not a LoRA weight of a Llama block " +
                    "(expected base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight and the like).");
            }

            if (!config.Targets.Contains(target))
            {
                throw new MinnowException($"{weightsPath}: tensor '{SafeText.Of(name)}' adapts {LoraTargets.Name(target)}, which is not in target_modules of {LoraConfig.ConfigFile}.");
            }

            if (layer >= model.Layers)
            {
                throw new MinnowException($"{weightsPath}: tensor '{SafeText.Of(name)}' is for layer {layer} but the model has {model.Layers} layers.");
            }

            var (outDim, inDim) = LoraTargets.Shape(model, layer, target);
            long[] expected = isA ? [config.Rank, inDim] : [outDim, config.Rank];
            if (t.Rank != 2 || t.Shape[0] != expected[0] || t.Shape[1] != expected[1])
            {
                throw new MinnowException($"{weightsPath}: tensor '{SafeText.Of(name)}' has shape {t.ShapeText} but the model expects [{expected[0]}, {expected[1]}] (r = {config.Rank}).");
            }

            if (t.Type is not (DType.F32 or DType.F16 or DType.BF16))
            {
                throw new MinnowException($"{weightsPath}: tensor '{SafeText.Of(name)}' is {t.Type.Name()}; LoRA weights must be F32, F16 or BF16.");
            }

            var entry = found.GetValueOrDefault((layer, target));
            found[(layer, target)] = isA ? (t, entry.B) : (entry.A, t);
        }

        if (found.Count == 0)
        {
            throw new MinnowException($"{weightsPath}: no LoRA tensors.");
        }

        var modules = new Dictionary<string, Module>(StringComparer.Ordinal);
        foreach (var ((layer, target), (a, b)) in found.OrderBy(e => e.Key))
        {
            if (a is null || b is null)
            {
                throw new MinnowException($"{weightsPath}: tensor '{LoraTargets.PeftName(layer, target, a is null)}' is missing (every lora_A needs its lora_B).");
            }

            var (outDim, inDim) = LoraTargets.Shape(model, layer, target);
            float[] aValues = a.ToFloatArray();
            float[] bValues = b.ToFloatArray();
            float scale = config.Scale;
            for (int i = 0; i < bValues.Length; i++)
            {
                bValues[i] *= scale;
            }

            if (model.RopeStyle.HasInterleavedRows() && target is LoraTarget.QProj or LoraTarget.KProj)
            {
                int heads = target == LoraTarget.QProj ? model.HeadsOf(layer) : model.KvHeadsOf(layer);
                bValues = PermuteRows(bValues, InterleavedRopeOrder(heads, model.HeadDim, model.RotaryDim), config.Rank);
            }

            modules[LoraTargets.WeightName(layer, target)] = new Module(layer, target, outDim, inDim, config.Rank, aValues, bValues);
        }

        return new LoraAdapter(source, config, modules);
    }

    /// <summary>
    /// For each row of llama.cpp's q/k layout, the Hugging Face row it holds: within each head, rows (i, i + d/2)
    /// become rows (2i, 2i + 1).
    /// </summary>
    public static int[] InterleavedRopeOrder(int heads, int headDim, int rotaryDim)
    {
        var order = new int[heads * headDim];
        int half = rotaryDim / 2;
        for (int h = 0; h < heads; h++)
        {
            int o = h * headDim;
            for (int i = 0; i < half; i++)
            {
                order[o + (2 * i)] = o + i;
                order[o + (2 * i) + 1] = o + half + i;
            }

            for (int i = rotaryDim; i < headDim; i++)
            {
                order[o + i] = o + i;
            }
        }

        return order;
    }

    /// <summary>Row <c>to</c> of the result is row <c>order[to]</c> of <paramref name="values"/>.</summary>
    public static float[] PermuteRows(float[] values, int[] order, int rowLength)
    {
        var result = new float[values.Length];
        for (int to = 0; to < order.Length; to++)
        {
            Array.Copy(values, (long)order[to] * rowLength, result, (long)to * rowLength, rowLength);
        }

        return result;
    }

    /// <summary>The inverse of <see cref="PermuteRows"/>: row <c>order[i]</c> of the result is row i of the input.</summary>
    public static float[] UnpermuteRows(float[] values, int[] order, int rowLength)
    {
        var result = new float[values.Length];
        for (int from = 0; from < order.Length; from++)
        {
            Array.Copy(values, (long)from * rowLength, result, (long)order[from] * rowLength, rowLength);
        }

        return result;
    }

    /// <summary>
    /// y += scale·B·(A·x) for the rows of x [count, in] when <paramref name="weight"/> is adapted (nothing otherwise):
    /// for each row, r dot products with A's rows, then y += Σ_j (A·x)_j · (scale·B)ᵀ_j. Each row is computed alone, the
    /// same way whatever the other rows of the step, and the adapter is only read: any number of steps share it.
    /// </summary>
    public void Apply(Tensor weight, float* x, int count, float* y)
    {
        if (!_byWeight.TryGetValue(weight.Name, out var m))
        {
            return;
        }

        fixed (float* a = m.A, bt = m.ScaledBt)
        {
            for (int t = 0; t < count; t++)
            {
                float* xt = x + ((long)t * m.In), yt = y + ((long)t * m.Out);
                for (int j = 0; j < m.Rank; j++)
                {
                    VectorMath.Axpy(VectorMath.Dot(xt, a + ((long)j * m.In), m.In), bt + ((long)j * m.Out), yt, m.Out);
                }
            }
        }
    }

    /// <summary>weight [out, in] += scale·B·A for an adapted layer (float32 row-major, the base model's row order).</summary>
    public void MergeInto(Module m, Span<float> weight, WorkerPool? pool = null)
    {
        if (weight.Length != (long)m.Out * m.In)
        {
            throw new ArgumentException($"expected {m.Out}×{m.In} weights, got {weight.Length}.", nameof(weight));
        }

        fixed (float* w = weight, a = m.A, b = m.ScaledB)
        {
            Gemm.Multiply(m.Out, m.In, m.Rank, b, m.Rank, false, a, m.In, false, w, m.In, true, pool);
        }
    }

    public void Dispose()
    {
    }
}
