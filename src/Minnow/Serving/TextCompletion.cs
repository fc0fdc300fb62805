using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using Minnow.Inference;
using Minnow.Tokenizers;

namespace Minnow.Serving;

/// <summary>What a text completion asks for: a prompt, how to sample, and where to stop.</summary>
public sealed record TextCompletionRequest
{
    public required IReadOnlyList<int> Prompt { get; init; }

    /// <summary>Most tokens to generate; null for as many as the context leaves room for.</summary>
    public int? MaxTokens { get; init; }

    public SamplingOptions Sampling { get; init; } = SamplingOptions.Greedy;

    /// <summary>Texts that end the completion; the output stops before the first one.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    /// <summary>Keep generating past the model's end-of-generation tokens.</summary>
    public bool IgnoreEos { get; init; }

    public bool Logprobs { get; init; }

    public int TopLogprobs { get; init; }

    /// <summary>A LoRA adapter applied to this completion alone; null for the base model.</summary>
    public Models.LoraAdapter? Adapter { get; init; }
}

/// <summary>How a completion ended, as OpenAI's API names it.</summary>
public enum CompletionFinish
{
    None,

    /// <summary>An end-of-generation token or a stop string ("stop").</summary>
    Stop,

    /// <summary>The token limit or the end of the context ("length").</summary>
    Length,

    /// <summary>The client went away or the server cancelled it before it finished.</summary>
    Cancelled,

    /// <summary>The engine failed.</summary>
    Error,
}

/// <summary>
/// The text one generated token adds (possibly empty: bytes of a character not yet complete, or text that may be
/// the start of a stop string, are held back until they are not), with the token's log-probabilities when asked.
/// </summary>
public readonly record struct TextDelta(string Text, int TokenId, float Logprob, TokenLogprob[]? TopLogprobs, long Timestamp);

/// <summary>
/// Text completions over an <see cref="Engine"/>: encodes prompts, runs sequences, and turns their tokens into text
/// as it becomes final (UTF-8 safe streaming decode, stop strings). Any host (HTTP server, CLI) can drive it.
/// </summary>
public sealed class TextCompleter(Engine engine, ITextTokenizer tokenizer)
{
    public Engine Engine { get; } = engine;

    public PromptEncoder Prompts { get; } = new(tokenizer);

    public ITextTokenizer Tokenizer => Prompts.Tokenizer;

    /// <summary>
    /// Submits the request (throws <see cref="EngineBusyException"/>, <see cref="EngineStoppingException"/> or a
    /// <see cref="MinnowException"/> for a request that cannot run) and returns the running completion.
    /// </summary>
    public TextCompletion Start(TextCompletionRequest request, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        int room = Engine.ContextSize - request.Prompt.Count;
        if (request.Prompt.Count >= Engine.ContextSize)
        {
            throw new MinnowException($"the prompt has {request.Prompt.Count} tokens; the context holds {Engine.ContextSize}, so at most {Engine.ContextSize - 1} leave room to generate.");
        }

        if (request.MaxTokens is < 1)
        {
            throw new MinnowException($"the token limit must be ≥ 1 (got {request.MaxTokens}).");
        }

        if (request.TopLogprobs is < 0 or > 20)
        {
            throw new MinnowException($"top log-probabilities must be between 0 and 20 (got {request.TopLogprobs}).");
        }

        request.Sampling.Validate();
        var generation = new GenerationRequest
        {
            Prompt = request.Prompt,
            MaxTokens = Math.Min(request.MaxTokens ?? room, room),
            Sampling = request.Sampling,
            StopTokens = request.IgnoreEos ? [] : Tokenizer.EosIds,
            Logprobs = request.Logprobs,
            TopLogprobs = request.TopLogprobs,
            Adapter = request.Adapter,
        };
        var sequence = Engine.Submit(generation, cancellation);
        return new TextCompletion(sequence, new TokenStreamDecoder(Tokenizer, skipSpecialTokens: true, atStartOfText: false), request.StopStrings);
    }
}

/// <summary>One running completion: read its text deltas, then its finish reason and token counts.</summary>
public sealed class TextCompletion
{
    private readonly TokenStreamDecoder _decoder;
    private readonly IReadOnlyList<string> _stops;
    private readonly int _holdBack;
    private readonly StringBuilder _text = new();
    private readonly List<long> _tokenTimes = [];
    private int _emitted;
    private bool _read;

