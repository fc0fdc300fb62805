using Minnow.Kernels;
using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>
/// A decoder-only transformer: the shared blocks every architecture composes, and the activation buffers they
/// work in (allocated once for a batch of up to <see cref="BatchCapacity"/> tokens and reused, so decoding
/// allocates nothing). Each architecture's <see cref="Forward"/> is one screen that composes these blocks.
/// </summary>
public abstract unsafe class TransformerModel : IDisposable
{
    private readonly RopeTable? _rope;
    private readonly List<NativeBuffer> _buffers = [];
    private NativeBuffer? _cos, _sin;

    protected TransformerModel(ModelConfig config, WeightSet weights, WorkerPool? pool)
    {
        config.Validate(weights.Source);
        Config = config;
        Weights = weights;
        Pool = pool ?? WorkerPool.Shared;
        if (config.RotaryDim > 0)
        {
            _rope = new RopeTable(config);
        }
    }

    public ModelConfig Config { get; }

    public WeightSet Weights { get; }

    protected WorkerPool Pool { get; }

    /// <summary>
    /// When set, sees the input of every linear layer (calibration for quantization and pruning). Null in normal
    /// inference, where it costs one branch per matrix product.
    /// </summary>
    public ILinearInputObserver? Observer { get; set; }

    /// <summary>A LoRA adapter applied unmerged on top of the weights (y += scale·B·A·x); null for none.</summary>
    public LoraAdapter? Adapter { get; set; }

    /// <summary>Most tokens one <see cref="Forward"/> call takes; longer prompts are fed in chunks.</summary>
    public int BatchCapacity { get; private set; }

    // Activation buffers, [BatchCapacity, width] row-major.
    protected float* X, Xb, Xb2, Q, K, V, Qkv, AttnOut, Hb, Hb2;

    /// <summary>
    /// Runs <paramref name="tokens"/> at positions cache.Length.. through the model, appends their keys and values
    /// to the cache, and writes logits: for every token ([tokens, vocab]) when <paramref name="allLogits"/>,
    /// otherwise for the last token only ([vocab]).
    /// </summary>
    public void Forward(ReadOnlySpan<int> tokens, KvCache cache, float* logits, bool allLogits)
    {
        int count = tokens.Length;
        if (count == 0)
        {
            return;
        }

        if (cache.Length + count > cache.Capacity)
        {
            ThrowContextFull(cache, count);
        }

        foreach (int id in tokens)
        {
            if ((uint)id >= (uint)Config.VocabSize)
            {
                ThrowBadToken(id);
            }
        }

        EnsureCapacity(count);
        ForwardLayers(tokens, cache.Length, cache, logits, allLogits);
        cache.Length += count;
    }

    /// <summary>The architecture: embeddings, blocks, final norm and head for tokens at startPos...</summary>
    protected abstract void ForwardLayers(ReadOnlySpan<int> tokens, int startPos, KvCache cache, float* logits, bool allLogits);

    public void EnsureCapacity(int tokens)
    {
        if (tokens <= BatchCapacity)
        {
            return;
        }

        foreach (var b in _buffers)
        {
            b.Dispose();
        }

        _buffers.Clear();
        var c = Config;
        int wide = Math.Max(c.HiddenSize, c.MaxQDim);
        X = Alloc(tokens, wide);
        Xb = Alloc(tokens, wide);
        Xb2 = Alloc(tokens, wide);
        Q = Alloc(tokens, c.MaxQDim);
        K = Alloc(tokens, c.MaxKvDim);
        V = Alloc(tokens, c.MaxKvDim);
        Qkv = Alloc(tokens, c.MaxQDim + (2 * c.MaxKvDim));
        AttnOut = Alloc(tokens, c.MaxQDim);
        Hb = Alloc(tokens, c.MaxIntermediate);
        Hb2 = Alloc(tokens, c.MaxIntermediate);
        _cos ??= NativeBuffer.Floats(Math.Max(1, c.RotaryDim / 2));
        _sin ??= NativeBuffer.Floats(Math.Max(1, c.RotaryDim / 2));
        BatchCapacity = tokens;
    }

