using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Minnow.Formats.Safetensors;
using Minnow.Kernels;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>What <see cref="LoraFinetune"/> trains and where it writes.</summary>
public sealed record LoraFinetuneOptions
{
    /// <summary>The base model (a Hugging Face folder or anything <see cref="LoadedModel.Open"/> reads; Llama architecture).</summary>
    public required string ModelPath { get; init; }

    /// <summary>A UTF-8 text file.</summary>
    public required string DataPath { get; init; }

    /// <summary>The adapter folder (PEFT layout).</summary>
    public required string OutputFolder { get; init; }

    public int Rank { get; init; } = 8;

    public float Alpha { get; init; } = 32;

    public IReadOnlyList<LoraTarget> Targets { get; init; } = [LoraTarget.QProj, LoraTarget.VProj];

    public int Steps { get; init; } = 200;

    public int BatchSize { get; init; } = 8;

    /// <summary>Tokens per training sequence (default: the model's context, at most 256).</summary>
    public int? Context { get; init; }

    public float LearningRate { get; init; } = 2e-3f;

    /// <summary>Warm-up steps (default: a twentieth of the run, at most 200).</summary>
    public int? WarmupSteps { get; init; }

    /// <summary>AdamW weight decay on A and B (PEFT recipes commonly use 0).</summary>
    public float WeightDecay { get; init; }

    public float ClipNorm { get; init; } = 1f;

    public long Seed { get; init; } = 1;

    /// <summary>The last fraction of the text, kept out of training to measure the adapter on.</summary>
    public double HeldOutFraction { get; init; } = 0.1;

    public void Validate()
    {
        if (Rank <= 0 || Rank > 4096)
        {
            throw new MinnowException($"--lora-rank {Rank} must be between 1 and 4096.");
        }

        if (!(Alpha > 0) || float.IsInfinity(Alpha))
        {
            throw new MinnowException($"--lora-alpha {Alpha} must be a positive number.");
        }

        if (Targets.Count == 0)
        {
            throw new MinnowException($"--targets: no target modules (choose from {LoraTargets.AllNames}).");
        }

        if (Context is < 2)
        {
            throw new MinnowException($"--context {Context} must be at least 2.");
        }

        if (!(WeightDecay >= 0) || !(ClipNorm >= 0))
        {
            throw new MinnowException("--weight-decay and --clip must not be negative.");
        }

        ToTrainingOptions(Context ?? 2).Validate();
    }

    internal TrainingOptions ToTrainingOptions(int context) => new()
    {
        Steps = Steps,
        BatchSize = BatchSize,
        SequenceLength = context,
        LearningRate = LearningRate,
        WarmupSteps = WarmupSteps,
        WeightDecay = WeightDecay,
        ClipNorm = ClipNorm,
        Seed = Seed,
    };
}

/// <summary>A progress report from a fine-tune: phase "evaluating", "training" or "saving".</summary>
public readonly record struct LoraFinetuneProgress(string Phase, int Step, int TotalSteps, double Loss, float LearningRate, double TokensPerSecond, TimeSpan? Remaining);

/// <summary>The outcome of a fine-tune. Losses are mean next-token NLL in nats (perplexity = e^loss).</summary>
public sealed record LoraFinetuneSummary
{
    public required string OutputFolder { get; init; }

    public required string BaseModel { get; init; }

    public required int Steps { get; init; }

    public required int TotalSteps { get; init; }

    public required bool Cancelled { get; init; }

    public required int Context { get; init; }

    public required long AdapterParameters { get; init; }

    public required long BaseParameters { get; init; }

    public required long AdapterBytes { get; init; }

    public required long BaseBytes { get; init; }

    public required long TrainTokens { get; init; }

    public required long HeldOutTokens { get; init; }

    /// <summary>Loss on the start of the training text (up to 32 windows) before and after.</summary>
    public required double TrainLossBefore { get; init; }

    public required double TrainLossAfter { get; init; }

    /// <summary>Loss on the held-out text before and after (null when it is shorter than one window).</summary>
    public double? HeldOutLossBefore { get; init; }

    public double? HeldOutLossAfter { get; init; }

    /// <summary>Mean training loss over the last (up to) 20 steps.</summary>
    public required double FinalTrainLoss { get; init; }

    public required double TokensPerSecond { get; init; }

    public required double Seconds { get; init; }
}

/// <summary>
/// LoRA fine-tuning of a Llama-architecture model on a text file: the base weights are loaded as float32 and
/// frozen, adapters (<see cref="LoraLayers"/>) are trained with AdamW on the warm-up + cosine schedule with
/// gradient clipping, on random windows of the text (a pure function of seed and step), and saved in PEFT's layout.
/// The text's perplexity is measured before and after, on its start and on its held-out tail. Cancelling saves the
/// adapter trained so far.
/// </summary>
public static class LoraFinetune
{
    public const string SummaryFile = "finetune.json";

