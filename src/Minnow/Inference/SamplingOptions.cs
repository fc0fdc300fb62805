namespace Minnow.Inference;

/// <summary>
/// How the next token is chosen. Temperature 0 is greedy. Filters apply in llama.cpp's order: repetition
/// penalty, top-k, top-p, min-p, then temperature. 0 (or 1 for top-p and the penalty) disables a filter.
/// </summary>
public sealed record SamplingOptions
{
    public float Temperature { get; init; } = 0.8f;

    public int TopK { get; init; } = 40;

    public float TopP { get; init; } = 0.95f;

    public float MinP { get; init; } = 0.05f;

    public float RepetitionPenalty { get; init; } = 1.0f;

    /// <summary>How many recent tokens the repetition penalty looks at.</summary>
    public int RepeatLastN { get; init; } = 64;

    public ulong? Seed { get; init; }

    public static SamplingOptions Greedy { get; } = new() { Temperature = 0 };

    public void Validate()
    {
        if (Temperature < 0 || float.IsNaN(Temperature))
        {
            throw new MinnowException($"--temperature must be ≥ 0 (got {Temperature}).");
        }

        if (TopK < 0)
        {
            throw new MinnowException($"--top-k must be ≥ 0 (got {TopK}).");
        }

        if (TopP is <= 0 or > 1)
        {
            throw new MinnowException($"--top-p must be in (0, 1] (got {TopP}).");
        }

        if (MinP is < 0 or > 1)
        {
            throw new MinnowException($"--min-p must be in [0, 1] (got {MinP}).");
        }

        if (RepetitionPenalty <= 0)
        {
            throw new MinnowException($"--repeat-penalty must be > 0 (got {RepetitionPenalty}).");
        }
    }
}