    private float* Alloc(int tokens, int width)
    {
        var b = NativeBuffer.Floats((long)tokens * width);
        _buffers.Add(b);
        return b.FloatPointer;
    }

    // ---- Shared blocks ----

    protected void Embed(Tensor table, ReadOnlySpan<int> tokens, float* x)
    {
        int d = Config.HiddenSize;
        for (int t = 0; t < tokens.Length; t++)
        {
            table.ReadRow(tokens[t], new Span<float>(x + ((long)t * d), d));
        }
    }

    /// <summary>Adds learned position embeddings (GPT-2) for positions startPos...</summary>
    protected void AddPositions(Tensor table, int count, int startPos, float* x)
    {
        int d = Config.HiddenSize;
        Span<float> row = stackalloc float[d];
        for (int t = 0; t < count; t++)
        {
            table.ReadRow(startPos + t, row);
            fixed (float* r = row)
            {
                Kernels.Add.Compute(x + ((long)t * d), r, d);
            }
        }
    }

    protected void RmsNormRows(float* x, float* weight, float* y, int count)
    {
        int d = Config.HiddenSize;
        for (int t = 0; t < count; t++)
        {
            RmsNorm.Compute(x + ((long)t * d), weight, y + ((long)t * d), d, Config.NormEps);
        }
    }

    protected void LayerNormRows(float* x, float* weight, float* bias, float* y, int count)
    {
        int d = Config.HiddenSize;
        for (int t = 0; t < count; t++)
        {
            LayerNorm.Compute(x + ((long)t * d), weight, bias, y + ((long)t * d), d, Config.NormEps);
        }
    }

    protected void Linear(Tensor weight, float* x, int count, float* y, float* bias = null)
    {
        Observer?.OnLinearInput(weight, new ReadOnlySpan<float>(x, count * weight.Columns), count);
        MatMul.Compute(weight, x, count, y, bias, Pool);
        Adapter?.Apply(weight, x, count, y, Pool);
    }

    /// <summary>Linear layers that read the same input, multiplied in one pass where the kernels allow (<see cref="MatMul.ComputeFused"/>).</summary>
    protected void LinearFused(ReadOnlySpan<Tensor> weights, float* x, int count, ReadOnlySpan<nint> ys, ReadOnlySpan<nint> biases)
    {
        foreach (var weight in weights)
        {
            Observer?.OnLinearInput(weight, new ReadOnlySpan<float>(x, count * weight.Columns), count);
        }

        MatMul.ComputeFused(weights, x, count, ys, biases, Pool);
        if (Adapter is not null)
        {
            for (int k = 0; k < weights.Length; k++)
            {
                Adapter.Apply(weights[k], x, count, (float*)ys[k], Pool);
            }
        }
    }

    protected static void AddRows(float* x, float* y, int count, int width) => Kernels.Add.Compute(x, y, count * width);

    /// <summary>
    /// Rotates q [count, heads·headDim] and k [count, kvHeads·headDim] of a layer (its own head counts) for
    /// positions startPos...
    /// </summary>
    protected void ApplyRope(int layer, float* q, float* k, int count, int startPos)
    {
        var c = Config;
        int heads = c.HeadsOf(layer), kvHeads = c.KvHeadsOf(layer);
        int qDim = heads * c.HeadDim, kvDim = kvHeads * c.HeadDim;
        for (int t = 0; t < count; t++)
        {
            _rope!.Fill(startPos + t, _cos!.FloatPointer, _sin!.FloatPointer);
            Rope.Apply(q + ((long)t * qDim), heads, c.HeadDim, c.RotaryDim, _cos.FloatPointer, _sin.FloatPointer, c.RopeStyle);
            Rope.Apply(k + ((long)t * kvDim), kvHeads, c.HeadDim, c.RotaryDim, _cos.FloatPointer, _sin.FloatPointer, c.RopeStyle);
        }
    }

