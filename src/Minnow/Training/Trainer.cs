using System.Diagnostics;
using System.Text.Json;
using Minnow.Formats.Safetensors;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>Hyper-parameters of a training run (all saved in its checkpoints).</summary>
public sealed record TrainingOptions
{
    /// <summary>Optimiser steps in the whole run (the schedule's length).</summary>
    public int Steps { get; init; } = 1000;

    /// <summary>Sequences per micro-batch.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Micro-batches whose gradients are accumulated into one step.</summary>
    public int AccumulationSteps { get; init; } = 1;

    /// <summary>Tokens per training sequence.</summary>
    public int SequenceLength { get; init; } = 128;

    public float LearningRate { get; init; } = 1e-3f;

    /// <summary>The rate the cosine decays to (default a tenth of the peak).</summary>
    public float? MinLearningRate { get; init; }

    /// <summary>Warm-up steps (default: a twentieth of the run, at most 200).</summary>
    public int? WarmupSteps { get; init; }

    public float WeightDecay { get; init; } = 0.1f;

    public float Beta1 { get; init; } = 0.9f;

    public float Beta2 { get; init; } = 0.95f;

    public float Epsilon { get; init; } = 1e-8f;

    /// <summary>Global gradient-norm clip (0 = none).</summary>
    public float ClipNorm { get; init; } = 1f;

    public long Seed { get; init; } = 1;

    public LearningRateSchedule Schedule() => new(
        LearningRate,
        MinLearningRate ?? (LearningRate / 10),
        Math.Max(1, WarmupSteps ?? Math.Min(200, Math.Max(1, Steps / 20))),
        Steps);

    public void Validate()
    {
        if (Steps <= 0 || BatchSize <= 0 || AccumulationSteps <= 0 || SequenceLength <= 1)
        {
            throw new MinnowException($"steps ({Steps}), batch ({BatchSize}), accumulation ({AccumulationSteps}) must be positive and the context ({SequenceLength}) at least 2.");
        }

        if (!(LearningRate > 0) || float.IsInfinity(LearningRate))
        {
            throw new MinnowException($"learning rate {LearningRate} must be a positive number.");
        }
    }
}

/// <summary>What one optimiser step did.</summary>
public readonly record struct StepResult(int Step, double Loss, float LearningRate, double GradientNorm, long Tokens, TimeSpan Elapsed);

/// <summary>
/// Trains an <see cref="ITrainingModel"/> (Llama, GPT-NeoX or GPT-2) on a token stream: each step samples
/// <c>BatchSize × AccumulationSteps</c> random windows (a pure function of seed and step, so a resumed run sees
/// the same batches), accumulates gradients, clips them by global norm and takes an AdamW step on the warm-up +
/// cosine schedule. Checkpoints hold the weights, both moments and the step, so resuming continues bit-identically.
/// </summary>
public sealed unsafe class Trainer : IDisposable
{
    private const string MetaStep = "minnow.training.step";
    private const string MetaOptions = "minnow.training.options";
    private const string MetaConfig = "minnow.training.config";
    private const string MomentPrefix1 = "optimizer.exp_avg.";
    private const string MomentPrefix2 = "optimizer.exp_avg_sq.";

    private readonly int[] _tokens;
    private readonly int[] _inputs;
    private readonly int[] _targets;
    private readonly LearningRateSchedule _schedule;
    private readonly WorkerPool _pool;
    private readonly ParameterStore _trained;

    /// <param name="trained">
    /// The parameters the optimiser updates (default: all of the model's); LoRA passes its adapters, whose base
    /// stays frozen.
    /// </param>
    public Trainer(ITrainingModel model, int[] trainTokens, TrainingOptions options, WorkerPool? pool = null, ParameterStore? trained = null)
    {
        options.Validate();
        if (trainTokens.Length < options.SequenceLength + 1)
        {
            throw new MinnowException($"the training text has {trainTokens.Length} tokens, fewer than one context of {options.SequenceLength} + 1; use more text or a smaller --ctx.");
        }

        Model = model;
        Options = options;
        _tokens = trainTokens;
        _pool = pool ?? WorkerPool.Shared;
        _schedule = options.Schedule();
        _trained = trained ?? model.Parameters;
        Optimizer = new AdamW(_trained, options.Beta1, options.Beta2, options.Epsilon, options.WeightDecay, _pool);
        int n = options.BatchSize * options.SequenceLength;
        _inputs = new int[n];
        _targets = new int[n];
        model.EnsureCapacity(options.BatchSize, options.SequenceLength);
    }

