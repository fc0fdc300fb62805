using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Minnow.Benchmarking;

/// <summary>One tensor of a model shape, with how a fresh checkpoint initialises it.</summary>
public readonly record struct ShapeTensor(string Name, long[] Shape, TensorInit Init)
{
    public long Elements => Shape.Aggregate(1L, (p, d) => p * d);
}

/// <summary>How <see cref="SyntheticCheckpoint"/> fills a tensor.</summary>
public enum TensorInit
{
    /// <summary>Weights: normal with mean 0 and standard deviation <see cref="SyntheticCheckpoint.WeightStd"/>.</summary>
    Normal,

    /// <summary>Norm scales: 1.</summary>
    Ones,

    /// <summary>Biases: 0.</summary>
    Zeros,
}

/// <summary>
/// The shape of a real model (the numbers of its Hugging Face config.json) — enough to write a randomly
/// initialised checkpoint of the same size. Speed does not depend on the weights' values.
/// </summary>
public sealed record ModelShape
{
    /// <summary>The name <c>minnow synth --like</c> takes, e.g. "smollm2-135m".</summary>
    public required string Name { get; init; }

    /// <summary>The Hugging Face model this is the shape of.</summary>
    public required string Model { get; init; }

    /// <summary>"llama", "qwen2" or "gpt_neox".</summary>
    public required string ModelType { get; init; }

    public required int HiddenSize { get; init; }

    public required int IntermediateSize { get; init; }

    public required int Layers { get; init; }

    public required int Heads { get; init; }

    public required int KvHeads { get; init; }

    public required int VocabSize { get; init; }

    public required int MaxPositions { get; init; }

    public required double NormEps { get; init; }

    public required double RopeTheta { get; init; }

    public required bool TieEmbeddings { get; init; }

    public int? BosTokenId { get; init; }

    public int? EosTokenId { get; init; }

    /// <summary>GPT-NeoX: the fraction of each head that rotates.</summary>
    public double RotaryPct { get; init; } = 1.0;

    /// <summary>GPT-NeoX: attention and MLP read the same input.</summary>
    public bool ParallelResidual { get; init; } = true;

    public int HeadDim => HiddenSize / Heads;

