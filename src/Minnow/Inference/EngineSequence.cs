using System.Diagnostics;
using System.Threading.Channels;
using Minnow.Models;

namespace Minnow.Inference;

/// <summary>
/// One sequence in an <see cref="Engine"/>: its request, its KV cache pages, its position, sampler and tokens. The
/// caller reads its tokens as they are generated (<see cref="ReadAllAsync"/>); everything else is the engine's step
/// thread's. Cancelling it (or the token given at submission) takes it out at the next step and frees its pages.
/// </summary>
public sealed class EngineSequence
{
    private readonly Channel<GeneratedToken> _output = Channel.CreateUnbounded<GeneratedToken>(
        new UnboundedChannelOptions { SingleReader = false, SingleWriter = true, AllowSynchronousContinuations = false });

    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _cancelled;
    private CancellationTokenRegistration _registration;

    internal EngineSequence(GenerationRequest request, int vocabSize, long id)
    {
        Request = request;
        Id = id;
        Sampler = new Sampler(request.Sampling, vocabSize);
        Tokens = new List<int>(request.Prompt.Count + Math.Max(0, request.MaxTokens));
        Tokens.AddRange(request.Prompt);
        SubmittedAt = Stopwatch.GetTimestamp();
    }

    public GenerationRequest Request { get; }

    /// <summary>The engine's number for this sequence, in order of submission.</summary>
    public long Id { get; }

    /// <summary>Why it ended; <see cref="FinishReason.None"/> while it runs.</summary>
    public FinishReason FinishReason { get; private set; }

    /// <summary>What went wrong, for <see cref="FinishReason.Error"/>.</summary>
    public string? Error { get; private set; }

    public int PromptTokens => Request.Prompt.Count;

    /// <summary>Tokens generated so far.</summary>
    public int GeneratedTokens { get; private set; }

    /// <summary>Prompt positions whose keys and values were found already computed (a shared prefix).</summary>
    public int CachedPromptTokens { get; internal set; }

    /// <summary>How often the sequence was preempted (its pages freed and its tokens recomputed later).</summary>
    public int Preemptions { get; internal set; }

    /// <summary><see cref="Stopwatch"/> timestamps: submitted, first admitted to a step, first token, finished.</summary>
    public long SubmittedAt { get; }

    public long AdmittedAt { get; internal set; }

    public long FirstTokenAt { get; private set; }

    public long FinishedAt { get; private set; }

    /// <summary>Completes when the sequence has ended (whatever the reason).</summary>
    public Task Completion => _completion.Task;

    public bool IsCancellationRequested => _cancelled;

    /// <summary>Takes the sequence out at the next step.</summary>
    public void Cancel() => _cancelled = true;

    /// <summary>The generated tokens, as they come; ends when the sequence ends.</summary>
    public IAsyncEnumerable<GeneratedToken> ReadAllAsync(CancellationToken cancellation = default) => _output.Reader.ReadAllAsync(cancellation);

    // ---- The engine's step thread's state ----

    internal Sampler Sampler { get; }

    /// <summary>Prompt, then generated tokens: the sequence's history.</summary>
    internal List<int> Tokens { get; }

    internal KvCache? Cache { get; set; }

    /// <summary>Whether the sequence is in the engine's running set.</summary>
    internal bool IsRunning { get; set; }

    /// <summary>The sampled token whose keys and values are still to be computed; -1 while the history is being prefilled.</summary>
    internal int Pending { get; set; } = -1;

    internal void Watch(CancellationToken cancellation, Action wake)
    {
        if (cancellation.CanBeCanceled)
        {
            _registration = cancellation.UnsafeRegister(static (state, _) =>
            {
                var (sequence, wake) = ((EngineSequence, Action))state!;
                sequence.Cancel();
                wake();
            }, (this, wake));
        }
    }

    internal void Emit(in GeneratedToken token)
    {
        long now = Stopwatch.GetTimestamp();
        if (GeneratedTokens == 0)
        {
            FirstTokenAt = now;
        }

        GeneratedTokens++;
        _output.Writer.TryWrite(token with { At = now });
    }

    internal void Finish(FinishReason reason, string? error = null)
    {
        if (FinishReason != FinishReason.None)
        {
            return;
        }

        FinishReason = reason;
        Error = error;
        FinishedAt = Stopwatch.GetTimestamp();
        Cache?.Dispose();
        Cache = null;
        _registration.Dispose();
        _output.Writer.TryComplete(reason == FinishReason.Error ? new MinnowException(error ?? "the engine failed.") : null);
        _completion.TrySetResult();
    }
}
