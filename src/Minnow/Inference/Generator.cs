using System.Diagnostics;
using System.Text;
using Minnow.Models;

namespace Minnow.Inference;

public sealed record GenerationOptions
{
    public int MaxTokens { get; init; } = 128;

    public SamplingOptions Sampling { get; init; } = new();

    /// <summary>Tokens that end generation (not included in the output), e.g. the model's EOS.</summary>
    public IReadOnlyList<int> StopTokens { get; init; } = [];

    /// <summary>Strings that end generation; the output stops before the first one.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];
}

public sealed record GenerationResult
{
    public required string Text { get; init; }

    /// <summary>The generated token ids (the prompt's not included).</summary>
    public required int[] TokenIds { get; init; }

    public required int PromptTokens { get; init; }

    /// <summary>"length" (max tokens or context), "stop_token", "stop_string" or "cancelled".</summary>
    public required string StopReason { get; init; }

    public required double PrefillSeconds { get; init; }

    public required double DecodeSeconds { get; init; }

    /// <summary>Time from the start to the first generated token, in milliseconds.</summary>
    public required double TimeToFirstTokenMs { get; init; }

    /// <summary>Decode speed: generated tokens after the first, per second of decoding.</summary>
    public double TokensPerSecond => TokenIds.Length > 1 && DecodeSeconds > 0 ? (TokenIds.Length - 1) / DecodeSeconds : 0;

    public double PrefillTokensPerSecond => PrefillSeconds > 0 ? PromptTokens / PrefillSeconds : 0;
}

/// <summary>
/// One generation through an <see cref="Engine"/>: the prompt is submitted as a sequence, its tokens are decoded to
/// text as they come, and the text is streamed through <c>onText</c> as it becomes final (text that may be the start
/// of a stop string is held back until it is not). A stop string ends the sequence (it is cancelled in the engine).
/// </summary>
public static class Generator
{
    /// <param name="decodePiece">Turns the next generated id into the text it completes (a streaming decoder); null for ids only.</param>
    public static GenerationResult Generate(Engine engine, IReadOnlyList<int> prompt, GenerationOptions options,
        Func<int, string>? decodePiece = null, Action<string>? onText = null, CancellationToken cancellation = default, LoraAdapter? adapter = null)
    {
        if (prompt.Count == 0)
        {
            throw new MinnowException("the prompt is empty (no tokens).");
        }

        if (options.MaxTokens < 0)
        {
            throw new MinnowException($"the token limit must be ≥ 0 (got {options.MaxTokens}).");
        }

        var request = new GenerationRequest
        {
            Prompt = prompt,
            MaxTokens = options.MaxTokens,
            Sampling = options.Sampling,
            StopTokens = options.StopTokens,
            Adapter = adapter,
        };
        var generated = new List<int>(options.MaxTokens);
        var text = new StringBuilder();
        int emitted = 0;
        int holdBack = options.StopStrings.Count == 0 ? 0 : options.StopStrings.Max(s => s.Length) - 1;
        bool stopString = false;
        var sequence = engine.Submit(request, cancellation);
        foreach (var token in sequence.ReadAllAsync(CancellationToken.None).ToBlockingEnumerable())
        {
            generated.Add(token.Id);
            if (decodePiece == null || stopString)
            {
                continue;
            }

            text.Append(decodePiece(token.Id));
            int stopAt = FindStop(text, options.StopStrings, Math.Max(0, emitted - holdBack));
            if (stopAt >= 0)
            {
                text.Length = stopAt;
                Emit(text, ref emitted, text.Length, onText);
                stopString = true;
                sequence.Cancel();
                continue;
            }

            Emit(text, ref emitted, text.Length - holdBack, onText);
        }

        sequence.Completion.GetAwaiter().GetResult();
        Emit(text, ref emitted, text.Length, onText);
        string reason = stopString ? "stop_string" : sequence.FinishReason switch
        {
            FinishReason.Stop => "stop_token",
            FinishReason.Cancelled => "cancelled",
            _ => "length",
        };
        double Seconds(long from, long to) => to > from ? Stopwatch.GetElapsedTime(from, to).TotalSeconds : 0;
        long firstToken = sequence.FirstTokenAt != 0 ? sequence.FirstTokenAt : sequence.FinishedAt;
        return new GenerationResult
        {
            Text = text.ToString(),
            TokenIds = [.. generated],
            PromptTokens = prompt.Count,
            StopReason = reason,
            PrefillSeconds = Seconds(sequence.AdmittedAt, firstToken),
            DecodeSeconds = Seconds(firstToken, sequence.FinishedAt),
            TimeToFirstTokenMs = Seconds(sequence.SubmittedAt, firstToken) * 1000,
        };
    }

    private static void Emit(StringBuilder text, ref int emitted, int upTo, Action<string>? onText)
    {
        if (upTo > emitted)
        {
            onText?.Invoke(text.ToString(emitted, upTo - emitted));
            emitted = upTo;
        }
    }

    private static int FindStop(StringBuilder text, IReadOnlyList<string> stops, int from)
    {
        if (stops.Count == 0)
        {
            return -1;
        }

        string tail = text.ToString(from, text.Length - from);
        int best = -1;
        foreach (string stop in stops)
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