    internal TextCompletion(EngineSequence sequence, TokenStreamDecoder decoder, IReadOnlyList<string> stops)
    {
        Sequence = sequence;
        _decoder = decoder;
        _stops = stops.Where(s => s.Length > 0).ToArray();
        _holdBack = _stops.Count == 0 ? 0 : _stops.Max(s => s.Length) - 1;
    }

    public EngineSequence Sequence { get; }

    public int PromptTokens => Sequence.PromptTokens;

    /// <summary>Generated tokens delivered (up to the one that completed a stop string).</summary>
    public int CompletionTokens { get; private set; }

    public CompletionFinish Finish { get; private set; }

    /// <summary>
    /// Seconds between each two tokens in a row as the engine emitted them (one fewer than <see cref="CompletionTokens"/>): every gap,
    /// so that a latency percentile over many requests is taken over gaps, not over each request's mean.
    /// </summary>
    public double[] InterTokenGapsSeconds()
    {
        var gaps = new double[Math.Max(0, _tokenTimes.Count - 1)];
        for (int i = 0; i < gaps.Length; i++)
        {
            gaps[i] = Stopwatch.GetElapsedTime(_tokenTimes[i], _tokenTimes[i + 1]).TotalSeconds;
        }

        return gaps;
    }

    /// <summary>The whole text delivered so far.</summary>
    public string Text => _text.ToString(0, _emitted);

    /// <summary>
    /// One delta per generated token, then (when held-back text remains at the end) one more with token id -1.
    /// Ends when the sequence does; <see cref="Finish"/> is set then. Throws <see cref="MinnowException"/> when the
    /// engine failed.
    /// </summary>
    public async IAsyncEnumerable<TextDelta> ReadAsync([EnumeratorCancellation] CancellationToken cancellation = default)
    {
        if (_read)
        {
            throw new InvalidOperationException("a completion is read once.");
        }

        _read = true;
        bool stopped = false;
        await foreach (var token in Sequence.ReadAllAsync(cancellation).ConfigureAwait(false))
        {
            long now = Stopwatch.GetTimestamp();
            CompletionTokens++;
            _tokenTimes.Add(token.At != 0 ? token.At : now); // when the engine made it, however late it is read
            _text.Append(_decoder.Add(token.Id));
            int stopAt = FindStop(Math.Max(0, _emitted - _holdBack));
            if (stopAt >= 0)
            {
                _text.Length = stopAt;
                stopped = true;
                Sequence.Cancel();
                yield return new TextDelta(Take(_text.Length), token.Id, token.Logprob, token.TopLogprobs, now);
                break;
            }

            yield return new TextDelta(Take(_text.Length - _holdBack), token.Id, token.Logprob, token.TopLogprobs, now);
        }

        await Sequence.Completion.ConfigureAwait(false);
        if (Sequence.FinishReason == FinishReason.Error)
        {
            throw new MinnowException(Sequence.Error ?? "the engine failed.");
        }

        if (!stopped)
        {
            // Bytes of a character left incomplete at the end come out as U+FFFD, as a full decode gives them.
            _text.Append(_decoder.Flush());
        }

        Finish = stopped ? CompletionFinish.Stop : Sequence.FinishReason switch
        {
            FinishReason.Stop => CompletionFinish.Stop,
            FinishReason.Length => CompletionFinish.Length,
            _ => CompletionFinish.Cancelled,
        };
        string rest = Take(_text.Length);
        if (rest.Length > 0)
        {
            yield return new TextDelta(rest, -1, 0, null, Stopwatch.GetTimestamp());
        }
    }

    private string Take(int upTo)
    {
        if (upTo > 0 && upTo < _text.Length && char.IsHighSurrogate(_text[upTo - 1]))
        {
            upTo--; // never split a surrogate pair between two deltas
        }

        if (upTo <= _emitted)
        {
            return "";
        }

        string piece = _text.ToString(_emitted, upTo - _emitted);
        _emitted = upTo;
        return piece;
    }

    private int FindStop(int from)
    {
        if (_stops.Count == 0)
        {
            return -1;
        }

        string tail = _text.ToString(from, _text.Length - from);
        int best = -1;
        foreach (string stop in _stops)
        {
            int at = tail.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (best < 0 || at < best))
            {
                best = at;
            }
        }

        return best < 0 ? -1 : from + best;
    }
}
