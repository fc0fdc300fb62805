using System.Diagnostics;
using Minnow.Export;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Quantization;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>What <see cref="QuantizationAwareTraining.Run"/> trains and where it writes.</summary>
public sealed record QatOptions
{
    /// <summary>The float model (anything <see cref="LoadedModel.Open"/> reads; Llama architecture).</summary>
    public required string ModelPath { get; init; }

    /// <summary>A UTF-8 text file (or give <see cref="TokenIds"/>).</summary>
    public string? DataPath { get; init; }

    /// <summary>Token ids to train on instead of a text file, for models without a tokenizer.</summary>
    public IReadOnlyList<int>? TokenIds { get; init; }

    /// <summary>
    /// Distil from the float model: train towards its next-token distributions (KL divergence) rather than the
    /// text's next tokens, so the quantized model learns to reproduce the original instead of fitting the text.
    /// With ids sampled from the model itself this is LLM-QAT's data-free distillation (Liu et al. 2023).
    /// </summary>
    public bool Distill { get; init; }

    /// <summary>Also fake-quantize the inputs of the quantized matrices (8 bits per block of 32), as the integer kernels do at run time.</summary>
    public bool QuantizeActivations { get; init; }

    /// <summary>The quantized GGUF to write.</summary>
    public required string OutputPath { get; init; }

    /// <summary>The block format trained for and written: Q8_0, Q4_0 or an INT4 group type.</summary>
    public DType Scheme { get; init; } = DType.Q4_0;

    public int Steps { get; init; } = 100;

    public int BatchSize { get; init; } = 8;

    /// <summary>Tokens per training sequence (default: the model's context, at most 256).</summary>
    public int? Context { get; init; }

    public float LearningRate { get; init; } = 5e-5f;

    public float ClipNorm { get; init; } = 1f;

    public long Seed { get; init; } = 1;

    /// <summary>The last fraction of the text, kept out of training to measure on.</summary>
    public double HeldOutFraction { get; init; } = 0.1;

    public void Validate()
    {
        if ((DataPath is null) == (TokenIds is null))
        {
            throw new MinnowException("give the training text with --data FILE (or token ids with --ids FILE), one of the two.");
        }

        if (Scheme is not (DType.Q8_0 or DType.Q4_0) && !Scheme.IsIntGroup())
        {
            throw new MinnowException($"--scheme must be q8_0, q4_0, int4 or int3, not {Scheme.Name()}.");
        }

        if (Context is < 2)
        {
            throw new MinnowException($"--context {Context} must be at least 2.");
        }

        ToTrainingOptions(Context ?? 2).Validate();
    }

    internal TrainingOptions ToTrainingOptions(int context) => new()
    {
        Steps = Steps,
        BatchSize = BatchSize,
        SequenceLength = context,
        LearningRate = LearningRate,
        WeightDecay = 0,
        ClipNorm = ClipNorm,
        Seed = Seed,
    };
}

/// <summary>A progress report from quantization-aware training: phase "evaluating", "training" or "writing".</summary>
public readonly record struct QatProgress(string Phase, int Step, int TotalSteps, double Loss, float LearningRate, double TokensPerSecond, TimeSpan? Remaining);

/// <summary>The outcome of quantization-aware training. Losses are mean next-token NLL in nats with the linear layers fake-quantized.</summary>
public sealed record QatSummary
{
    public required string OutputPath { get; init; }

    public required int Steps { get; init; }

    public required int TotalSteps { get; init; }

    public required bool Cancelled { get; init; }

    public required int Context { get; init; }

    public required long HeldOutTokens { get; init; }

    /// <summary>Held-out loss of the round-to-nearest model before and after training (null without held-out text).</summary>
    public double? HeldOutLossBefore { get; init; }

    public double? HeldOutLossAfter { get; init; }

    public required long FileBytes { get; init; }

    public required double TokensPerSecond { get; init; }

    public required double Seconds { get; init; }
}

