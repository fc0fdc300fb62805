using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Inference;

/// <summary>How an <see cref="Engine"/> shares its model among sequences.</summary>
public sealed record EngineOptions
{
    /// <summary>Most sequences in one step.</summary>
    public int MaxSequences { get; init; } = 8;

    /// <summary>Most rows (tokens) in one step: decode rows first, then prompt chunks up to this (chunked prefill).</summary>
    public int MaxStepTokens { get; init; } = 64;

    /// <summary>Bytes of the KV page pool.</summary>
    public long KvBudgetBytes { get; init; } = 256L << 20;

    /// <summary>F16 (the default, as llama.cpp and vLLM keep it) or F32.</summary>
    public DType KvType { get; init; } = DType.F16;

    /// <summary>Positions in one KV page (a multiple of 4).</summary>
    public int PageSize { get; init; } = KvPagePool.DefaultPageSize;

    /// <summary>Longest sequence (prompt and generated tokens); 0 for the model's own context length.</summary>
    public int ContextSize { get; init; }

    /// <summary>Most sequences waiting to be admitted before <see cref="Engine.Submit"/> refuses more; 0 for no limit.</summary>
    public int MaxQueue { get; init; }

    /// <summary>Whether sequences share the pages of a common prompt prefix.</summary>
    public bool PrefixCaching { get; init; } = true;

    /// <summary>When set, the engine times the parts of its decode steps into it (<c>bench --profile</c>).</summary>
    public StepProfile? Profile { get; init; }

    /// <summary>An engine for one sequence of up to <paramref name="context"/> positions (a command-line generation).</summary>
    public static EngineOptions ForOneSequence(ModelConfig config, int context, DType kvType = DType.F32) => new()
    {
        MaxSequences = 1,
        MaxStepTokens = 64,
        ContextSize = context,
        KvType = kvType,
        KvBudgetBytes = KvPagePool.BytesPerPage(config, kvType) * ((context + KvPagePool.DefaultPageSize - 1) / KvPagePool.DefaultPageSize),
        PrefixCaching = false,
    };
}

/// <summary>The engine refuses a sequence because its queue is full (a server answers 429).</summary>
public sealed class EngineBusyException(string message) : MinnowException(message);

/// <summary>The engine is shutting down and takes no new sequence (a server answers 503).</summary>
public sealed class EngineStoppingException(string message) : MinnowException(message);

/// <summary>
/// One model shared by many sequences (continuous batching). A step loop on its own thread owns the worker pool: each
/// step takes one decode row from every sequence that is generating and chunks of the prompts being read, up to
/// <see cref="EngineOptions.MaxStepTokens"/> rows, and runs them through the model at once, so the weights are read
/// once per step for all of them; attention reads each sequence's own pages of a shared <see cref="KvPagePool"/>.
/// New sequences join between steps when pages are available; when pages run out, the youngest sequence is
/// preempted (its pages freed, its tokens recomputed when it is admitted again) rather than failing; a cancelled
/// sequence leaves at the next step. <see cref="Submit"/> is thread-safe. Each sequence gives the same logits as it
/// would alone, bit for bit.
/// </summary>
public sealed class Engine : IDisposable
{
    private readonly TransformerModel _model;
    private readonly KvPagePool _pool;
    private readonly ForwardWorkspace _workspace = new();
    private readonly ForwardBatch _batch;
    private readonly ConcurrentQueue<EngineSequence> _incoming = new();
    private readonly List<EngineSequence> _waiting = [];
    private readonly List<EngineSequence> _running = [];
    private readonly SemaphoreSlim _signal = new(0);
    private readonly Thread _loop;
    private readonly int _vocab;
    private readonly EngineSequence?[] _stepSequences;
    private readonly EngineSequence[] _order;
    private readonly float[] _rawLogits;
    private volatile bool _stopping, _draining;
    private int _queued;
    private long _nextId;
    private long _steps, _stepRows, _preemptions;

