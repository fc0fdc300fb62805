using System.Diagnostics;
using System.Text;

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
/// The generation loop: prefill the prompt, then sample and decode one token at a time until a stop token, a stop
/// string, the token limit or the end of the context. Text is streamed through <c>onText</c> as it becomes
/// final (text that may be the start of a stop string is held back until it is not).
/// </summary>
public static class Generator
{
    /// <param name="decodePiece">Turns the next generated id into the text it completes (a streaming decoder); null for ids only.</param>
    public static GenerationResult Generate(InferenceSession session, IReadOnlyList<int> prompt, GenerationOptions options,
        Func<int, string>? decodePiece = null, Action<string>? onText = null, CancellationToken cancellation = default)
    {
        if (prompt.Count == 0)
        {
            throw new MinnowException("the prompt is empty (no tokens); give some text with -p.");
        }

        if (options.MaxTokens < 0)
        {
            throw new MinnowException($"--max-tokens must be ≥ 0 (got {options.MaxTokens}).");
        }

        int vocab = session.Model.Config.VocabSize;
        var sampler = new Sampler(options.Sampling, vocab);
        var history = new List<int>(prompt.Count + options.MaxTokens);
        history.AddRange(prompt);
        var generated = new List<int>(options.MaxTokens);
        var text = new StringBuilder();
        int emitted = 0;
        int holdBack = options.StopStrings.Count == 0 ? 0 : options.StopStrings.Max(s => s.Length) - 1;
        string reason = "length";

        var watch = Stopwatch.StartNew();
        session.Prefill(history.ToArray(), cancellation);
        double prefillSeconds = watch.Elapsed.TotalSeconds;
        double firstTokenMs = 0;
        double decodeStart = prefillSeconds;
        var historyArray = new int[prompt.Count + options.MaxTokens];
        history.CopyTo(historyArray);
        int historyLength = history.Count;

        while (generated.Count < options.MaxTokens)
        {
            if (cancellation.IsCancellationRequested)
            {
                reason = "cancelled";
                break;
            }

            int next = sampler.Sample(session.Logits, historyArray.AsSpan(0, historyLength));
            if (generated.Count == 0)
            {
                firstTokenMs = watch.Elapsed.TotalMilliseconds;
                decodeStart = watch.Elapsed.TotalSeconds;
            }

            if (options.StopTokens.Contains(next))
            {
                reason = "stop_token";
                break;
            }

            generated.Add(next);
            historyArray[historyLength++] = next;
            if (decodePiece != null)
            {
                text.Append(decodePiece(next));
                int stopAt = FindStop(text, options.StopStrings, Math.Max(0, emitted - holdBack));
                if (stopAt >= 0)
                {
                    text.Length = stopAt;
                    Emit(text, ref emitted, text.Length, onText);
                    reason = "stop_string";
                    break;
                }

                Emit(text, ref emitted, text.Length - holdBack, onText);
            }

            if (generated.Count == options.MaxTokens)
            {
                break;
            }

            if (session.Position >= session.ContextSize)
            {
                reason = "length";
                break;
            }

            session.Decode(next);
        }

        Emit(text, ref emitted, text.Length, onText);
        double total = watch.Elapsed.TotalSeconds;
        return new GenerationResult
        {
            Text = text.ToString(),
            TokenIds = generated.ToArray(),
            PromptTokens = prompt.Count,
            StopReason = reason,
            PrefillSeconds = prefillSeconds,
            DecodeSeconds = total - decodeStart,
            TimeToFirstTokenMs = firstTokenMs,
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
