using Minnow.Formats.Gguf;
using Minnow.Kernels;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Export;

/// <summary>
/// Writes a model as a GGUF file that llama.cpp runs: llama.cpp's tensor names and metadata, Llama's q/k rows
/// permuted for its interleaved RoPE, GPT-NeoX's fused qkv regrouped as [q | k | v], GPT-2's Conv1D weights
/// transposed, llama3 RoPE scaling as a <c>rope_freqs.weight</c> tensor. Matrices are stored in the requested
/// type (rows whose length is not a multiple of 32 fall back to F16 for block types; Q4_0 keeps the embedding and
/// output head at Q8_0); vectors stay F32. The sparse types (Minnow's, for pruned models) store a matrix with at
/// least <see cref="SparseMatrix.MinimumSparsity"/> zeros as a <see cref="SparseMatrix"/> (the embedding and output
/// head too, when <c>prune --include-embeddings</c> pruned them) and the others in the dense type of the same
/// precision (F16, or Q8_0).
/// </summary>
public static class GgufExporter
{
    public static readonly IReadOnlyList<DType> SupportedTypes = [DType.F32, DType.F16, DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q4_1_G64, DType.Q4_1_G128, DType.Q3_1_G32, DType.Q3_1_G64, DType.Q3_1_G128, DType.SparseF16, DType.SparseQ8, DType.SparseI8];

    /// <param name="rowScaledInt8">
    /// Write every Q8_0 matrix whose blocks all carry their row's scale (INT8 per output channel, <c>quantize --scheme
    /// int8</c>) as I8 codes plus one F16 scale per row (a companion <c>NAME.scale</c> tensor): 8 bits per weight plus 16 per
    /// row instead of Q8_0's 8.5. Minnow loads them back into the same Q8_0 blocks; llama.cpp does not read them.
    /// </param>
    public static void Export(TransformerModel model, string path, DType type, Action<GgufWriter>? addTokenizer = null,
        IProgress<(int Done, int Total)>? progress = null, CancellationToken cancellation = default, bool rowScaledInt8 = false)
    {
        if (!SupportedTypes.Contains(type))
        {
            throw new MinnowException($"GGUF export supports f32, f16, q8_0, q4_0 and q4_1 (and Minnow's q4_1_g64 / q4_1_g128, q3_1_g32 / q3_1_g64 / q3_1_g128, sparse-f16 / sparse-q8 / sparse-i8), not {type.Name()}.");
        }

        var c = model.Config;
        string arch = c.HasPerLayerShapes ? PerLayerArchitecture(c, model.Weights.Source) : GgufNames.ArchitectureOf(c);
        var writer = new GgufWriter();
        WriteMetadata(writer, c, arch, type);
        addTokenizer?.Invoke(writer);

        var tensors = model.Weights.All;
        int done = 0;
        foreach (var (name, tensor) in tensors.OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            cancellation.ThrowIfCancellationRequested();
            string hfName = arch == "gpt2" && name.StartsWith("transformer.", StringComparison.Ordinal) ? name["transformer.".Length..] : name;
            string? ggufName = GgufNames.FromHuggingFace(arch, hfName);
            if (ggufName is null)
            {
                continue;
            }

            var (data, storage, shape) = ToGguf(c, arch, hfName, ggufName, tensor, type);
            if (rowScaledInt8 && storage == DType.Q8_0 && shape.Length == 2 && SplitRowScaled(data, (int)shape[0], (int)shape[1]) is ({ } codes, { } scales))
            {
                writer.AddTensor(ggufName, DType.I8, shape, codes);
                writer.AddTensor(GgufModelReader.RowScaleName(ggufName), DType.F16, [shape[0]], scales);
            }
            else
            {
                writer.AddTensor(ggufName, storage, shape, data);
            }

            progress?.Report((++done, tensors.Count));
        }

        if (c.RopeScaling != null)
        {
            var factors = RopeScalingFactors(c);
            writer.AddTensor("rope_freqs.weight", DType.F32, [factors.Length], Dequantize.FromFloats(DType.F32, factors));
        }

        writer.Write(path);
    }

