using System.Buffers.Binary;
using Minnow.Kernels;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Formats.Llama2c;

/// <summary>
/// A llama2.c checkpoint (<c>run.c</c>'s format): a header of 7 int32 (dim, hidden_dim, n_layers, n_heads,
/// n_kv_heads, vocab_size — negative when the classifier is not shared — and seq_len), then float32 weights.
/// Tensors are views into the memory-mapped file under Hugging Face Llama names; RoPE is interleaved, as run.c's.
/// </summary>
public static unsafe class Llama2cCheckpoint
{
    public static (ModelConfig Config, WeightSet Weights) Open(string path) => Open(MappedFile.Open(path));

    /// <summary>Reads an opened checkpoint (a memory map, or a decrypted file in memory); takes ownership of it.</summary>
    public static (ModelConfig Config, WeightSet Weights) Open(MappedFile file)
    {
        try
        {
            return Read(file, file.Path);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static (ModelConfig, WeightSet) Read(MappedFile file, string path)
    {
        if (file.Length < 28)
        {
            throw new MinnowException($"{path}: too short for a llama2.c checkpoint header (28 bytes).");
        }

        var header = new int[7];
        for (int i = 0; i < 7; i++)
        {
            header[i] = BinaryPrimitives.ReadInt32LittleEndian(file.Span(i * 4, 4));
        }

        int dim = header[0], hidden = header[1], layers = header[2], heads = header[3], kvHeads = header[4];
        bool shared = header[5] > 0;
        int vocab = Math.Abs(header[5]), seqLen = header[6];
        if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kvHeads <= 0 || vocab == 0 || seqLen <= 0 ||
            dim % heads != 0 || heads % kvHeads != 0 || dim > 1 << 16 || hidden > 1 << 18 || layers > 1024 || seqLen > 1 << 20)
        {
            throw new MinnowException($"{path}: not a llama2.c checkpoint (header {string.Join(", ", header)} is not a valid model shape).");
        }

        int headDim = dim / heads, kvDim = kvHeads * headDim;
        var config = new ModelConfig
        {
            Architecture = Architecture.Llama,
            ModelType = "llama",
            HiddenSize = dim,
            IntermediateSize = hidden,
            Layers = layers,
            Heads = heads,
            KvHeads = kvHeads,
            HeadDim = headDim,
            RotaryDim = headDim,
            RopeStyle = RopeStyle.Interleaved,
            VocabSize = vocab,
            MaxPositions = seqLen,
            NormEps = 1e-5f,
            TieEmbeddings = shared,
            BosTokenId = 1,
            EosTokenId = 2,
        };

        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        long offset = 28;
        Tensor Take(string name, params long[] shape)
        {
            var t = new Tensor(name, DType.F32, shape, file.Pointer + offset, file);
            if (offset + t.ByteSize > file.Length)
            {
                throw new MinnowException($"{path}: truncated llama2.c checkpoint (tensor '{name}' ends at byte {offset + t.ByteSize}, the file has {file.Length}).");
            }

            offset += t.ByteSize;
            return t;
        }

        void PerLayer(string suffix, params long[] shape)
        {
            for (int l = 0; l < layers; l++)
            {
                string name = $"model.layers.{l}.{suffix}";
                tensors[name] = Take(name, shape);
            }
        }

        tensors["model.embed_tokens.weight"] = Take("model.embed_tokens.weight", vocab, dim);
        PerLayer("input_layernorm.weight", dim);
        PerLayer("self_attn.q_proj.weight", dim, dim);
        PerLayer("self_attn.k_proj.weight", kvDim, dim);
        PerLayer("self_attn.v_proj.weight", kvDim, dim);
        PerLayer("self_attn.o_proj.weight", dim, dim);
        PerLayer("post_attention_layernorm.weight", dim);
        PerLayer("mlp.gate_proj.weight", hidden, dim);
        PerLayer("mlp.down_proj.weight", dim, hidden);
        PerLayer("mlp.up_proj.weight", hidden, dim);
        tensors["model.norm.weight"] = Take("model.norm.weight", dim);
        Take("freq_cis_real", seqLen, headDim / 2);
        Take("freq_cis_imag", seqLen, headDim / 2);
        if (!shared)
        {
            tensors["lm_head.weight"] = Take("lm_head.weight", vocab, dim);
        }

        return (config, new WeightSet(tensors, path, file));
    }
}
