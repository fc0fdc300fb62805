using Minnow.Formats;
using Minnow.Formats.Gguf;
using Minnow.Kernels;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Loading;

/// <summary>
/// Builds a model from a GGUF file: the config from the <c>{arch}.*</c> metadata, the weights as views of the
/// mapped tensors under Hugging Face names. llama.cpp stores Llama's q/k rows permuted for its interleaved RoPE; the
/// rows stay as stored and the model runs <see cref="RopeStyle.InterleavedRows"/>, which puts each q/k head vector
/// back in Hugging Face order before rotating it, so the cached keys and attention sums are the checkpoint's own and
/// an exported model reloads with bit-identical logits (partial rotary runs <see cref="RopeStyle.Interleaved"/>).
/// Tensors in types Minnow has no kernels for (llama.cpp's Q4_1, Q5_0, Q5_1, Q8_1 and K-quants, see
/// <see cref="DTypeInfo.IsLoadOnly"/>) are dequantized once, exactly, into F32 native memory the weights own; a
/// note says so.
/// </summary>
public static unsafe class GgufModelReader
{
    public static (ModelConfig Config, WeightSet Weights) Read(GgufFile file) => Read(file, notes: null);

    /// <summary>As <see cref="Read(GgufFile)"/>, adding to <paramref name="notes"/> a line about any conversion at load.</summary>
    public static (ModelConfig Config, WeightSet Weights) Read(GgufFile file, ICollection<string>? notes)
    {
        var owner = new GgufWeightsOwner(file);
        try
        {
            return Read(file, owner, notes);
        }
        catch
        {
            owner.DisposeConverted();
            throw;
        }
    }

    /// <summary>Embedding tables that are looked up, not multiplied (when the model has a separate output head).</summary>
    private static readonly string[] EmbeddingNames = ["model.embed_tokens.weight", "gpt_neox.embed_in.weight", "wte.weight", "transformer.wte.weight"];

    private static readonly string[] HeadNames = ["lm_head.weight", "embed_out.weight"];

    /// <summary>
    /// When a model's weight matrices are mostly in an integer block format (Q8_0, Q4_0, INT4 groups), the line
    /// saying how many are not (F16/F32/BF16 — rows whose length is not a multiple of 32 cannot be stored in blocks)
    /// and so run on float kernels with float activations; null when there are none, or nothing is quantized.
    /// </summary>
    public static string? FloatKernelFallbackNote(IReadOnlyDictionary<string, Tensor> tensors, string source)
    {
        bool tied = !HeadNames.Any(tensors.ContainsKey);
        var matrices = tensors.Values
            .Where(t => t.Rank == 2 && !t.Name.EndsWith("wpe.weight", StringComparison.Ordinal) && (tied || !EmbeddingNames.Contains(t.Name)))
            .ToList();
        int quantized = matrices.Count(t => t.Type is DType.Q8_0 or DType.Q4_0 || t.Type.IsIntGroup());
        var fallback = matrices.Where(t => t.Type is DType.F16 or DType.F32 or DType.BF16).ToList();
        if (quantized == 0 || fallback.Count == 0)
        {
            return null;
        }

        string types = string.Join(", ", fallback.GroupBy(t => t.Type).OrderBy(g => g.Key).Select(g => $"{g.Count()} {g.Key.Name()}"));
        string lengths = string.Join(", ", fallback.Select(t => t.Shape[^1]).Distinct().Order());
        return $"warning: {source}: {fallback.Count} of {matrices.Count} weight matrices ({types}; rows of {lengths}) have no INT8 kernel " +
            "and fall back to float kernels with float activations.";
    }

    private static (ModelConfig Config, WeightSet Weights) Read(GgufFile file, GgufWeightsOwner owner, ICollection<string>? notes)
    {
        string source = file.Path;
        var m = file.Metadata;
        string arch = file.Architecture ?? throw new MinnowException($"{source}: no general.architecture in the GGUF metadata.");
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var converted = new SortedDictionary<DType, int>();
        long convertedFileBytes = 0, convertedBytes = 0;
        foreach (var t in file.Tensors)
        {
            string? hf = GgufNames.ToHuggingFace(arch, t.Name);
            if (hf == null)
            {
                continue;
            }

            if (t.Type == DType.I8)
            {
                tensors[hf] = RowScaledToQ8_0(file, t, hf, owner);
            }
            else if (t.Type.IsLoadOnly())
            {
                var f32 = ToF32(t, hf, owner);
                converted[t.Type] = converted.GetValueOrDefault(t.Type) + 1;
                convertedFileBytes += t.ByteSize;
                convertedBytes += f32.ByteSize;
                tensors[hf] = f32;
            }
            else
            {
                tensors[hf] = new Tensor(hf, t.Type, t.Shape, t.Data, t.Owner);
            }
        }

        if (converted.Count > 0 && notes != null)
        {
            int count = converted.Values.Sum();
            string types = string.Join(", ", converted.Select(c => $"{c.Value} {c.Key.Name()}"));
            notes.Add($"{file.FileName}: {count} tensor{(count == 1 ? "" : "s")} ({types}) converted to F32 at load, as Minnow has no kernels for " +
                $"{(converted.Count == 1 ? "this type" : "these types")} ({convertedFileBytes / 1048576.0:0.0} MiB in the file, {convertedBytes / 1048576.0:0.0} MiB in memory).");
        }

        if (notes != null && FloatKernelFallbackNote(tensors, file.FileName) is { } fallback)
        {
            notes.Add(fallback);
        }

        int Required(string key) => m.TryGetInt($"{arch}.{key}", out int v)
            ? v
            : throw new MinnowException($"{source}: GGUF metadata '{arch}.{SafeText.Of(key)}' is missing.");

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
            ropeFactors = DequantizeKQuants.ToFloats(freqs);
        }

