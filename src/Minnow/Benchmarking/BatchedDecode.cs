using System.Diagnostics;
using Minnow.Inference;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Benchmarking;

/// <summary>Several sequences decoded at once through one <see cref="Engine"/>.</summary>
public sealed record BatchedDecodeResult
{
    public required int Sequences { get; init; }

    public required int PromptTokens { get; init; }

    /// <summary>Tokens decoded per sequence after the first one it generates.</summary>
    public required int DecodedTokens { get; init; }

    /// <summary>From submitting the sequences to the last of their first tokens.</summary>
    public required double PrefillSeconds { get; init; }

    /// <summary>From the last first token to the end of the last sequence.</summary>
    public required double DecodeSeconds { get; init; }

    /// <summary>Decoded tokens of all sequences per second.</summary>
    public double AggregateDecodeTokensPerSecond => Sequences * DecodedTokens / DecodeSeconds;

    /// <summary>Milliseconds between two tokens of one sequence.</summary>
    public double MsPerTokenPerSequence => DecodeSeconds * 1000 / DecodedTokens;
}

/// <summary>
/// Measures decode with N concurrent sequences: N different prompts (rotations of the given ids, so no prefix is
/// shared) submitted together, read in the first steps, then decoded greedily in lockstep, one row per sequence per
/// step — the engine's real batched path, as a server runs it.
/// </summary>
public static class BatchedDecode
{
    /// <param name="profile">When given, the decode steps' time per part goes into it (<see cref="StepProfile"/>).</param>
    public static BatchedDecodeResult Run(TransformerModel model, int sequences, IReadOnlyList<int> ids, int prompt, int gen, DType kvType,
        CancellationToken cancellation = default, StepProfile? profile = null)
    {
        if (sequences < 1 || prompt < 1 || gen < 2 || ids.Count < prompt)
        {
            throw new ArgumentException("batched decode needs at least one sequence, one prompt token, two generated tokens and enough ids.");
        }

        var prompts = Prompts(ids, sequences, prompt);
        int context = prompt + gen;
        var options = new EngineOptions
        {
            MaxSequences = sequences,
            MaxStepTokens = Math.Max(sequences, Math.Min(sequences * prompt, 2048)),
            ContextSize = context,
            KvType = kvType,
            KvBudgetBytes = KvPagePool.BytesPerPage(model.Config, kvType) * sequences * ((context + KvPagePool.DefaultPageSize - 1) / KvPagePool.DefaultPageSize),
            PrefixCaching = false,
            Profile = profile,
        };
        using var engine = new Engine(model, options);
        var handles = prompts.Select(p => engine.Submit(new GenerationRequest { Prompt = p, MaxTokens = gen }, cancellation)).ToArray();
        Task.WaitAll(handles.Select(h => h.Completion).ToArray(), cancellation);
        if (handles.Any(h => h.FinishReason != FinishReason.Length || h.GeneratedTokens != gen))
        {
            throw new MinnowException($"a batched sequence ended early ({string.Join(", ", handles.Select(h => h.FinishReason))}).");
        }

        long submitted = handles.Min(h => h.SubmittedAt);
        long lastFirst = handles.Max(h => h.FirstTokenAt);
        long end = handles.Max(h => h.FinishedAt);
        return new BatchedDecodeResult
        {
            Sequences = sequences,
            PromptTokens = prompt,
            DecodedTokens = gen - 1,
            PrefillSeconds = Stopwatch.GetElapsedTime(submitted, lastFirst).TotalSeconds,
            DecodeSeconds = Stopwatch.GetElapsedTime(lastFirst, end).TotalSeconds,
        };
    }

    /// <summary>N prompts of <paramref name="length"/> ids: rotations of <paramref name="ids"/>, each starting elsewhere.</summary>
    public static int[][] Prompts(IReadOnlyList<int> ids, int count, int length) =>
        Enumerable.Range(0, count)
            .Select(s => Enumerable.Range(0, length).Select(i => ids[((s * 7) + i) % ids.Count]).ToArray())
            .ToArray();
}