    public ITrainingModel Model { get; }

    public TrainingOptions Options { get; }

    public AdamW Optimizer { get; }

    /// <summary>Whether <see cref="Dispose"/> also disposes the model (true when <see cref="Resume"/> created it).</summary>
    public bool OwnsModel { get; set; }

    /// <summary>Steps completed.</summary>
    public int Step { get; private set; }

    public bool Finished => Step >= Options.Steps;

    /// <summary>Tokens processed per optimiser step.</summary>
    public long TokensPerStep => (long)Options.BatchSize * Options.AccumulationSteps * Options.SequenceLength;

    /// <summary>Runs one optimiser step and returns its mean training loss.</summary>
    public StepResult TrainStep()
    {
        TryTrainStep(CancellationToken.None, out var result);
        return result;
    }

    /// <summary>
    /// Runs one optimiser step unless cancellation is requested before it completes (checked before every
    /// micro-batch); a cancelled step changes nothing and returns false.
    /// </summary>
    public bool TryTrainStep(CancellationToken cancellationToken, out StepResult result)
    {
        var watch = Stopwatch.StartNew();
        var o = Options;
        result = default;
        _trained.ZeroGrads();
        double loss = 0;
        for (int micro = 0; micro < o.AccumulationSteps; micro++)
        {
            if (cancellationToken.IsCancellationRequested)
            {
                return false;
            }

            FillBatch(Step, micro);
            loss += Model.ForwardBackward(_inputs, _targets, o.BatchSize, o.SequenceLength, 1f / o.AccumulationSteps).MeanLoss;
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return false;
        }

        loss /= o.AccumulationSteps;
        double norm = GradientClipping.ClipGlobalNorm(_trained, o.ClipNorm, _pool);
        float lr = _schedule.At(Step);
        Optimizer.Update(lr);
        Step++;
        result = new StepResult(Step, loss, lr, norm, TokensPerStep, watch.Elapsed);
        return true;
    }

    private void FillBatch(int step, int micro)
    {
        int T = Options.SequenceLength;
        var rng = SplitMix64.For(Options.Seed, step + 1, micro);
        int starts = _tokens.Length - T;
        for (int b = 0; b < Options.BatchSize; b++)
        {
            int s = rng.NextInt(starts);
            _tokens.AsSpan(s, T).CopyTo(_inputs.AsSpan(b * T, T));
            _tokens.AsSpan(s + 1, T).CopyTo(_targets.AsSpan(b * T, T));
        }
    }

    /// <summary>
    /// Mean next-token NLL over consecutive non-overlapping windows of <paramref name="seqLen"/> + 1 tokens
    /// (each window predicts its last seqLen tokens from the ones before, starting fresh).
    /// </summary>
    public static double MeanNll(ITrainingModel model, ReadOnlySpan<int> tokens, int seqLen, int batch = 8)
    {
        int windows = (tokens.Length - 1) / seqLen;
        if (windows == 0)
        {
            throw new MinnowException($"{tokens.Length} tokens are too few to evaluate with a context of {seqLen}.");
        }

        var inputs = new int[batch * seqLen];
        var targets = new int[batch * seqLen];
        double total = 0;
        long count = 0;
        for (int w0 = 0; w0 < windows; w0 += batch)
        {
            int b = Math.Min(batch, windows - w0);
            for (int i = 0; i < b; i++)
            {
                int s = (w0 + i) * seqLen;
                tokens.Slice(s, seqLen).CopyTo(inputs.AsSpan(i * seqLen, seqLen));
                tokens.Slice(s + 1, seqLen).CopyTo(targets.AsSpan(i * seqLen, seqLen));
            }

            var (sum, n) = model.Evaluate(inputs.AsSpan(0, b * seqLen), targets.AsSpan(0, b * seqLen), b, seqLen);
            total += sum;
            count += n;
        }

        return total / count;
    }