        int rotaryDim = m.GetInt($"{arch}.rope.dimension_count", headDim);
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
                RotaryDim = rotaryDim,
                RopeStyle = arch == "qwen2" ? RopeStyle.RotateHalf : rotaryDim == headDim ? RopeStyle.InterleavedRows : RopeStyle.Interleaved,
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

        return (config, new WeightSet(tensors, source, owner));
    }

    /// <summary>The name of the per-row scale tensor of an I8 matrix (INT8 per output channel).</summary>
    public static string RowScaleName(string ggufName) => ggufName + ".scale";

    /// <summary>
    /// An I8 matrix [rows, cols] with its F16 per-row scales (<see cref="RowScaleName"/>) as Q8_0 blocks that all carry
    /// the row's scale: the same values exactly, in the layout the integer kernels run.
    /// </summary>
    private static Tensor RowScaledToQ8_0(GgufFile file, Tensor codes, string name, GgufWeightsOwner owner)
    {
        string scaleName = RowScaleName(codes.Name);
        var scales = file.Tensors.FirstOrDefault(s => s.Name == scaleName)
            ?? throw new MinnowException($"{file.FileName}: I8 tensor '{codes.Name}' has no per-row scale tensor '{scaleName}'.");
        if (codes.Rank != 2 || codes.Columns % 32 != 0 || scales.Type != DType.F16 || scales.ElementCount != codes.Rows)
        {
            throw new MinnowException($"{file.FileName}: I8 tensor '{codes.Name}' must be [rows, a multiple of 32 columns] with {codes.Rows} F16 scales in " +
                $"'{scaleName}' (found {codes.Columns} columns, {scales.ElementCount} {scales.Type.Name()} scales).");
        }

        int rows = codes.Rows, cols = codes.Columns, blocks = cols / 32;
        var buffer = owner.Allocate(DType.Q8_0.ByteCount(codes.ElementCount));
        byte* destination = (byte*)buffer.Pointer;
        for (long r = 0; r < rows; r++)
        {
            ushort scale = ((ushort*)scales.Data)[r];
            for (int b = 0; b < blocks; b++)
            {
                byte* block = destination + (((r * blocks) + b) * 34);
                *(ushort*)block = scale;
                Buffer.MemoryCopy(codes.Data + (r * cols) + (b * 32), block + 2, 32, 32);
            }
        }

        return new Tensor(name, DType.Q8_0, codes.Shape, buffer.Pointer, buffer);
    }

    /// <summary>Dequantizes a tensor into a new F32 tensor backed by native memory that <paramref name="owner"/> keeps.</summary>
    private static Tensor ToF32(Tensor t, string name, GgufWeightsOwner owner)
    {
        var buffer = owner.Allocate(t.ElementCount * sizeof(float));
        nint source = (nint)t.Data, destination = (nint)buffer.Pointer;
        int rows = t.Rows, cols = t.Columns;
        long rowBytes = t.RowBytes;
        var type = t.Type;
        const int RowsPerTask = 64;
        Parallel.For(0, (rows + RowsPerTask - 1) / RowsPerTask, chunk =>
        {
            for (int r = chunk * RowsPerTask, end = Math.Min(rows, r + RowsPerTask); r < end; r++)
            {
                DequantizeKQuants.Row(type, (byte*)source + (r * rowBytes), new Span<float>((float*)destination + ((long)r * cols), cols));
            }
        });
        return new Tensor(name, DType.F32, t.Shape, buffer.Pointer, buffer);
    }

    /// <summary>What the weights of a GGUF model own: the mapped file and the buffers of converted tensors.</summary>
    private sealed class GgufWeightsOwner(GgufFile file) : IDisposable
    {
        private readonly List<NativeBuffer> _buffers = [];

        public NativeBuffer Allocate(long bytes)
        {
            var buffer = new NativeBuffer(bytes);
            _buffers.Add(buffer);
            return buffer;
        }

        /// <summary>Frees the converted tensors only (the caller still owns the file when reading fails).</summary>
        public void DisposeConverted()
        {
            _buffers.ForEach(b => b.Dispose());
            _buffers.Clear();
        }

        public void Dispose()
        {
            DisposeConverted();
            file.Dispose();
        }
    }
}