    /// <summary>
    /// A model whose layers differ in head count or MLP width (structured pruning) is written as llama.cpp's
    /// "deci" architecture (Nemotron NAS): a Llama block whose loader reads head_count, head_count_kv and
    /// feed_forward_length as per-layer arrays. llama.cpp's other architectures size every layer alike, so other
    /// models with per-layer shapes cannot be exported.
    /// </summary>
    private static string PerLayerArchitecture(ModelConfig c, string source)
    {
        if (c.Architecture == Architecture.Llama && c.ModelType is "llama" or "mistral" && !c.QkvBias && c.RopeScaling is null)
        {
            return "deci";
        }

        throw new MinnowException($"{source}: its layers differ in head count or MLP width, which llama.cpp reads only for Llama-architecture models " +
            $"without q/k/v bias or RoPE scaling (as its 'deci' architecture); a {c.ModelType} model like this cannot be exported to GGUF. Keep it as safetensors.");
    }

    /// <summary>
    /// Q8_0 rows whose blocks all carry one scale, as int8 codes and the F16 row scales (raw bytes); null when any row
    /// has blocks of different scales.
    /// </summary>
    private static (byte[] Codes, byte[] Scales)? SplitRowScaled(byte[] q8, int rows, int columns)
    {
        int blocks = columns / 32, blockBytes = DType.Q8_0.BlockBytes();
        var codes = new byte[(long)rows * columns];
        var scales = new byte[rows * 2];
        for (int r = 0; r < rows; r++)
        {
            var row = q8.AsSpan(r * blocks * blockBytes, blocks * blockBytes);
            for (int b = 0; b < blocks; b++)
            {
                var block = row.Slice(b * blockBytes, blockBytes);
                if (block[0] != row[0] || block[1] != row[1])
                {
                    return null;
                }

                block[2..].CopyTo(codes.AsSpan((r * columns) + (b * 32), 32));
            }

            row[..2].CopyTo(scales.AsSpan(r * 2, 2));
        }

        return (codes, scales);
    }

    /// <summary>The block index in a Hugging Face tensor name ("model.layers.3.…" → 3), or -1.</summary>
    private static int LayerOf(string hfName)
    {
        const string prefix = "model.layers.";
        if (!hfName.StartsWith(prefix, StringComparison.Ordinal))
        {
            return -1;
        }

        int end = hfName.IndexOf('.', prefix.Length);
        return end > prefix.Length && int.TryParse(hfName.AsSpan(prefix.Length, end - prefix.Length), out int layer) ? layer : -1;
    }

    /// <summary>One number for every layer, or an array of per-layer numbers when the layers differ.</summary>
    private static object PerLayer(ModelConfig c, Func<int, int> perLayer, int uniform) =>
        c.HasPerLayerShapes ? Enumerable.Range(0, c.Layers).Select(l => (uint)perLayer(l)).ToArray() : (uint)uniform;

    private static DType StorageType(DType requested, long[] shape, string name)
    {
        if (shape.Length < 2 || name == "position_embd.weight")
        {
            return DType.F32;
        }

        if (requested.BlockSize() > 1 && shape[^1] % requested.BlockSize() != 0)
        {
            return DType.F16;
        }

        // As llama.cpp's quantizer does, 4-bit files keep the output head (and a tied embedding, which is the head)
        // at higher precision: it is the most sensitive tensor.
        if ((requested == DType.Q4_0 || requested.IsIntGroup()) && name is "output.weight" or "token_embd.weight")
        {
            return DType.Q8_0;
        }

        return requested;
    }