/// <summary>
/// Quantization-aware training of a Llama-architecture model: all weights are trained with AdamW (warm-up +
/// cosine, gradient clipping, no weight decay) while the linear layers compute with their round-to-nearest
/// fake-quantized weights (<see cref="LlamaTrainingModel.EnableFakeQuantization"/>, straight-through estimator);
/// the trained float weights are then quantized by <see cref="ModelQuantizer"/> (round to nearest, the same scheme)
/// and written as GGUF atomically. Cancelling writes the model trained so far.
/// </summary>
public static class QuantizationAwareTraining
{
    /// <summary>
    /// Trains <paramref name="model"/> in place with fake quantization in <paramref name="scheme"/> (null: none, plain
    /// float training) on random windows of <paramref name="tokens"/> (a pure function of seed and step). Returns the
    /// steps done and whether it was cancelled. Fake quantization stays enabled afterwards.
    /// </summary>
    public static (int Steps, bool Cancelled) Train(LlamaTrainingModel model, int[] tokens, TrainingOptions options, DType? scheme,
        Action<int, double, float>? stepDone = null, CancellationToken cancellationToken = default, WorkerPool? pool = null, bool activations = false)
    {
        model.EnableFakeQuantization(scheme, activations);
        using var trainer = new Trainer(model, tokens, options, pool);
        int step = 0;
        for (; step < options.Steps; step++)
        {
            if (!trainer.TryTrainStep(cancellationToken, out var result))
            {
                return (step, true);
            }

            stepDone?.Invoke(step + 1, result.Loss, result.LearningRate);
        }

        return (step, false);
    }

    /// <summary>The training model's float weights as an inference model (borrowing its memory: use it while the training model lives).</summary>
    public static unsafe TransformerModel AsInferenceModel(LlamaTrainingModel model, WorkerPool? pool = null)
    {
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var p in model.Parameters.All)
        {
            tensors[p.Name] = new Tensor(p.Name, DType.F32, p.Shape, (byte*)model.Parameters.Value(p), null);
        }

