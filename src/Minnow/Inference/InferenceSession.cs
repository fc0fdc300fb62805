using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Inference;

/// <summary>Receives the logits of a batch of consecutive positions: [count, vocab], first at position start.</summary>
public delegate void LogitsCallback(int start, int count, ReadOnlySpan<float> logits);

/// <summary>
/// One sequence run through a model on the caller's thread: its own KV cache, workspace and step, and the logits of
/// the last token. Prompts are fed in batches of up to <see cref="BatchSize"/> tokens (prefill); then one token at a
/// time (decode), with no allocation per token. Many sessions may run one model at once; for many sequences in one
/// step, see <see cref="Engine"/>.
/// </summary>
public sealed unsafe class InferenceSession : IDisposable
{
    private readonly KvCache _cache;
    private readonly NativeBuffer _logits;
    private readonly ForwardWorkspace _workspace = new();
    private readonly ForwardBatch _batch = new();

    /// <param name="kvCacheType">F32 (the default: the reference arithmetic) or F16 (half the cache memory, as llama.cpp).</param>
    /// <param name="adapter">A LoRA adapter applied unmerged to this sequence; null for none.</param>
    public InferenceSession(TransformerModel model, int contextSize, int batchSize = 64, DType kvCacheType = DType.F32, LoraAdapter? adapter = null)
    {
        if (contextSize <= 0)
        {
            throw new MinnowException($"the context size must be positive (got {contextSize}).");
        }

        if (model.Config.Architecture == Architecture.Gpt2 && contextSize > model.Config.MaxPositions)
        {
            throw new MinnowException($"{model.Weights.Source}: context {contextSize} is longer than the model's {model.Config.MaxPositions} learned positions.");
        }

        Model = model;
        Adapter = adapter;
        BatchSize = Math.Max(1, batchSize);
        _cache = new KvCache(model.Config, contextSize, kvCacheType);
        _logits = NativeBuffer.Floats(model.Config.VocabSize);
        model.Prepare();
        _workspace.EnsureCapacity(model.Config, Math.Min(BatchSize, contextSize), 1);
    }

    public TransformerModel Model { get; }

    public LoraAdapter? Adapter { get; }

    /// <summary>When set, sees the input of every linear layer (calibration).</summary>
    public ILinearInputObserver? Observer { get; set; }

    public int BatchSize { get; }

    public int ContextSize => _cache.Capacity;

    /// <summary>Tokens in the cache.</summary>
    public int Position => _cache.Length;

    public long KvCacheBytes => _cache.ByteSize;

    public DType KvCacheType => _cache.ElementType;

    /// <summary>Logits after the last token fed.</summary>
    public Span<float> Logits => _logits.AsFloatSpan();

    public void Reset() => _cache.Clear();

    /// <summary>Feeds tokens (in batches) and keeps the logits of the last one.</summary>
    public void Prefill(ReadOnlySpan<int> tokens, CancellationToken cancellation = default)
    {
        CheckFits(tokens.Length);
        for (int start = 0; start < tokens.Length; start += BatchSize)
        {
            cancellation.ThrowIfCancellationRequested();
            var chunk = tokens.Slice(start, Math.Min(BatchSize, tokens.Length - start));
            Step(chunk, LogitRows.Last);
            CopyLastLogits();
        }
    }

    /// <summary>Feeds one token.</summary>
    public void Decode(int token)
    {
        CheckFits(1);
        Step(new ReadOnlySpan<int>(in token), LogitRows.Last);
        CopyLastLogits();
    }

    /// <summary>Feeds tokens in batches and hands the logits of every position to <paramref name="onLogits"/>.</summary>
    public void Evaluate(ReadOnlySpan<int> tokens, LogitsCallback onLogits, CancellationToken cancellation = default)
    {
        CheckFits(tokens.Length);
        int vocab = Model.Config.VocabSize;
        for (int start = 0; start < tokens.Length; start += BatchSize)
        {
            cancellation.ThrowIfCancellationRequested();
            int count = Math.Min(BatchSize, tokens.Length - start);
            int position = _cache.Length;
            Step(tokens.Slice(start, count), LogitRows.All);
            onLogits(position, count, new ReadOnlySpan<float>(_workspace.Logits, count * vocab));
        }
    }

    private void Step(ReadOnlySpan<int> tokens, LogitRows logits)
    {
        _batch.Clear();
        _batch.Observer = Observer;
        _batch.Add(_cache, tokens, logits, Adapter);
        Model.Forward(_batch, _workspace);
    }

    private void CopyLastLogits()
    {
        long bytes = (long)Model.Config.VocabSize * sizeof(float);
        Buffer.MemoryCopy(_workspace.Logits, _logits.FloatPointer, bytes, bytes);
    }

    private void CheckFits(int count)
    {
        if (_cache.Length + count > _cache.Capacity)
        {
            ThrowTooLong(count);
        }
    }

    private void ThrowTooLong(int count) =>
        throw new MinnowException($"{_cache.Length + count} tokens do not fit in the context of {_cache.Capacity} tokens; shorten the prompt or raise --ctx (the model allows {Model.Config.MaxPositions}).");

    public void Dispose()
    {
        _cache.Dispose();
        _logits.Dispose();
        _workspace.Dispose();
    }
}