    /// <summary>
    /// A tensor in llama.cpp's layout and storage type. Tensors already quantized (Q8_0/Q4_0, e.g. by
    /// <c>minnow quantize</c>) are written as they are, only their rows reordered, so nothing is quantized twice.
    /// </summary>
    private static unsafe (byte[] Data, DType Type, long[] Shape) ToGguf(ModelConfig c, string arch, string hfName, string ggufName,
        Tensor tensor, DType requested)
    {
        long[] shape = (long[])tensor.Shape.Clone();
        bool transpose = arch == "gpt2" && c.Conv1DLayout && shape.Length == 2 && hfName.StartsWith("h.", StringComparison.Ordinal);
        if (transpose)
        {
            shape = [shape[1], shape[0]];
        }

        int[]? rowOrder = RowOrder(c, arch, hfName, shape);
        DType storage = tensor.Type is DType.Q8_0 or DType.Q4_0 || tensor.Type.IsIntGroup() ? tensor.Type : StorageType(requested, shape, ggufName);
        if (storage == tensor.Type && !transpose && !storage.IsSparse())
        {
            var raw = new ReadOnlySpan<byte>(tensor.Data, checked((int)tensor.ByteSize)).ToArray();
            return (rowOrder is null ? raw : ReorderRows(raw, rowOrder, shape.Length == 2 ? (int)tensor.RowBytes : storage.BlockBytes()), storage, shape);
        }

        float[] values = tensor.ToFloatArray();
        if (transpose)
        {
            values = Transpose(values, (int)shape[1], (int)shape[0]);
        }

        if (rowOrder != null)
        {
            values = ReorderRows(values, rowOrder, RowLength(shape));
        }

        if (storage.IsSparse())
        {
            if (SparseMatrix.Sparsity(values) >= SparseMatrix.MinimumSparsity)
            {
                return (SparseMatrix.Encode(storage, values, (int)shape[0], (int)shape[1]), storage, shape);
            }

            storage = StorageType(SparseMatrix.DenseCounterpart(storage), shape, ggufName);
        }

        return (Dequantize.FromFloats(storage, values), storage, shape);
    }

    /// <summary>For each output row, the source row it comes from; null when the order is unchanged.</summary>
    private static int[]? RowOrder(ModelConfig c, string arch, string hfName, long[] shape)
    {
        bool permuteForInterleavedRope = arch is "llama" or "deci" && c.RopeStyle == RopeStyle.RotateHalf;
        int layer = LayerOf(hfName);
        if (permuteForInterleavedRope && hfName.Contains(".self_attn.q_proj.", StringComparison.Ordinal))
        {
            return InterleaveHalves(layer >= 0 ? c.HeadsOf(layer) : c.Heads, c.HeadDim);
        }

        if (permuteForInterleavedRope && hfName.Contains(".self_attn.k_proj.", StringComparison.Ordinal))
        {
            return InterleaveHalves(layer >= 0 ? c.KvHeadsOf(layer) : c.KvHeads, c.HeadDim);
        }

        if (arch == "gptneox" && c.FusedQkvPerHead && hfName.Contains(".query_key_value.", StringComparison.Ordinal))
        {
            return RegroupQkv(c.Heads, c.HeadDim);
        }

        return null;
    }

    private static int RowLength(long[] shape) => shape.Length == 2 ? (int)shape[1] : 1;

    /// <summary>llama.cpp's permute: within each head, rows (i, i + d/2) become rows (2i, 2i + 1).</summary>
    private static int[] InterleaveHalves(int heads, int headDim)
    {
        var order = new int[heads * headDim];
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
        {
            for (int i = 0; i < half; i++)
            {
                order[(h * headDim) + (2 * i)] = (h * headDim) + i;
                order[(h * headDim) + (2 * i) + 1] = (h * headDim) + half + i;
            }
        }

        return order;
    }