    /// <summary>How many windows of the training text are scored before and after.</summary>
    private const int ProbeWindows = 32;

    public static LoraFinetuneSummary Run(LoraFinetuneOptions o, Action<LoraFinetuneProgress>? progress = null, CancellationToken cancellationToken = default,
        WorkerPool? pool = null)
    {
        o.Validate();
        var watch = Stopwatch.StartNew();
        // Everything that can fail on bad input happens before the first progress report (one clean error line).
        var (trainText, heldOutText) = TrainingRun.ReadAndSplit(o.DataPath, o.HeldOutFraction);
        LlamaTrainingModel model;
        int[] trainTokens, heldOutTokens;
        string basePath;
        long baseBytes;
        using (var loaded = LoadedModel.Open(o.ModelPath, pool))
        {
            basePath = loaded.Path;
            baseBytes = loaded.Facts.WeightFileBytes;
            if (loaded.Config.Architecture != Architecture.Llama)
            {
                throw new MinnowException($"{loaded.Path}: LoRA fine-tuning supports Llama-architecture models; this one is {loaded.Config.ModelType}.");
            }

            var tokenizer = loaded.Tokenizer ?? throw new MinnowException($"{loaded.Path}: the model has no tokenizer, so {o.DataPath} cannot be tokenized.");
            trainTokens = [.. tokenizer.Encode(trainText, addSpecial: false, parseSpecial: false)];
            heldOutTokens = heldOutText.Length > 0 ? [.. tokenizer.Encode(heldOutText, addSpecial: false, parseSpecial: false)] : [];
            model = ToTrainable(loaded.Config, loaded.Model.Weights, pool);
        }

        using var modelScope = model;
        int context = Math.Min(o.Context ?? Math.Min(256, model.Config.MaxPositions), model.Config.MaxPositions);
        if (trainTokens.Length < context + 1)
        {
            throw new MinnowException($"{o.DataPath}: the training part has {trainTokens.Length} tokens, fewer than one context of {context} + 1; use more text or a smaller --context.");
        }

        var options = o.ToTrainingOptions(context);
        var loraConfig = new LoraConfig { Rank = o.Rank, Alpha = o.Alpha, Targets = o.Targets, BaseModel = basePath };
        using var lora = new LoraLayers(model.Config, loraConfig, pool);
        lora.Initialize(o.Seed);
        model.AttachLora(lora);
        model.EnsureCapacity(options.BatchSize, context);

        int[] probe = trainTokens.Length > (context * ProbeWindows) + 1 ? trainTokens[..((context * ProbeWindows) + 1)] : trainTokens;
        bool hasHeldOut = heldOutTokens.Length > context;
        progress?.Invoke(new LoraFinetuneProgress("evaluating", 0, o.Steps, 0, 0, 0, null));
        double trainBefore = Trainer.MeanNll(model, probe, context);
        double? heldOutBefore = hasHeldOut ? Trainer.MeanNll(model, heldOutTokens, context) : null;

        using var trainer = new Trainer(model, trainTokens, options, pool, lora.Parameters);
        var recent = new Queue<double>();
        var trainWatch = Stopwatch.StartNew();
        bool cancelled = false;
        int step = 0;
        for (; step < options.Steps; step++)
        {
            if (!trainer.TryTrainStep(cancellationToken, out var result))
            {
                cancelled = true;
                break;
            }

            recent.Enqueue(result.Loss);
            if (recent.Count > 20)
            {
                recent.Dequeue();
            }

            double seconds = trainWatch.Elapsed.TotalSeconds;
            double tokensPerSecond = (step + 1.0) * trainer.TokensPerStep / Math.Max(seconds, 1e-9);
            progress?.Invoke(new LoraFinetuneProgress("training", step + 1, options.Steps, result.Loss, result.LearningRate, tokensPerSecond,
                TimeSpan.FromSeconds(seconds / (step + 1) * (options.Steps - step - 1))));
        }

        double trainSeconds = trainWatch.Elapsed.TotalSeconds;
        progress?.Invoke(new LoraFinetuneProgress("saving", step, options.Steps, 0, 0, 0, null));
        lora.Save(o.OutputFolder, basePath);
        long adapterBytes = new FileInfo(Path.Combine(o.OutputFolder, LoraConfig.WeightsFile)).Length;

        double trainAfter = trainBefore;
        double? heldOutAfter = heldOutBefore;
        if (!cancelled)
        {
            progress?.Invoke(new LoraFinetuneProgress("evaluating", step, options.Steps, 0, 0, 0, null));
            trainAfter = Trainer.MeanNll(model, probe, context);
            heldOutAfter = hasHeldOut ? Trainer.MeanNll(model, heldOutTokens, context) : null;
        }

        var summary = new LoraFinetuneSummary
        {
            OutputFolder = Path.GetFullPath(o.OutputFolder),
            BaseModel = basePath,
            Steps = step,
            TotalSteps = options.Steps,
            Cancelled = cancelled,
            Context = context,
            AdapterParameters = lora.Parameters.ParameterCount,
            BaseParameters = model.Parameters.ParameterCount,
            AdapterBytes = adapterBytes,
            BaseBytes = baseBytes,
            TrainTokens = trainTokens.Length,
            HeldOutTokens = heldOutTokens.Length,
            TrainLossBefore = trainBefore,
            TrainLossAfter = trainAfter,
            HeldOutLossBefore = heldOutBefore,
            HeldOutLossAfter = heldOutAfter,
            FinalTrainLoss = recent.Count > 0 ? recent.Average() : double.NaN,
            TokensPerSecond = step * (double)trainer.TokensPerStep / Math.Max(trainSeconds, 1e-9),
            Seconds = watch.Elapsed.TotalSeconds,
        };
        AtomicFile.WriteAllText(Path.Combine(o.OutputFolder, SummaryFile), SummaryJson(summary, o, indented: true) + "\n");
        return summary;
    }