        return ModelFactory.Create(model.Config, new WeightSet(tensors, "quantization-aware training", null), pool);
    }

    /// <summary>Round-to-nearest quantization of the training model's float weights in <paramref name="scheme"/> (self-contained).</summary>
    public static QuantizedModel Quantize(LlamaTrainingModel model, DType scheme, WorkerPool? pool = null)
    {
        using var source = AsInferenceModel(model, pool);
        return ModelQuantizer.Quantize(source, new QuantizationOptions { Scheme = scheme, Method = QuantizationMethod.Rtn }, pool: pool);
    }

    public static QatSummary Run(QatOptions o, Action<QatProgress>? progress = null, CancellationToken cancellationToken = default, WorkerPool? pool = null)
    {
        o.Validate();
        var watch = Stopwatch.StartNew();
        LlamaTrainingModel model;
        int[] trainTokens, heldOutTokens;
        GgufTokenizerMetadata.Source tokenizerMetadata;
        var loaded = LoadedModel.Open(o.ModelPath, pool);
        using var teacher = o.Distill ? new InferenceTeacher(loaded.Model) : null;
        try
        {
            if (string.Equals(loaded.Path, Path.GetFullPath(o.OutputPath), StringComparison.Ordinal))
            {
                throw new MinnowException($"{o.OutputPath}: --out is the model itself; write to another file.");
            }

            if (loaded.Config.Architecture != Architecture.Llama)
            {
                throw new MinnowException($"{loaded.Path}: quantization-aware training supports Llama-architecture models; this one is {loaded.Config.ModelType}.");
            }

            if (o.TokenIds is { } ids)
            {
                foreach (int id in ids)
                {
                    if ((uint)id >= (uint)loaded.Config.VocabSize)
                    {
                        throw new MinnowException($"token id {id} is outside the model's vocabulary of {loaded.Config.VocabSize} tokens.");
                    }
                }

                int held = (int)(ids.Count * o.HeldOutFraction);
                trainTokens = [.. ids.Take(ids.Count - held)];
                heldOutTokens = [.. ids.Skip(ids.Count - held)];
            }
            else
            {
                var (trainText, heldOutText) = TrainingRun.ReadAndSplit(o.DataPath!, o.HeldOutFraction);
                var tokenizer = loaded.Tokenizer ?? throw new MinnowException($"{loaded.Path}: the model has no tokenizer, so {o.DataPath} cannot be tokenized; give token ids with --ids FILE.");
                trainTokens = [.. tokenizer.Encode(trainText, addSpecial: false, parseSpecial: false)];
                heldOutTokens = heldOutText.Length > 0 ? [.. tokenizer.Encode(heldOutText, addSpecial: false, parseSpecial: false)] : [];
            }

            tokenizerMetadata = GgufTokenizerMetadata.For(loaded.Path, loaded.Format, loaded.Config.VocabSize);
            model = LoraFinetune.ToTrainable(loaded.Config, loaded.Model.Weights, pool);
        }
        catch
        {
            loaded.Dispose();
            throw;
        }

        using var loadedScope = loaded;
        using var modelScope = model;
        int context = Math.Min(o.Context ?? Math.Min(256, model.Config.MaxPositions), model.Config.MaxPositions);
        if (trainTokens.Length < context + 1)
        {
            throw new MinnowException($"{o.DataPath ?? "the token ids"}: the training part has {trainTokens.Length} tokens, fewer than one context of {context} + 1; use more text or a smaller --context.");
        }

        var options = o.ToTrainingOptions(context);
        bool hasHeldOut = heldOutTokens.Length > context;
        model.EnableFakeQuantization(o.Scheme, o.QuantizeActivations);
        progress?.Invoke(new QatProgress("evaluating", 0, o.Steps, 0, 0, 0, null));
        double? before = hasHeldOut ? Trainer.MeanNll(model, heldOutTokens, context) : null;

        var trainWatch = Stopwatch.StartNew();
        long tokensPerStep = (long)options.BatchSize * context;
        model.Teacher = teacher;
        var (steps, cancelled) = Train(model, trainTokens, options, o.Scheme, (step, loss, lr) =>
        {
            double seconds = trainWatch.Elapsed.TotalSeconds;
            progress?.Invoke(new QatProgress("training", step, o.Steps, loss, lr, step * tokensPerStep / Math.Max(seconds, 1e-9),
                TimeSpan.FromSeconds(seconds / step * (o.Steps - step))));
        }, cancellationToken, pool, o.QuantizeActivations);
        model.Teacher = null;
        double trainSeconds = trainWatch.Elapsed.TotalSeconds;

        double? after = before;
        if (!cancelled && hasHeldOut)
        {
            progress?.Invoke(new QatProgress("evaluating", steps, o.Steps, 0, 0, 0, null));
            after = Trainer.MeanNll(model, heldOutTokens, context);
        }

        progress?.Invoke(new QatProgress("writing", steps, o.Steps, 0, 0, 0, null));
        using (var quantized = Quantize(model, o.Scheme, pool))
        {
            GgufExporter.Export(quantized.Model, o.OutputPath, o.Scheme, tokenizerMetadata.Write);
        }

        return new QatSummary
        {
            OutputPath = Path.GetFullPath(o.OutputPath),
            Steps = steps,
            TotalSteps = o.Steps,
            Cancelled = cancelled,
            Context = context,
            HeldOutTokens = heldOutTokens.Length,
            HeldOutLossBefore = before,
            HeldOutLossAfter = after,
            FileBytes = new FileInfo(o.OutputPath).Length,
            TokensPerSecond = steps * (double)tokensPerStep / Math.Max(trainSeconds, 1e-9),
            Seconds = watch.Elapsed.TotalSeconds,
        };
    }
}