    public Engine(TransformerModel model, EngineOptions? options = null)
    {
        Options = options ?? new EngineOptions();
        if (Options.MaxSequences <= 0 || Options.MaxStepTokens < Options.MaxSequences)
        {
            throw new MinnowException($"the engine needs at least one sequence per step and at least as many rows as sequences (got {Options.MaxSequences} sequences, {Options.MaxStepTokens} rows).");
        }

        _model = model;
        _vocab = model.Config.VocabSize;
        ContextSize = Options.ContextSize > 0 ? Math.Min(Options.ContextSize, model.Config.MaxPositions) : model.Config.MaxPositions;
        _pool = KvPagePool.WithBudget(model.Config, Options.KvBudgetBytes, Options.KvType, Options.PageSize);
        _batch = new ForwardBatch(Options.MaxStepTokens, Options.MaxSequences) { Profile = Options.Profile };
        _stepSequences = new EngineSequence?[Options.MaxSequences];
        _order = new EngineSequence[Options.MaxSequences];
        _rawLogits = new float[_vocab];
        model.Prepare();
        _workspace.EnsureCapacity(model.Config, Options.MaxStepTokens, Options.MaxSequences);
        _loop = new Thread(Loop) { IsBackground = true, Name = "minnow-engine" };
        _loop.Start();
    }

    public EngineOptions Options { get; }

    public TransformerModel Model => _model;

    /// <summary>Longest sequence, prompt and generated tokens together.</summary>
    public int ContextSize { get; }

    public KvPagePool Pages => _pool;

    /// <summary>Sequences in the last step's batch set.</summary>
    public int Running => Volatile.Read(ref _runningCount);

    /// <summary>Sequences submitted and not yet admitted.</summary>
    public int Waiting => Volatile.Read(ref _queued);

    public long Steps => Interlocked.Read(ref _steps);

    /// <summary>Rows run in all steps so far.</summary>
    public long StepRows => Interlocked.Read(ref _stepRows);

    public long Preemptions => Interlocked.Read(ref _preemptions);

    /// <summary>Whether the engine has stopped taking sequences (<see cref="DrainAsync"/> or <see cref="Dispose"/>).</summary>
    public bool IsStopping => _draining || _stopping;

    private int _runningCount;

    /// <summary>Queues a sequence; read its tokens from the result. Refuses one that can never run, or when the queue is full.</summary>
    public EngineSequence Submit(GenerationRequest request, CancellationToken cancellation = default)
    {
        if (IsStopping)
        {
            throw new EngineStoppingException("the engine is shutting down and takes no new requests.");
        }

        Validate(request);
        if (Options.MaxQueue > 0 && Interlocked.Increment(ref _queued) > Options.MaxQueue)
        {
            Interlocked.Decrement(ref _queued);
            throw new EngineBusyException($"{Options.MaxQueue} requests are already waiting; try again later.");
        }
        else if (Options.MaxQueue <= 0)
        {
            Interlocked.Increment(ref _queued);
        }

        var sequence = new EngineSequence(request, _vocab, Interlocked.Increment(ref _nextId));
        sequence.Watch(cancellation, Wake);
        _incoming.Enqueue(sequence);
        Wake();
        return sequence;
    }