    /// <summary>Every tensor of the checkpoint in Hugging Face names, in the order they are written.</summary>
    public IReadOnlyList<ShapeTensor> Tensors()
    {
        var list = new List<ShapeTensor>();
        long h = HiddenSize, i = IntermediateSize, v = VocabSize, q = (long)Heads * HeadDim, kv = (long)KvHeads * HeadDim;
        void Add(string name, TensorInit init, params long[] shape) => list.Add(new ShapeTensor(name, shape, init));
        switch (ModelType)
        {
            case "llama" or "qwen2":
                Add("model.embed_tokens.weight", TensorInit.Normal, v, h);
                for (int l = 0; l < Layers; l++)
                {
                    string p = $"model.layers.{l}.";
                    Add(p + "input_layernorm.weight", TensorInit.Ones, h);
                    Add(p + "self_attn.q_proj.weight", TensorInit.Normal, q, h);
                    Add(p + "self_attn.k_proj.weight", TensorInit.Normal, kv, h);
                    Add(p + "self_attn.v_proj.weight", TensorInit.Normal, kv, h);
                    if (ModelType == "qwen2")
                    {
                        Add(p + "self_attn.q_proj.bias", TensorInit.Zeros, q);
                        Add(p + "self_attn.k_proj.bias", TensorInit.Zeros, kv);
                        Add(p + "self_attn.v_proj.bias", TensorInit.Zeros, kv);
                    }

                    Add(p + "self_attn.o_proj.weight", TensorInit.Normal, h, q);
                    Add(p + "post_attention_layernorm.weight", TensorInit.Ones, h);
                    Add(p + "mlp.gate_proj.weight", TensorInit.Normal, i, h);
                    Add(p + "mlp.up_proj.weight", TensorInit.Normal, i, h);
                    Add(p + "mlp.down_proj.weight", TensorInit.Normal, h, i);
                }

                Add("model.norm.weight", TensorInit.Ones, h);
                if (!TieEmbeddings)
                {
                    Add("lm_head.weight", TensorInit.Normal, v, h);
                }

                break;

            case "gpt_neox":
                Add("gpt_neox.embed_in.weight", TensorInit.Normal, v, h);
                for (int l = 0; l < Layers; l++)
                {
                    string p = $"gpt_neox.layers.{l}.";
                    Add(p + "input_layernorm.weight", TensorInit.Ones, h);
                    Add(p + "input_layernorm.bias", TensorInit.Zeros, h);
                    Add(p + "post_attention_layernorm.weight", TensorInit.Ones, h);
                    Add(p + "post_attention_layernorm.bias", TensorInit.Zeros, h);
                    Add(p + "attention.query_key_value.weight", TensorInit.Normal, 3 * h, h);
                    Add(p + "attention.query_key_value.bias", TensorInit.Zeros, 3 * h);
                    Add(p + "attention.dense.weight", TensorInit.Normal, h, h);
                    Add(p + "attention.dense.bias", TensorInit.Zeros, h);
                    Add(p + "mlp.dense_h_to_4h.weight", TensorInit.Normal, i, h);
                    Add(p + "mlp.dense_h_to_4h.bias", TensorInit.Zeros, i);
                    Add(p + "mlp.dense_4h_to_h.weight", TensorInit.Normal, h, i);
                    Add(p + "mlp.dense_4h_to_h.bias", TensorInit.Zeros, h);
                }

                Add("gpt_neox.final_layer_norm.weight", TensorInit.Ones, h);
                Add("gpt_neox.final_layer_norm.bias", TensorInit.Zeros, h);
                if (!TieEmbeddings)
                {
                    Add("embed_out.weight", TensorInit.Normal, v, h);
                }

                break;

            default:
                throw new MinnowException($"model shape '{Name}': model_type '{ModelType}' has no tensor list (supported: llama, qwen2, gpt_neox).");
        }

        return list;
    }

    /// <summary>The number of parameters (elements of every tensor; a tied head counts once).</summary>
    public long ParameterCount => Tensors().Sum(t => t.Elements);

    /// <summary>The config.json of the checkpoint (Hugging Face keys), with <c>torch_dtype</c> as given.</summary>
    public string ToConfigJson(string torchDtype = "float32")
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            switch (ModelType)
            {
                case "llama":
                    w.WriteStartArray("architectures");
                    w.WriteStringValue("LlamaForCausalLM");
                    w.WriteEndArray();
                    w.WriteString("model_type", "llama");
                    w.WriteBoolean("attention_bias", false);
                    w.WriteBoolean("mlp_bias", false);
                    break;
                case "qwen2":
                    w.WriteStartArray("architectures");
                    w.WriteStringValue("Qwen2ForCausalLM");
                    w.WriteEndArray();
                    w.WriteString("model_type", "qwen2");
                    w.WriteBoolean("use_sliding_window", false);
                    break;
                case "gpt_neox":
                    w.WriteStartArray("architectures");
                    w.WriteStringValue("GPTNeoXForCausalLM");
                    w.WriteEndArray();
                    w.WriteString("model_type", "gpt_neox");
                    break;
            }

            w.WriteNumber("hidden_size", HiddenSize);
            w.WriteNumber("intermediate_size", IntermediateSize);
            w.WriteNumber("num_hidden_layers", Layers);
            w.WriteNumber("num_attention_heads", Heads);
            if (ModelType == "gpt_neox")
            {
                w.WriteNumber("rotary_pct", RotaryPct);
                w.WriteNumber("rotary_emb_base", RopeTheta);
                w.WriteBoolean("use_parallel_residual", ParallelResidual);
                w.WriteString("hidden_act", "gelu");
                w.WriteNumber("layer_norm_eps", NormEps);
            }
            else
            {
                w.WriteNumber("num_key_value_heads", KvHeads);
                w.WriteNumber("rope_theta", RopeTheta);
                w.WriteNumber("rms_norm_eps", NormEps);
                w.WriteString("hidden_act", "silu");
            }