    /// <summary>Appends k, v to the layer's cache and attends causally; output [count, heads·headDim].</summary>
    protected void Attend(KvCache cache, int layer, float* q, float* k, float* v, int count, int startPos, float* output)
    {
        var c = Config;
        cache.Store(layer, startPos, k, v, count);
        Attention.Compute(q, cache.Keys(layer), cache.Values(layer), cache.ElementType, output, count, startPos, c.HeadsOf(layer), c.KvHeadsOf(layer), c.HeadDim, Pool);
    }

    /// <summary>Splits a layer's fused projection laid out per token as [q | k | v] (GPT-2's c_attn).</summary>
    protected void SplitQkv(int layer, float* qkv, int count)
    {
        int qDim = Config.QDimOf(layer), kvDim = Config.KvDimOf(layer);
        int width = qDim + (2 * kvDim);
        for (int t = 0; t < count; t++)
        {
            float* row = qkv + ((long)t * width);
            Copy(row, Q + ((long)t * qDim), qDim);
            Copy(row + qDim, K + ((long)t * kvDim), kvDim);
            Copy(row + qDim + kvDim, V + ((long)t * kvDim), kvDim);
        }
    }

    /// <summary>Splits a layer's fused projection laid out per head as [q_h | k_h | v_h] (GPT-NeoX's query_key_value).</summary>
    protected void SplitQkvPerHead(int layer, float* qkv, int count)
    {
        int hd = Config.HeadDim, heads = Config.HeadsOf(layer);
        int qDim = heads * hd;
        for (int t = 0; t < count; t++)
        {
            for (int h = 0; h < heads; h++)
            {
                float* head = qkv + ((long)t * 3 * qDim) + (h * 3 * hd);
                Copy(head, Q + ((long)t * qDim) + (h * hd), hd);
                Copy(head + hd, K + ((long)t * qDim) + (h * hd), hd);
                Copy(head + (2 * hd), V + ((long)t * qDim) + (h * hd), hd);
            }
        }
    }

    protected void Activate(float* h, int n)
    {
        switch (Config.Activation)
        {
            case Activation.Gelu:
                Gelu.Exact(h, n);
                break;
            case Activation.GeluTanh:
                Gelu.Tanh(h, n);
                break;
            default:
                ThrowUnsupportedActivation();
                break;
        }
    }

    /// <summary>The output head over the normalised hidden states: every row, or the last one only.</summary>
    protected void Logits(Tensor head, float* normed, int count, float* logits, bool allLogits)
    {
        if (allLogits)
        {
            Linear(head, normed, count, logits);
        }
        else
        {
            Linear(head, normed + ((long)(count - 1) * Config.HiddenSize), 1, logits);
        }
    }

    private static void Copy(float* source, float* destination, int n) =>
        Buffer.MemoryCopy(source, destination, (long)n * sizeof(float), (long)n * sizeof(float));

    private void ThrowContextFull(KvCache cache, int count) =>
        throw new MinnowException($"{Weights.Source}: {cache.Length + count} tokens do not fit in the context of {cache.Capacity}; use a shorter prompt or a larger --ctx.");

    private void ThrowBadToken(int id) =>
        throw new MinnowException($"{Weights.Source}: token id {id} is outside the vocabulary of {Config.VocabSize}.");

    private void ThrowUnsupportedActivation() =>
        throw new MinnowException($"{Weights.Source}: activation {Config.Activation} is not valid for {Config.Architecture}.");

    public void Dispose()
    {
        foreach (var b in _buffers)
        {
            b.Dispose();
        }

        _buffers.Clear();
        _cos?.Dispose();
        _sin?.Dispose();
        Weights.Dispose();
        GC.SuppressFinalize(this);
    }
}
