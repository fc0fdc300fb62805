using System.Diagnostics;
using Minnow.Kernels;
using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>
/// A decoder-only transformer: the shared blocks every architecture composes. A model is immutable once built and
/// <see cref="Prepare"/>d: the activations of a step live in a <see cref="ForwardWorkspace"/>, a sequence's keys and
/// values in its <see cref="KvCache"/>, and adapters and observers come with the step (<see cref="ForwardBatch"/>),
/// so any number of callers run one model at once. Each architecture's <see cref="ForwardLayers"/> is one screen that
/// composes these blocks over all the rows of a step.
/// </summary>
public abstract unsafe class TransformerModel : IDisposable
{
    private readonly RopeTable? _rope;
    private int _prepared;

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

    /// <summary>The matrices the forward pass multiplies (each once), for <see cref="Prepare"/>.</summary>
    protected abstract IEnumerable<Tensor> Matrices { get; }

    /// <summary>
    /// Makes every kernel form of the weights (the integer kernels' interleaved rows, the F16 finiteness checks) now,
    /// once, instead of on first use, so that steps only read the model. Thread-safe; later calls return at once.
    /// </summary>
    public void Prepare()
    {
        if (Volatile.Read(ref _prepared) != 0)
        {
            return;
        }

        lock (this)
        {
            if (_prepared != 0)
            {
                return;
            }

            foreach (var matrix in Matrices.Distinct())
            {
                MatMul.Prepare(matrix, Pool);
            }

            Volatile.Write(ref _prepared, 1);
        }
    }

    /// <summary>
    /// Runs <paramref name="tokens"/> at positions cache.Length.. through the model on the calling thread's
    /// workspace, appends their keys and values to the cache, and writes logits: for every token ([tokens, vocab])
    /// when <paramref name="allLogits"/>, otherwise for the last token only ([vocab]).
    /// </summary>
    public void Forward(ReadOnlySpan<int> tokens, KvCache cache, float* logits, bool allLogits, LoraAdapter? adapter = null, ILinearInputObserver? observer = null)
    {
        if (tokens.IsEmpty)
        {
            return;
        }

        var batch = t_batch ??= new ForwardBatch();
        batch.Clear();
        batch.Observer = observer;
        batch.Add(cache, tokens, allLogits ? LogitRows.All : LogitRows.Last, adapter);
        var workspace = ForwardWorkspace.ForCurrentThread;
        try
        {
            Forward(batch, workspace);
        }
        finally
        {
            batch.Clear();
            batch.Observer = null;
        }

        long n = (long)(allLogits ? tokens.Length : 1) * Config.VocabSize;
        Buffer.MemoryCopy(workspace.Logits, logits, n * sizeof(float), n * sizeof(float));
    }

    [ThreadStatic]
    private static ForwardBatch? t_batch;

    /// <summary>
    /// One step: every row of <paramref name="batch"/> through the model in <paramref name="workspace"/>. Each
    /// segment's keys and values are appended to its cache (whose pages must be reserved, <see cref="KvCache.Reserve"/>,
    /// or are taken here), and the logits of the logit rows land in <see cref="ForwardWorkspace.Logits"/>, in segment
    /// order. Every row is computed by the same arithmetic whatever else is in the step, so a sequence gives the
    /// same logits, bit for bit, alone or batched with others.
    /// </summary>
    public void Forward(ForwardBatch batch, ForwardWorkspace workspace)
    {
        if (batch.RowCount == 0)
        {
            return;
        }

        foreach (int id in batch.Tokens)
        {
            if ((uint)id >= (uint)Config.VocabSize)
            {
                ThrowBadToken(id);
            }
        }

        foreach (ref readonly var segment in batch.Segments)
        {
            var cache = segment.Cache;
            if (cache.Length + segment.Count > cache.Capacity)
            {
                ThrowContextFull(cache, segment.Count);
            }

            if (!cache.Reserve(cache.Length + segment.Count))
            {
                ThrowPoolFull(cache, segment.Count);
            }
        }

        Prepare();
        workspace.EnsureCapacity(Config, batch.RowCount, batch.LogitRowCount);
        long started = Start(batch);
        ForwardLayers(batch, workspace);
        batch.Profile?.Add(StepPart.Forward, batch, started);
        foreach (ref readonly var segment in batch.Segments)
        {
            segment.Cache.Length += segment.Count;
        }
    }

    /// <summary>The architecture: embeddings, blocks, final norm and head over the step's rows.</summary>
    protected abstract void ForwardLayers(ForwardBatch batch, ForwardWorkspace w);

    // ---- Shared blocks ----

    protected void Embed(Tensor table, ForwardBatch batch, float* x)
    {
        int d = Config.HiddenSize;
        var tokens = batch.Tokens;
        for (int t = 0; t < tokens.Length; t++)
        {
            table.ReadRow(tokens[t], new Span<float>(x + ((long)t * d), d));
        }
    }

