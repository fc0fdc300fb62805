using Minnow.Models;

namespace Minnow.Inference;

/// <summary>What one sequence asks of an <see cref="Engine"/>.</summary>
public sealed record GenerationRequest
{
    /// <summary>The prompt's token ids (at least one).</summary>
    public required IReadOnlyList<int> Prompt { get; init; }

    /// <summary>Most tokens to generate (0: only the prompt is run).</summary>
    public int MaxTokens { get; init; } = 128;

    public SamplingOptions Sampling { get; init; } = SamplingOptions.Greedy;

    /// <summary>Tokens that end generation (not emitted), e.g. the model's end-of-sequence token.</summary>
    public IReadOnlyList<int> StopTokens { get; init; } = [];

    /// <summary>A LoRA adapter for this sequence alone (unmerged, over the shared weights); null for none.</summary>
    public LoraAdapter? Adapter { get; init; }

    /// <summary>How many of the most likely alternatives to report with each token's log-probability (0: none).</summary>
    public int TopLogprobs { get; init; }

    /// <summary>Whether to report each token's log-probability.</summary>
    public bool Logprobs { get; init; }

    /// <summary>
    /// Sees the logits each token is sampled from (on the engine's step thread, before sampling): for tests and
    /// measurements that compare logits. Must not keep the span.
    /// </summary>
    public LogitsObserver? OnLogits { get; init; }
}

/// <summary>Receives the logits a sequence's next token is sampled from.</summary>
public delegate void LogitsObserver(int index, ReadOnlySpan<float> logits);

/// <summary>One alternative at a generated position.</summary>
public readonly record struct TokenLogprob(int Id, float Logprob);

/// <summary>A generated token, with its log-probability and the most likely alternatives when asked for.</summary>
public readonly record struct GeneratedToken(int Id, float Logprob, TokenLogprob[]? TopLogprobs)
{
    /// <summary>The <see cref="System.Diagnostics.Stopwatch"/> timestamp at which the engine emitted the token (0: not emitted yet).</summary>
    public long At { get; init; }
}

/// <summary>Why a sequence ended.</summary>
public enum FinishReason
{
    /// <summary>Still running.</summary>
    None,

    /// <summary>A stop token (or, for callers that check text, a stop string).</summary>
    Stop,

    /// <summary>The token limit or the end of the context.</summary>
    Length,

    /// <summary>The caller cancelled it (or disconnected).</summary>
    Cancelled,

    /// <summary>The engine failed or shut down before it finished.</summary>
    Error,
}