    /// <summary>Per-head [q_h, k_h, v_h] row groups → [all q | all k | all v].</summary>
    private static int[] RegroupQkv(int heads, int headDim)
    {
        var order = new int[3 * heads * headDim];
        for (int h = 0; h < heads; h++)
        {
            for (int part = 0; part < 3; part++)
            {
                for (int i = 0; i < headDim; i++)
                {
                    order[(part * heads * headDim) + (h * headDim) + i] = (h * 3 * headDim) + (part * headDim) + i;
                }
            }
        }

        return order;
    }

    private static T[] ReorderRows<T>(T[] values, int[] order, int rowLength)
    {
        var result = new T[values.Length];
        for (int to = 0; to < order.Length; to++)
        {
            Array.Copy(values, (long)order[to] * rowLength, result, (long)to * rowLength, rowLength);
        }

        return result;
    }

    private static float[] Transpose(float[] values, int rows, int cols)
    {
        var result = new float[values.Length];
        for (int r = 0; r < rows; r++)
        {
            for (int col = 0; col < cols; col++)
            {
                result[((long)col * rows) + r] = values[((long)r * cols) + col];
            }
        }

        return result;
    }

    private static float[] RopeScalingFactors(ModelConfig c)
    {
        var unscaled = new RopeTable(c with { RopeScaling = null, RopeFrequencyFactors = null });
        var scaled = new RopeTable(c with { RopeFrequencyFactors = null });
        return unscaled.InverseFrequencies.Zip(scaled.InverseFrequencies, (u, s) => u / s).ToArray();
    }

    private static void WriteMetadata(GgufWriter w, ModelConfig c, string arch, DType type)
    {
        w.Set("general.architecture", arch);
        w.Set("general.name", "minnow-export");
        w.Set("general.file_type", type switch
        {
            DType.F32 => 0u,
            DType.F16 => 1u,
            DType.Q4_0 => 2u,
            DType.Q4_1 => 3u,
            DType.Q8_0 => 7u,
            _ => 0u,
        });
        w.Set($"{arch}.context_length", (uint)c.MaxPositions);
        w.Set($"{arch}.embedding_length", (uint)c.HiddenSize);
        w.Set($"{arch}.feed_forward_length", PerLayer(c, c.IntermediateOf, c.IntermediateSize));
        w.Set($"{arch}.block_count", (uint)c.Layers);
        w.Set($"{arch}.attention.head_count", PerLayer(c, c.HeadsOf, c.Heads));
        w.Set($"{arch}.vocab_size", (uint)c.VocabSize);
        switch (c.Architecture)
        {
            case Architecture.Llama:
                w.Set($"{arch}.attention.head_count_kv", PerLayer(c, c.KvHeadsOf, c.KvHeads));
                w.Set($"{arch}.attention.layer_norm_rms_epsilon", c.NormEps);
                w.Set($"{arch}.rope.freq_base", (float)c.RopeTheta);
                w.Set($"{arch}.rope.dimension_count", (uint)c.RotaryDim);
                if (c.HeadDim != c.HiddenSize / c.Heads || c.HasPerLayerShapes)
                {
                    w.Set($"{arch}.attention.key_length", (uint)c.HeadDim);
                    w.Set($"{arch}.attention.value_length", (uint)c.HeadDim);
                }

                break;
            case Architecture.GptNeoX:
                w.Set($"{arch}.attention.layer_norm_epsilon", c.NormEps);
                w.Set($"{arch}.rope.freq_base", (float)c.RopeTheta);
                w.Set($"{arch}.rope.dimension_count", (uint)c.RotaryDim);
                w.Set($"{arch}.use_parallel_residual", c.ParallelResidual);
                break;
            case Architecture.Gpt2:
                w.Set($"{arch}.attention.layer_norm_epsilon", c.NormEps);
                break;
        }

        if (c.BosTokenId is int bos)
        {
            w.Set("tokenizer.ggml.bos_token_id", (uint)bos);
        }

        if (c.EosTokenId is int eos)
        {
            w.Set("tokenizer.ggml.eos_token_id", (uint)eos);
        }
    }
}