    /// <summary>Adds learned position embeddings (GPT-2) at each row's position.</summary>
    protected void AddPositions(Tensor table, ForwardBatch batch, float* x, float* row)
    {
        int d = Config.HiddenSize;
        var positions = batch.Positions;
        for (int t = 0; t < positions.Length; t++)
        {
            table.ReadRow(positions[t], new Span<float>(row, d));
            Kernels.Add.Compute(x + ((long)t * d), row, d);
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

    /// <summary>y = W·x (+ bias) over every row of the step, plus each segment's own adapter delta.</summary>
    protected void Linear(ForwardBatch batch, Tensor weight, float* x, float* y, float* bias = null)
    {
        int count = batch.RowCount;
        batch.Observer?.OnLinearInput(weight, new ReadOnlySpan<float>(x, count * weight.Columns), count);
        long started = Start(batch);
        MatMul.Compute(weight, x, count, y, bias, Pool);
        ApplyAdapters(batch, weight, x, y);
        batch.Profile?.Add(StepPart.Linear, batch, started);
    }

    /// <summary>A timestamp when the batch is being profiled (<see cref="StepProfile"/>), else 0 without reading the clock.</summary>
    private static long Start(ForwardBatch batch) => batch.Profile is null ? 0 : Stopwatch.GetTimestamp();

    /// <summary>Linear layers that read the same input, multiplied in one pass where the kernels allow (<see cref="MatMul.ComputeFused"/>).</summary>
    protected void LinearFused(ForwardBatch batch, ReadOnlySpan<Tensor> weights, float* x, ReadOnlySpan<nint> ys, ReadOnlySpan<nint> biases)
    {
        int count = batch.RowCount;
        if (batch.Observer is { } observer)
        {
            foreach (var weight in weights)
            {
                observer.OnLinearInput(weight, new ReadOnlySpan<float>(x, count * weight.Columns), count);
            }
        }

        long started = Start(batch);
        MatMul.ComputeFused(weights, x, count, ys, biases, Pool);
        if (batch.HasAdapters)
        {
            for (int k = 0; k < weights.Length; k++)
            {
                ApplyAdapters(batch, weights[k], x, (float*)ys[k]);
            }
        }

        batch.Profile?.Add(StepPart.Linear, batch, started);
    }

    private void ApplyAdapters(ForwardBatch batch, Tensor weight, float* x, float* y)
    {
        if (!batch.HasAdapters)
        {
            return;
        }

        foreach (ref readonly var segment in batch.Segments)
        {
            segment.Adapter?.Apply(weight, x + ((long)segment.FirstRow * weight.Columns), segment.Count, y + ((long)segment.FirstRow * weight.Rows));
        }
    }

    protected static void AddRows(float* x, float* y, int count, int width) => Kernels.Add.Compute(x, y, count * width);

    /// <summary>
    /// Rotates q [rows, heads·headDim] and k [rows, kvHeads·headDim] of a layer (its own head counts), each row at
    /// its own position.
    /// </summary>
    protected void ApplyRope(ForwardBatch batch, ForwardWorkspace w, int layer, float* q, float* k)
    {
        var c = Config;
        int heads = c.HeadsOf(layer), kvHeads = c.KvHeadsOf(layer);
        int qDim = heads * c.HeadDim, kvDim = kvHeads * c.HeadDim;
        var positions = batch.Positions;
        long started = Start(batch);
        for (int t = 0; t < positions.Length; t++)
        {
            _rope!.Fill(positions[t], w.Cos, w.Sin);
            Rope.Apply(q + ((long)t * qDim), heads, c.HeadDim, c.RotaryDim, w.Cos, w.Sin, c.RopeStyle);
            Rope.Apply(k + ((long)t * kvDim), kvHeads, c.HeadDim, c.RotaryDim, w.Cos, w.Sin, c.RopeStyle);
        }

        batch.Profile?.Add(StepPart.Rope, batch, started);
    }

    /// <summary>
    /// Appends each segment's k, v to its sequence's cache and attends causally over that sequence's pages;
    /// output [rows, heads·headDim].
    /// </summary>
    protected void Attend(ForwardBatch batch, int layer, float* q, float* k, float* v, float* output)
    {
        var c = Config;
        int qDim = c.QDimOf(layer), kvDim = c.KvDimOf(layer);
        var segments = batch.Segments;
        long started = Start(batch);

        // Every sequence's new keys and values go into its cache, then one call attends for all of them.
        Span<Attention.Segment> attention = segments.Length <= 256 ? stackalloc Attention.Segment[segments.Length] : new Attention.Segment[segments.Length];
        for (int s = 0; s < segments.Length; s++)
        {
            ref readonly var segment = ref segments[s];
            var cache = segment.Cache;
            var pool = cache.Pool;
            int start = cache.Length;
            long first = segment.FirstRow;
            cache.Store(layer, start, k + (first * kvDim), v + (first * kvDim), segment.Count);
            attention[s] = new Attention.Segment
            {
                Q = q + (first * qDim),
                Output = output + (first * qDim),
                Kv = new Attention.KvPages
                {
                    Base = pool.Base,
                    Pages = cache.PageTable,
                    PageBytes = pool.PageBytes,
                    KeyOffset = pool.KeyOffset(layer),
                    ValueOffset = pool.ValueOffset(layer),
                    PageSize = pool.PageSize,
                },
                Tokens = segment.Count,
                StartPos = start,
            };
        }

        // Caches from pools of different element types (not the engine's case) are attended to one at a time.
        int same = 0;
        while (same < segments.Length && segments[same].Cache.ElementType == segments[0].Cache.ElementType)
        {
            same++;
        }

        if (same == segments.Length)
        {
            Attention.Compute(attention, segments[0].Cache.ElementType, c.HeadsOf(layer), c.KvHeadsOf(layer), c.HeadDim, Pool);
        }
        else
        {
            for (int s = 0; s < segments.Length; s++)
            {
                Attention.Compute(attention.Slice(s, 1), segments[s].Cache.ElementType, c.HeadsOf(layer), c.KvHeadsOf(layer), c.HeadDim, Pool);
            }
        }

        batch.Profile?.Add(StepPart.Attention, batch, started);
    }

    /// <summary>Splits a layer's fused projection laid out per token as [q | k | v] (GPT-2's c_attn).</summary>
    protected void SplitQkv(ForwardWorkspace w, int layer, float* qkv, int count)
    {
        int qDim = Config.QDimOf(layer), kvDim = Config.KvDimOf(layer);
        int width = qDim + (2 * kvDim);
        for (int t = 0; t < count; t++)
        {
            float* row = qkv + ((long)t * width);
            Copy(row, w.Q + ((long)t * qDim), qDim);
            Copy(row + qDim, w.K + ((long)t * kvDim), kvDim);
            Copy(row + qDim + kvDim, w.V + ((long)t * kvDim), kvDim);
        }
    }

    /// <summary>Splits a layer's fused projection laid out per head as [q_h | k_h | v_h] (GPT-NeoX's query_key_value).</summary>
    protected void SplitQkvPerHead(ForwardWorkspace w, int layer, float* qkv, int count)
    {
        int hd = Config.HeadDim, heads = Config.HeadsOf(layer);
        int qDim = heads * hd;
        for (int t = 0; t < count; t++)
        {
            for (int h = 0; h < heads; h++)
            {
                float* head = qkv + ((long)t * 3 * qDim) + (h * 3 * hd);
                Copy(head, w.Q + ((long)t * qDim) + (h * hd), hd);
                Copy(head + hd, w.K + ((long)t * qDim) + (h * hd), hd);
                Copy(head + (2 * hd), w.V + ((long)t * qDim) + (h * hd), hd);
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

    /// <summary>
    /// The output head over the normalised hidden states of the logit rows (every row of an <see cref="LogitRows.All"/>
    /// segment, the last of a <see cref="LogitRows.Last"/> one), gathered into <paramref name="gather"/>; logits into
    /// the workspace.
    /// </summary>
    protected void Logits(ForwardBatch batch, ForwardWorkspace w, Tensor head, float* normed, float* gather)
    {
        int d = Config.HiddenSize;
        if (batch.LogitRowCount == 0)
        {
            return;
        }

        float* rows = normed;
        if (batch.LogitRowCount != batch.RowCount)
        {
            rows = gather;
            foreach (ref readonly var segment in batch.Segments)
            {
                switch (segment.Logits)
                {
                    case LogitRows.All:
                        Copy(normed + ((long)segment.FirstRow * d), gather + ((long)segment.FirstLogitRow * d), segment.Count * d);
                        break;
                    case LogitRows.Last:
                        Copy(normed + ((long)(segment.FirstRow + segment.Count - 1) * d), gather + ((long)segment.FirstLogitRow * d), d);
                        break;
                }
            }
        }

        batch.Observer?.OnLinearInput(head, new ReadOnlySpan<float>(rows, batch.LogitRowCount * d), batch.LogitRowCount);
        long started = Start(batch);
        MatMul.Compute(head, rows, batch.LogitRowCount, w.Logits, null, Pool);
        batch.Profile?.Add(StepPart.Head, batch, started);
    }

    private static void Copy(float* source, float* destination, int n) =>
        Buffer.MemoryCopy(source, destination, (long)n * sizeof(float), (long)n * sizeof(float));

    private void ThrowContextFull(KvCache cache, int count) =>
        throw new MinnowException($"{Weights.Source}: {cache.Length + count} tokens do not fit in the context of {cache.Capacity}; use a shorter prompt or a larger --ctx.");

    private void ThrowPoolFull(KvCache cache, int count) =>
        throw new MinnowException($"{Weights.Source}: the KV cache pool has no free page for {count} more tokens ({cache.Pool.PageCount} pages in all).");

    private void ThrowBadToken(int id) =>
        throw new MinnowException($"{Weights.Source}: token id {id} is outside the vocabulary of {Config.VocabSize}.");

    private void ThrowUnsupportedActivation() =>
        throw new MinnowException($"{Weights.Source}: activation {Config.Activation} is not valid for {Config.Architecture}.");

    public void Dispose()
    {
        Weights.Dispose();
        GC.SuppressFinalize(this);
    }
}