    /// <summary>Submits a request and streams its tokens.</summary>
    public async IAsyncEnumerable<GeneratedToken> GenerateAsync(GenerationRequest request,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellation = default)
    {
        var sequence = Submit(request, cancellation);
        await foreach (var token in sequence.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
        {
            yield return token;
        }
    }

    private void Validate(GenerationRequest request)
    {
        if (request.Prompt.Count == 0)
        {
            throw new MinnowException("the prompt is empty (no tokens).");
        }

        if (request.MaxTokens < 0)
        {
            throw new MinnowException($"the token limit must be ≥ 0 (got {request.MaxTokens}).");
        }

        if (request.Prompt.Count >= ContextSize && request.MaxTokens > 0 || request.Prompt.Count > ContextSize)
        {
            throw new MinnowException($"the prompt has {request.Prompt.Count} tokens; the context holds {ContextSize}, so at most {ContextSize - 1} leave room to generate.");
        }

        foreach (int id in request.Prompt)
        {
            if ((uint)id >= (uint)_vocab)
            {
                throw new MinnowException($"token id {id} is outside the vocabulary of {_vocab}.");
            }
        }

        if (_pool.PagesFor(request.Prompt.Count + 1) > _pool.PageCount)
        {
            throw new MinnowException($"the prompt's {request.Prompt.Count} tokens need more KV cache than the whole pool holds ({_pool.PageCount * (long)_pool.PageSize} positions).");
        }

        request.Sampling.Validate();
    }

    private void Wake() => _signal.Release();

    /// <summary>Stops taking sequences, lets those submitted finish until <paramref name="deadline"/>, then cancels the rest.</summary>
    public async Task DrainAsync(TimeSpan deadline)
    {
        _draining = true;
        var watch = Stopwatch.StartNew();
        while (Waiting + Running > 0 || !_incoming.IsEmpty)
        {
            if (watch.Elapsed >= deadline)
            {
                _cancelAll = true;
                Wake();
            }

            await Task.Delay(20).ConfigureAwait(false);
        }
    }

    private volatile bool _cancelAll;

    private void Loop()
    {
        while (!_stopping)
        {
            if (_running.Count == 0 && _waiting.Count == 0 && _incoming.IsEmpty)
            {
                _signal.Wait();
                continue;
            }

            try
            {
                Step();
            }
            catch (Exception e)
            {
                // A step that fails takes down the sequences in it, not the engine.
                string message = e is MinnowException ? e.Message : $"the engine failed: {e.Message}";
                for (int i = 0; i < _running.Count; i++)
                {
                    _running[i].Finish(FinishReason.Error, message);
                }

                _running.Clear();
                Volatile.Write(ref _runningCount, 0);
            }
        }

        // Shut down: everything still here ends.
        while (_incoming.TryDequeue(out var s))
        {
            s.Finish(FinishReason.Error, "the engine shut down.");
        }

        foreach (var s in _waiting.Concat(_running))
        {
            s.Finish(FinishReason.Error, "the engine shut down.");
        }
    }

    /// <summary>One step of the loop: admit, batch, run, sample. Allocates nothing once warm (but for new sequences' state).</summary>
    private void Step()
    {
        long started = Options.Profile is null ? 0 : Stopwatch.GetTimestamp();
        while (_incoming.TryDequeue(out var incoming))
        {
            _waiting.Add(incoming);
        }

        RemoveCancelled();
        Admit();
        if (_running.Count == 0)
        {
            return;
        }

        BuildBatch();
        if (_batch.RowCount == 0)
        {
            return;
        }

        _model.Forward(_batch, _workspace);
        Interlocked.Increment(ref _steps);
        Interlocked.Add(ref _stepRows, _batch.RowCount);
        SampleAndEmit();
        if (Options.Profile is { } profile)
        {
            profile.Add(StepPart.Step, _batch, started);
            profile.EndStep(_batch);
        }

        _batch.Clear();
        Volatile.Write(ref _runningCount, _running.Count);
    }

    private void RemoveCancelled()
    {
        bool all = _cancelAll;
        for (int i = _running.Count - 1; i >= 0; i--)
        {
            if (all || _running[i].IsCancellationRequested)
            {
                _running[i].Finish(FinishReason.Cancelled);
                _running[i].IsRunning = false;
                _running.RemoveAt(i);
            }
        }

        for (int i = _waiting.Count - 1; i >= 0; i--)
        {
            if (all || _waiting[i].IsCancellationRequested)
            {
                _waiting[i].Finish(FinishReason.Cancelled);
                _waiting.RemoveAt(i);
                Interlocked.Decrement(ref _queued);
            }
        }

        Volatile.Write(ref _runningCount, _running.Count);
    }

    private void Admit()
    {
        while (_waiting.Count > 0 && _running.Count < Options.MaxSequences)
        {
            var s = _waiting[0];

            // The sequence's history (prompt, and what it generated before a preemption) is read again from the
            // start — but for a prefix other sequences have computed — and its next token follows the last one.
            // Pages for all of it, and one more, must be free now.
            int history = s.Tokens.Count;
            s.Cache ??= new KvCache(_pool, ContextSize, s.Request.Adapter?.CacheKey);
            if (Options.PrefixCaching && s.Cache.Length == 0)
            {
                s.CachedPromptTokens = Math.Max(s.CachedPromptTokens, s.Cache.AttachSharedPrefix(CollectionsMarshal.AsSpan(s.Tokens), history - 1));
            }

            if (s.Cache.PagesNeeded(history + 1) > _pool.PagesAvailable && _running.Count > 0)
            {
                s.Cache.Clear();
                return;
            }

            s.Pending = -1;
            if (s.AdmittedAt == 0)
            {
                s.AdmittedAt = Stopwatch.GetTimestamp();
            }

            _waiting.RemoveAt(0);
            Interlocked.Decrement(ref _queued);
            s.IsRunning = true;
            _running.Add(s);
        }
    }

    /// <summary>Decode rows first (one per generating sequence), then prompt chunks in order of admission.</summary>
    private void BuildBatch()
    {
        _batch.Clear();
        int budget = Options.MaxStepTokens;
        int count = 0;
        int order = _running.Count;
        _running.CopyTo(_order);
        for (int i = 0; i < order; i++)
        {
            var s = _order[i];
            if (s.Pending < 0 || !s.IsRunning || !MakeRoom(s, 1))
            {
                continue;
            }

            _batch.Add(s.Cache!, new ReadOnlySpan<int>(in CollectionsMarshal.AsSpan(s.Tokens)[^1]), LogitRows.Last, s.Request.Adapter);
            _stepSequences[count++] = s;
            budget--;
        }

        for (int i = 0; i < order && budget > 0; i++)
        {
            var s = _order[i];
            if (s.Pending >= 0 || !s.IsRunning)
            {
                continue;
            }

            int done = s.Cache!.Length;
            int chunk = Math.Min(budget, s.Tokens.Count - done);
            if (chunk <= 0 || !MakeRoom(s, chunk))
            {
                continue;
            }

            bool last = done + chunk == s.Tokens.Count;
            _batch.Add(s.Cache!, CollectionsMarshal.AsSpan(s.Tokens).Slice(done, chunk), last ? LogitRows.Last : LogitRows.None, s.Request.Adapter);
            _stepSequences[count++] = s;
            budget -= chunk;
        }

        Array.Clear(_order);
    }

    /// <summary>
    /// Takes the pages <paramref name="s"/> needs for <paramref name="rows"/> more positions, preempting the youngest
    /// other sequences while the pool has too few; false when <paramref name="s"/> itself had to give way.
    /// </summary>
    private bool MakeRoom(EngineSequence s, int rows)
    {
        var cache = s.Cache!;
        while (!cache.Reserve(cache.Length + rows))
        {
            if (_running.Count == 1)
            {
                // Alone and still out of pages: the pool cannot hold this sequence any longer.
                RemoveFromBatch(s);
                s.Finish(FinishReason.Length);
                s.IsRunning = false;
                _running.Remove(s);
                return false;
            }

            var victim = Youngest();
            Preempt(victim);
            if (victim == s)
            {
                return false;
            }
        }

        return true;
    }

    private EngineSequence Youngest()
    {
        var youngest = _running[0];
        foreach (var s in _running)
        {
            if (s.Id > youngest.Id)
            {
                youngest = s;
            }
        }

        return youngest;
    }

    private void Preempt(EngineSequence s)
    {
        // Rows of it already in this step's batch would write into freed pages: take them out again.
        RemoveFromBatch(s);
        s.Cache!.Clear();
        s.Pending = -1;
        s.Preemptions++;
        Interlocked.Increment(ref _preemptions);
        s.IsRunning = false;
        _running.Remove(s);
        _waiting.Insert(0, s);
        Interlocked.Increment(ref _queued);
    }

    private void RemoveFromBatch(EngineSequence victim)
    {
        int count = _batch.SegmentCount;
        int at = Array.IndexOf(_stepSequences, victim, 0, count);
        if (at < 0)
        {
            return;
        }

        // Rebuild the step without it (rare: only under memory pressure).
        var kept = new List<(EngineSequence S, int First, int Count, LogitRows Logits)>();
        var segments = _batch.Segments;
        for (int i = 0; i < count; i++)
        {
            if (i != at)
            {
                kept.Add((_stepSequences[i]!, segments[i].Cache.Length, segments[i].Count, segments[i].Logits));
            }
        }

        _batch.Clear();
        Array.Clear(_stepSequences);
        for (int i = 0; i < kept.Count; i++)
        {
            var (s, first, n, logits) = kept[i];
            _batch.Add(s.Cache!, CollectionsMarshal.AsSpan(s.Tokens).Slice(first, n), logits, s.Request.Adapter);
            _stepSequences[i] = s;
        }
    }

    private unsafe void SampleAndEmit()
    {
        var segments = _batch.Segments;
        for (int i = 0; i < segments.Length; i++)
        {
            var s = _stepSequences[i]!;
            ref readonly var segment = ref segments[i];
            if (Options.PrefixCaching)
            {
                s.Cache!.PublishFullPages(CollectionsMarshal.AsSpan(s.Tokens));
            }

            if (segment.Logits == LogitRows.None)
            {
                continue;
            }

            var logits = new Span<float>(_workspace.Logits + ((long)segment.FirstLogitRow * _vocab), _vocab);
            Next(s, logits);
        }

        for (int i = _running.Count - 1; i >= 0; i--)
        {
            if (_running[i].FinishReason != FinishReason.None)
            {
                _running[i].IsRunning = false;
                _running.RemoveAt(i);
            }
        }

        Array.Clear(_stepSequences);
    }

    private void Next(EngineSequence s, Span<float> logits)
    {
        var request = s.Request;
        if (s.GeneratedTokens >= request.MaxTokens)
        {
            s.Finish(FinishReason.Length);
            return;
        }

        request.OnLogits?.Invoke(s.GeneratedTokens, logits);
        float logprob = 0;
        TokenLogprob[]? top = null;
        float max = 0;
        double logSum = 0;
        if (request.Logprobs || request.TopLogprobs > 0)
        {
            (max, logSum) = LogSumExp(logits);
            if (request.TopLogprobs > 0)
            {
                top = TopLogprobs(logits, request.TopLogprobs, max, logSum);
            }
        }

        bool wantLogprob = request.Logprobs || request.TopLogprobs > 0;
        if (wantLogprob)
        {
            // The sampler's repetition penalty changes logits in place; the log-probability is the model's.
            logits.CopyTo(_rawLogits);
        }

        int next = s.Sampler.Sample(logits, CollectionsMarshal.AsSpan(s.Tokens));
        if (wantLogprob)
        {
            logprob = (float)(_rawLogits[next] - max - logSum);
        }

        foreach (int stop in request.StopTokens)
        {
            if (next == stop)
            {
                s.Finish(FinishReason.Stop);
                return;
            }
        }

        s.Tokens.Add(next);
        s.Emit(new GeneratedToken(next, logprob, top));
        if (s.GeneratedTokens >= request.MaxTokens || s.Tokens.Count >= ContextSize)
        {
            s.Finish(FinishReason.Length);
            return;
        }

        s.Pending = next;
    }

    private static (float Max, double LogSum) LogSumExp(ReadOnlySpan<float> logits)
    {
        float max = float.NegativeInfinity;
        foreach (float v in logits)
        {
            max = Math.Max(max, v);
        }

        double sum = 0;
        foreach (float v in logits)
        {
            sum += Math.Exp(v - max);
        }

        return (max, Math.Log(sum));
    }

    private static TokenLogprob[] TopLogprobs(ReadOnlySpan<float> logits, int k, float max, double logSum)
    {
        k = Math.Min(k, logits.Length);
        var top = new TokenLogprob[k];
        int filled = 0;
        for (int id = 0; id < logits.Length; id++)
        {
            float lp = (float)(logits[id] - max - logSum);
            if (filled < k)
            {
                top[filled++] = new TokenLogprob(id, lp);
            }
            else if (lp > top[k - 1].Logprob)
            {
                top[k - 1] = new TokenLogprob(id, lp);
            }
            else
            {
                continue;
            }

            // Keep descending order (k is small).
            for (int j = filled - 1; j > 0 && top[j].Logprob > top[j - 1].Logprob; j--)
            {
                (top[j], top[j - 1]) = (top[j - 1], top[j]);
            }
        }

        return top;
    }

    public void Dispose()
    {
        _stopping = true;
        Wake();
        _loop.Join();
        _signal.Dispose();
        _workspace.Dispose();
        _pool.Dispose();
    }
}
