using Minnow.Formats.Gguf;
using Minnow.Kernels;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Loading;

/// <summary>
/// Builds a model from a GGUF file: the config from the <c>{arch}.*</c> metadata, the weights as views of the
/// mapped tensors under Hugging Face names. llama.cpp stores Llama's q/k rows permuted for its interleaved RoPE,
/// so a GGUF "llama" model runs with <see cref="RopeStyle.Interleaved"/> instead of being permuted back.
/// </summary>
public static unsafe class GgufModelReader
{
    public static (ModelConfig Config, WeightSet Weights) Read(GgufFile file)
    {
        string source = file.Path;
        var m = file.Metadata;
        string arch = file.Architecture ?? throw new MinnowException($"{source}: no general.architecture in the GGUF metadata.");
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var t in file.Tensors)
        {
            string? hf = GgufNames.ToHuggingFace(arch, t.Name);
            if (hf != null)
            {
                tensors[hf] = new Tensor(hf, t.Type, t.Shape, t.Data, t.Owner);
            }
        }

        int Required(string key) => m.TryGetInt($"{arch}.{key}", out int v)
            ? v
            : throw new MinnowException($"{source}: GGUF metadata '{arch}.{key}' is missing.");

        string embedName = arch == "gpt2" ? "wte.weight" : arch == "gptneox" ? "gpt_neox.embed_in.weight" : "model.embed_tokens.weight";
        int vocab = m.TryGetInt($"{arch}.vocab_size", out int vs) ? vs
            : tensors.TryGetValue(embedName, out var embed) ? embed.Rows
            : throw new MinnowException($"{source}: cannot tell the vocabulary size (no {arch}.vocab_size and no token_embd.weight).");
        // llama.cpp's "deci" (and a structurally pruned Llama exported as one) lists head counts and MLP widths per layer.
        int[]? PerLayer(string key) => m.TryGetArray<int>($"{arch}.{key}", out var values) ? values : null;
        int[]? layerHeads = PerLayer("attention.head_count"), layerKvHeads = PerLayer("attention.head_count_kv"), layerFfn = PerLayer("feed_forward_length");
        int hidden = Required("embedding_length");
        int heads = layerHeads?.Max() ?? Required("attention.head_count");
        int kvHeads = layerKvHeads?.Max() ?? m.GetInt($"{arch}.attention.head_count_kv", heads);
        int headDim = m.GetInt($"{arch}.attention.key_length", hidden / heads);
        int? bos = m.TryGetInt("tokenizer.ggml.bos_token_id", out int b) ? b : null;
        int? eos = m.TryGetInt("tokenizer.ggml.eos_token_id", out int e) ? e : null;
        float[]? ropeFactors = null;
        if (file.TryGetTensor("rope_freqs.weight", out var freqs))
        {
            ropeFactors = freqs.ToFloatArray();
        }

        var config = arch switch
        {
            "llama" or "qwen2" or "mistral" or "deci" => new ModelConfig
            {
                Architecture = Architecture.Llama,
                ModelType = arch == "qwen2" ? "qwen2" : "llama",
                HiddenSize = hidden,
                IntermediateSize = layerFfn?.Max() ?? Required("feed_forward_length"),
                LayerHeads = layerHeads,
                LayerKvHeads = layerKvHeads,
                LayerIntermediate = layerFfn,
                Layers = Required("block_count"),
                Heads = heads,
                KvHeads = kvHeads,
                HeadDim = headDim,
                RotaryDim = m.GetInt($"{arch}.rope.dimension_count", headDim),
                RopeStyle = arch == "qwen2" ? RopeStyle.RotateHalf : RopeStyle.Interleaved,
                RopeTheta = m.TryGetDouble($"{arch}.rope.freq_base", out double theta) ? theta : 10000,
                RopeFrequencyFactors = ropeFactors,
                VocabSize = vocab,
                MaxPositions = m.GetInt($"{arch}.context_length", 2048),
                NormEps = m.GetFloat($"{arch}.attention.layer_norm_rms_epsilon", 1e-5f),
                TieEmbeddings = !tensors.ContainsKey("lm_head.weight"),
                QkvBias = tensors.ContainsKey("model.layers.0.self_attn.q_proj.bias"),
                BosTokenId = bos,
                EosTokenId = eos,
            },
            "gptneox" => new ModelConfig
            {
                Architecture = Architecture.GptNeoX,
                ModelType = "gpt_neox",
                HiddenSize = hidden,
                IntermediateSize = Required("feed_forward_length"),
                Layers = Required("block_count"),
                Heads = heads,
                KvHeads = heads,
                HeadDim = hidden / heads,
                RotaryDim = m.GetInt($"{arch}.rope.dimension_count", hidden / heads),
                RopeTheta = m.TryGetDouble($"{arch}.rope.freq_base", out double neoxTheta) ? neoxTheta : 10000,
                VocabSize = vocab,
                MaxPositions = m.GetInt($"{arch}.context_length", 2048),
                NormEps = m.GetFloat($"{arch}.attention.layer_norm_epsilon", 1e-5f),
                TieEmbeddings = !tensors.ContainsKey("embed_out.weight"),
                ParallelResidual = m.GetBool($"{arch}.use_parallel_residual", true),
                FusedQkvPerHead = false,
                Activation = Activation.Gelu,
                BosTokenId = bos,
                EosTokenId = eos,
            },
            "gpt2" => new ModelConfig
            {
                Architecture = Architecture.Gpt2,
                ModelType = "gpt2",
                HiddenSize = hidden,
                IntermediateSize = Required("feed_forward_length"),
                Layers = Required("block_count"),
                Heads = heads,
                KvHeads = heads,
                HeadDim = hidden / heads,
                RotaryDim = 0,
                VocabSize = vocab,
                MaxPositions = Required("context_length"),
                NormEps = m.GetFloat($"{arch}.attention.layer_norm_epsilon", 1e-5f),
                TieEmbeddings = !tensors.ContainsKey("lm_head.weight"),
                Conv1DLayout = false,
                Activation = Activation.GeluTanh,
                BosTokenId = bos,
                EosTokenId = eos,
            },
            _ => throw new MinnowException($"{source}: GGUF architecture '{arch}' is not supported; supported: llama, qwen2, deci, gptneox, gpt2."),
        };

        return (config, new WeightSet(tensors, source, file));
    }
}