            w.WriteNumber("vocab_size", VocabSize);
            w.WriteNumber("max_position_embeddings", MaxPositions);
            w.WriteBoolean("tie_word_embeddings", TieEmbeddings);
            if (BosTokenId is int bos)
            {
                w.WriteNumber("bos_token_id", bos);
            }

            if (EosTokenId is int eos)
            {
                w.WriteNumber("eos_token_id", eos);
            }

            w.WriteString("torch_dtype", torchDtype);
            w.WriteString("minnow_synthetic", $"random weights in the shape of {Model}");
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Name} ({ModelType}: {Layers} layers, hidden {HiddenSize}, ffn {IntermediateSize}, heads {Heads}/{KvHeads}, vocab {VocabSize})");
}

/// <summary>
/// The shapes of real models that <c>minnow synth --like NAME</c> writes, copied from their config.json files
/// (HuggingFaceTB/SmolLM2-135M, EleutherAI/pythia-160m, Qwen/Qwen2.5-0.5B, TinyLlama/TinyLlama-1.1B).
/// </summary>
public static class ModelShapes
{
    public static readonly ModelShape SmolLM2_135M = new()
    {
        Name = "smollm2-135m",
        Model = "HuggingFaceTB/SmolLM2-135M",
        ModelType = "llama",
        HiddenSize = 576,
        IntermediateSize = 1536,
        Layers = 30,
        Heads = 9,
        KvHeads = 3,
        VocabSize = 49152,
        MaxPositions = 8192,
        NormEps = 1e-5,
        RopeTheta = 100000,
        TieEmbeddings = true,
        BosTokenId = 1,
        EosTokenId = 2,
    };

    public static readonly ModelShape Pythia160M = new()
    {
        Name = "pythia-160m",
        Model = "EleutherAI/pythia-160m",
        ModelType = "gpt_neox",
        HiddenSize = 768,
        IntermediateSize = 3072,
        Layers = 12,
        Heads = 12,
        KvHeads = 12,
        VocabSize = 50304,
        MaxPositions = 2048,
        NormEps = 1e-5,
        RopeTheta = 10000,
        RotaryPct = 0.25,
        ParallelResidual = true,
        TieEmbeddings = false,
        BosTokenId = 0,
        EosTokenId = 0,
    };

    public static readonly ModelShape Qwen25_05B = new()
    {
        Name = "qwen2.5-0.5b",
        Model = "Qwen/Qwen2.5-0.5B",
        ModelType = "qwen2",
        HiddenSize = 896,
        IntermediateSize = 4864,
        Layers = 24,
        Heads = 14,
        KvHeads = 2,
        VocabSize = 151936,
        MaxPositions = 32768,
        NormEps = 1e-6,
        RopeTheta = 1000000,
        TieEmbeddings = true,
        BosTokenId = 151643,
        EosTokenId = 151643,
    };

    public static readonly ModelShape TinyLlama11B = new()
    {
        Name = "tinyllama-1.1b",
        Model = "TinyLlama/TinyLlama-1.1B",
        ModelType = "llama",
        HiddenSize = 2048,
        IntermediateSize = 5632,
        Layers = 22,
        Heads = 32,
        KvHeads = 4,
        VocabSize = 32000,
        MaxPositions = 2048,
        NormEps = 1e-5,
        RopeTheta = 10000,
        TieEmbeddings = false,
        BosTokenId = 1,
        EosTokenId = 2,
    };

    public static IReadOnlyList<ModelShape> All { get; } = [SmolLM2_135M, Pythia160M, Qwen25_05B, TinyLlama11B];

    public static IEnumerable<string> Names => All.Select(s => s.Name);

    /// <summary>The shape called <paramref name="name"/> (case-insensitive); a clear error listing the names otherwise.</summary>
    public static ModelShape Get(string name) =>
        All.FirstOrDefault(s => s.Name.Equals(name?.Trim(), StringComparison.OrdinalIgnoreCase))
        ?? throw new MinnowException($"unknown model shape '{name}'; known: {string.Join(", ", Names)}.");
}
