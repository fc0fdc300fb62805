using System.Diagnostics;

namespace Minnow.Models;

/// <summary>The parts of a forward step that <see cref="StepProfile"/> times.</summary>
public enum StepPart
{
    /// <summary>The linear layers of the blocks (the fused q/k/v and gate/up included, adapters too).</summary>
    Linear,

    /// <summary>Storing keys and values and attending over the cache.</summary>
    Attention,

    /// <summary>Rotary position embeddings.</summary>
    Rope,

    /// <summary>The output projection to the vocabulary.</summary>
    Head,

    /// <summary>The whole forward step (the parts above and everything between them: norms, residuals, activations).</summary>
    Forward,

    /// <summary>A whole engine step: the forward step plus admission, batching and sampling.</summary>
    Step,
}

/// <summary>
/// Where the time of decode steps goes (<c>bench --profile</c>): wall-clock time per part, summed over the steps
/// in which every sequence decodes one token (prefill steps are not counted). Timing costs two timestamp reads
/// per part, so it is only on when a profile is attached (<see cref="ForwardBatch.Profile"/>). One writer: the
/// thread that runs the steps; read it when they are done.
/// </summary>
public sealed class StepProfile
{
    private readonly long[] _ticks = new long[Enum.GetValues<StepPart>().Length];

    /// <summary>Decode steps counted.</summary>
    public long Steps { get; private set; }

    /// <summary>Rows (tokens) in the counted steps.</summary>
    public long Rows { get; private set; }

    /// <summary>Whether a step of this shape counts: one row per sequence (a pure decode step).</summary>
    public static bool Counts(ForwardBatch batch) => batch.RowCount > 0 && batch.RowCount == batch.SegmentCount;

    /// <summary>Adds the time since <paramref name="startTimestamp"/> to <paramref name="part"/> (for a counted step).</summary>
    public void Add(StepPart part, ForwardBatch batch, long startTimestamp)
    {
        if (Counts(batch))
        {
            _ticks[(int)part] += Stopwatch.GetTimestamp() - startTimestamp;
        }
    }

    /// <summary>Counts one finished step of <paramref name="batch"/>'s shape (call once per step, after its parts).</summary>
    public void EndStep(ForwardBatch batch)
    {
        if (Counts(batch))
        {
            Steps++;
            Rows += batch.RowCount;
        }
    }

    /// <summary>Milliseconds per step spent in <paramref name="part"/>.</summary>
    public double MsPerStep(StepPart part) => Steps == 0 ? 0 : _ticks[(int)part] * 1000.0 / Stopwatch.Frequency / Steps;

    /// <summary>
    /// The breakdown per step: each part, the rest of the forward step (norms, residuals, activations, embedding),
    /// and the rest of the engine step (admission, batching, sampling).
    /// </summary>
    public IReadOnlyList<(string Part, double MsPerStep)> Breakdown()
    {
        double linear = MsPerStep(StepPart.Linear), attention = MsPerStep(StepPart.Attention), rope = MsPerStep(StepPart.Rope);
        double head = MsPerStep(StepPart.Head), forward = MsPerStep(StepPart.Forward), step = MsPerStep(StepPart.Step);
        return
        [
            ("linear layers", linear),
            ("attention", attention),
            ("rope", rope),
            ("output head", head),
            ("norms, residuals, activations", Math.Max(0, forward - linear - attention - rope - head)),
            ("engine: batching, sampling", step > 0 ? Math.Max(0, step - forward) : 0),
        ];
    }
}