    // ---- Checkpoints ----

    /// <summary>Writes weights, AdamW moments, the step and the options to one safetensors file, atomically.</summary>
    public void SaveCheckpoint(string path)
    {
        var writer = new SafetensorsWriter();
        var store = Model.Parameters;
        store.AddTo(writer);

        foreach (var p in store.All)
        {
            writer.Add(MomentPrefix1 + p.Name, p.Shape, new ReadOnlySpan<float>(Optimizer.M + p.Offset, (int)p.Count));
            writer.Add(MomentPrefix2 + p.Name, p.Shape, new ReadOnlySpan<float>(Optimizer.V + p.Offset, (int)p.Count));
        }

        writer.AddMetadata("format", "pt");
        writer.AddMetadata(MetaStep, Step.ToString(System.Globalization.CultureInfo.InvariantCulture));
        writer.AddMetadata(MetaOptions, JsonSerializer.Serialize(Options, TrainingJsonContext.Default.TrainingOptions));
        writer.AddMetadata(MetaConfig, Model.HuggingFaceConfigJson());
        writer.Save(path);
    }

    /// <summary>The options and model config stored in a checkpoint.</summary>
    public static (TrainingOptions Options, ModelConfig Config, int Step) ReadCheckpointInfo(string path)
    {
        using var file = SafetensorsFile.Open(path);
        return ReadInfo(file, path);
    }

    private static (TrainingOptions, ModelConfig, int) ReadInfo(SafetensorsFile file, string path)
    {
        if (!file.Metadata.TryGetValue(MetaStep, out string? stepText) || !file.Metadata.TryGetValue(MetaOptions, out string? optionsJson) ||
            !file.Metadata.TryGetValue(MetaConfig, out string? configJson))
        {
            throw new MinnowException($"{path}: not a Minnow training checkpoint (no step, options or config in its metadata).");
        }

        var options = JsonSerializer.Deserialize(optionsJson, TrainingJsonContext.Default.TrainingOptions)
            ?? throw new MinnowException($"{path}: unreadable training options.");
        using var doc = JsonDocument.Parse(configJson);
        var config = ModelConfig.FromHuggingFace(doc.RootElement, path);
        return (options, config, int.Parse(stepText, System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>
    /// Restores a run from a checkpoint: weights, moments and step. <paramref name="options"/> defaults to the
    /// stored ones (pass them changed, e.g. more steps, to extend a run; the schedule then differs).
    /// </summary>
    public static Trainer Resume(string path, int[] trainTokens, TrainingOptions? options = null, WorkerPool? pool = null)
    {
        using var file = SafetensorsFile.Open(path);
        var (stored, config, step) = ReadInfo(file, path);
        var model = TrainingModels.Create(config, pool);
        try
        {
            var trainer = new Trainer(model, trainTokens, options ?? stored, pool);
            var store = model.Parameters;
            foreach (var p in store.All)
            {
                Read(file, path, p.Name, p, store.Value(p));
                Read(file, path, MomentPrefix1 + p.Name, p, trainer.Optimizer.M + p.Offset);
                Read(file, path, MomentPrefix2 + p.Name, p, trainer.Optimizer.V + p.Offset);
            }

            trainer.Step = step;
            trainer.Optimizer.Step = step;
            trainer.OwnsModel = true;
            return trainer;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private static void Read(SafetensorsFile file, string path, string name, Parameter p, float* destination)
    {
        if (!file.Tensors.TryGetValue(name, out var t) || t.Type != DType.F32 || t.ElementCount != p.Count)
        {
            throw new MinnowException($"{path}: checkpoint tensor '{name}' is missing or does not match the model.");
        }

        Buffer.MemoryCopy(t.Data, destination, p.Count * sizeof(float), p.Count * sizeof(float));
    }

    /// <summary>Frees the optimiser state (and the model, when <see cref="Resume"/> created it).</summary>
    public void Dispose()
    {
        Optimizer.Dispose();
        if (OwnsModel)
        {
            Model.Dispose();
        }
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(TrainingOptions))]
internal sealed partial class TrainingJsonContext : System.Text.Json.Serialization.JsonSerializerContext;