    /// <summary>
    /// The base as a float32 training model. A GGUF (or llama2.c) Llama keeps its q/k rows in llama.cpp's
    /// interleaved-RoPE order; they are put back in Hugging Face order, so the adapter is trained (and saved) for
    /// the Hugging Face layout that PEFT and <see cref="LoraAdapter"/> expect.
    /// </summary>
    internal static LlamaTrainingModel ToTrainable(ModelConfig config, WeightSet weights, WorkerPool? pool)
    {
        if (!config.RopeStyle.HasInterleavedRows())
        {
            return LlamaTrainingModel.FromWeights(config, weights, pool);
        }

        var model = LlamaTrainingModel.FromWeights(config with { RopeStyle = RopeStyle.RotateHalf }, weights, pool);
        foreach (var p in model.Parameters.All)
        {
            if (LoraMerge.HuggingFaceRowOrder(config, p.Name) is int[] order)
            {
                var values = model.Parameters.ValueSpan(p);
                LoraAdapter.UnpermuteRows(values.ToArray(), order, checked((int)(p.Count / order.Length))).CopyTo(values);
            }
        }

        return model;
    }

    /// <summary>The summary and the options that produced it, as JSON (what finetune.json holds).</summary>
    public static string SummaryJson(LoraFinetuneSummary s, LoraFinetuneOptions o, bool indented)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = indented, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            static void Number(Utf8JsonWriter w, string name, double? value)
            {
                if (value is double v && double.IsFinite(v))
                {
                    w.WriteNumber(name, Math.Round(v, 5));
                }
                else
                {
                    w.WriteNull(name);
                }
            }

            w.WriteStartObject();
            w.WriteString("adapter", s.OutputFolder);
            w.WriteString("base_model", s.BaseModel);
            w.WriteString("data", Path.GetFullPath(o.DataPath));
            w.WriteNumber("steps", s.Steps);
            w.WriteNumber("total_steps", s.TotalSteps);
            w.WriteBoolean("cancelled", s.Cancelled);
            w.WriteNumber("lora_rank", o.Rank);
            Number(w, "lora_alpha", o.Alpha);
            w.WriteStartArray("targets");
            foreach (var t in o.Targets)
            {
                w.WriteStringValue(LoraTargets.Name(t));
            }

            w.WriteEndArray();
            w.WriteNumber("context", s.Context);
            w.WriteNumber("batch", o.BatchSize);
            Number(w, "learning_rate", o.LearningRate);
            w.WriteNumber("seed", o.Seed);
            w.WriteNumber("adapter_parameters", s.AdapterParameters);
            w.WriteNumber("base_parameters", s.BaseParameters);
            w.WriteNumber("adapter_bytes", s.AdapterBytes);
            w.WriteNumber("base_bytes", s.BaseBytes);
            w.WriteNumber("train_tokens", s.TrainTokens);
            w.WriteNumber("held_out_tokens", s.HeldOutTokens);
            Number(w, "train_loss_before", s.TrainLossBefore);
            Number(w, "train_loss_after", s.TrainLossAfter);
            Number(w, "train_perplexity_before", Math.Exp(s.TrainLossBefore));
            Number(w, "train_perplexity_after", Math.Exp(s.TrainLossAfter));
            Number(w, "held_out_loss_before", s.HeldOutLossBefore);
            Number(w, "held_out_loss_after", s.HeldOutLossAfter);
            Number(w, "held_out_perplexity_before", s.HeldOutLossBefore is double hb ? Math.Exp(hb) : null);
            Number(w, "held_out_perplexity_after", s.HeldOutLossAfter is double ha ? Math.Exp(ha) : null);
            Number(w, "final_train_loss", s.FinalTrainLoss);
            Number(w, "tokens_per_second", s.TokensPerSecond);
            Number(w, "seconds", s.Seconds);
            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }
}
