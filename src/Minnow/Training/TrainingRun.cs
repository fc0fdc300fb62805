using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Minnow.Formats.Safetensors;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>What <see cref="TrainingRun"/> trains and where it writes.</summary>
public sealed record TrainingRunOptions
{
    /// <summary>A UTF-8 text file.</summary>
    public required string DataPath { get; init; }

    /// <summary>The output folder (a Hugging Face model folder when done).</summary>
    public required string OutputFolder { get; init; }

    public int VocabSize { get; init; } = 2048;

    public int HiddenSize { get; init; } = 256;

    public int Layers { get; init; } = 4;

    public int Heads { get; init; } = 4;

    /// <summary>Key/value heads (default: as many as query heads).</summary>
    public int? KvHeads { get; init; }

    public int IntermediateSize { get; init; } = 768;

    /// <summary>The context length trained on (and max_position_embeddings of the result).</summary>
    public int Context { get; init; } = 128;

    /// <summary>Optimiser settings; <see cref="TrainingOptions.SequenceLength"/> is taken from <see cref="Context"/>.</summary>
    public TrainingOptions Training { get; init; } = new();

    /// <summary>The last fraction of the text, kept out of training and written to held-out.txt.</summary>
    public double HeldOutFraction { get; init; } = 0.05;

    /// <summary>Continue from the checkpoint in the output folder (its shape and options win).</summary>
    public bool Resume { get; init; }

    /// <summary>On resume, a new total step count (extends the run; the schedule is stretched to it).</summary>
    public int? ResumeSteps { get; init; }

    /// <summary>Steps between checkpoints (and held-out evaluations).</summary>
    public int CheckpointEvery { get; init; } = 250;

    /// <summary>How model.safetensors stores the weights.</summary>
    public DType WeightsType { get; init; } = DType.F32;
}

/// <summary>A progress report from a training run.</summary>
public readonly record struct TrainingProgress(string Phase, int Step, int TotalSteps, double Loss, float LearningRate, double TokensPerSecond,
    TimeSpan Elapsed, TimeSpan? Remaining, double? HeldOutLoss);

/// <summary>The outcome of a training run.</summary>
public sealed record TrainingSummary
{
    public required string OutputFolder { get; init; }

    public required int Steps { get; init; }

    public required int TotalSteps { get; init; }

    public required bool Cancelled { get; init; }

    public required long Parameters { get; init; }

    public required int VocabSize { get; init; }

    public required long TrainTokens { get; init; }

    public required long HeldOutTokens { get; init; }

    /// <summary>Mean training loss over the last (up to) 50 steps of this session.</summary>
    public required double FinalTrainLoss { get; init; }

    public double? HeldOutLoss { get; init; }

    public double? HeldOutPerplexity => HeldOutLoss is double l ? Math.Exp(l) : null;

    public required double TokensPerSecond { get; init; }

    public required double Seconds { get; init; }
}

/// <summary>
/// Trains a small Llama-architecture model from scratch on a text file: splits off the held-out tail, learns a
/// byte-level BPE tokenizer on the rest, trains with <see cref="Trainer"/>, checkpoints periodically (and when
/// cancelled), and leaves a Hugging Face folder: config.json, model.safetensors, tokenizer.json,
/// tokenizer_config.json, generation_config.json, held-out.txt, training.json and checkpoint.safetensors.
/// </summary>
public static class TrainingRun
{
    public const string CheckpointFile = "checkpoint.safetensors";
    public const string HeldOutFile = "held-out.txt";

    public static TrainingSummary Run(TrainingRunOptions o, Action<TrainingProgress>? progress = null, CancellationToken cancellationToken = default,
        WorkerPool? pool = null)
    {
        var watch = Stopwatch.StartNew();
        var (trainText, heldOutText) = ReadAndSplit(o.DataPath, o.HeldOutFraction);
        Directory.CreateDirectory(o.OutputFolder);
        string checkpoint = Path.Combine(o.OutputFolder, CheckpointFile);
        string tokenizerPath = Path.Combine(o.OutputFolder, "tokenizer.json");
        if (o.Resume && !File.Exists(checkpoint))
        {
            throw new MinnowException($"{o.OutputFolder}: no {CheckpointFile} to resume from.");
        }

        ByteLevelBpe bpe;
        if (o.Resume && File.Exists(tokenizerPath))
        {
            bpe = ByteLevelBpe.Load(tokenizerPath);
        }
        else
        {
            progress?.Invoke(new TrainingProgress("tokenizer", 0, 0, 0, 0, 0, watch.Elapsed, null, null));
            bpe = BpeTokenizerTrainer.Train(trainText, o.VocabSize, cancellationToken: cancellationToken);
            bpe.Save(tokenizerPath);
        }

        int endOfText = bpe.TokenId(BpeTokenizerTrainer.EndOfText) ?? throw new MinnowException($"{tokenizerPath}: no {BpeTokenizerTrainer.EndOfText} token.");
        progress?.Invoke(new TrainingProgress("encoding", 0, 0, 0, 0, 0, watch.Elapsed, null, null));
        int[] trainTokens = bpe.Encode(trainText);
        int[] heldOutTokens = heldOutText.Length > 0 ? bpe.Encode(heldOutText) : [];
        cancellationToken.ThrowIfCancellationRequested();
        AtomicFile.WriteAllText(Path.Combine(o.OutputFolder, HeldOutFile), heldOutText);

        Trainer trainer;
        if (o.Resume)
        {
            var (stored, _, _) = Trainer.ReadCheckpointInfo(checkpoint);
            trainer = Trainer.Resume(checkpoint, trainTokens, o.ResumeSteps is int steps ? stored with { Steps = steps } : stored, pool);
        }
        else
        {
            var config = LlamaTrainingModel.CreateConfig(bpe.VocabSize, o.HiddenSize, o.Layers, o.Heads, o.KvHeads ?? o.Heads, o.IntermediateSize, o.Context,
                tieEmbeddings: true, bosTokenId: endOfText, eosTokenId: endOfText);
            var options = o.Training with { SequenceLength = o.Context };
            var model = LlamaTrainingModel.CreateRandom(config, options.Seed, pool);
            try
            {
                trainer = new Trainer(model, trainTokens, options, pool);
            }
            catch
            {
                model.Dispose();
                throw;
            }

            trainer.OwnsModel = true;
        }

        using (trainer)
        {
            var model = trainer.Model;
            int ctx = trainer.Options.SequenceLength;
            AtomicFile.WriteAllText(Path.Combine(o.OutputFolder, "tokenizer_config.json"), bpe.TokenizerConfigJson(BpeTokenizerTrainer.EndOfText, ctx));
            int[] probe = heldOutTokens.Length > ctx * 32 ? heldOutTokens[..(ctx * 32 + 1)] : heldOutTokens;
            double? heldOut = null;
            var recent = new Queue<double>();
            int startStep = trainer.Step;
            var trainWatch = Stopwatch.StartNew();
            bool cancelled = false;
            while (!trainer.Finished)
            {
                if (!trainer.TryTrainStep(cancellationToken, out var r))
                {
                    cancelled = true;
                    break;
                }

                recent.Enqueue(r.Loss);
                if (recent.Count > 50)
                {
                    recent.Dequeue();
                }

                if (trainer.Step % o.CheckpointEvery == 0 && !trainer.Finished)
                {
                    trainer.SaveCheckpoint(checkpoint);
                    if (probe.Length > ctx)
                    {
                        heldOut = Trainer.MeanNll(model, probe, ctx);
                    }
                }

                double done = trainer.Step - startStep;
                double seconds = trainWatch.Elapsed.TotalSeconds;
                double tokensPerSecond = done * trainer.TokensPerStep / Math.Max(seconds, 1e-9);
                var remaining = TimeSpan.FromSeconds(seconds / done * (trainer.Options.Steps - trainer.Step));
                progress?.Invoke(new TrainingProgress("training", trainer.Step, trainer.Options.Steps, r.Loss, r.LearningRate, tokensPerSecond,
                    watch.Elapsed, remaining, heldOut));
            }

            progress?.Invoke(new TrainingProgress("saving", trainer.Step, trainer.Options.Steps, recent.Count > 0 ? recent.Average() : 0, 0, 0, watch.Elapsed, null, heldOut));
            double trainSeconds = trainWatch.Elapsed.TotalSeconds;
            trainer.SaveCheckpoint(checkpoint);
            model.SaveHuggingFace(o.OutputFolder, o.WeightsType);
            AtomicFile.WriteAllText(Path.Combine(o.OutputFolder, "generation_config.json"),
                $"{{\n  \"bos_token_id\": {endOfText},\n  \"eos_token_id\": {endOfText},\n  \"max_length\": {ctx}\n}}\n");

            if (!cancelled && heldOutTokens.Length > ctx)
            {
                progress?.Invoke(new TrainingProgress("evaluating", trainer.Step, trainer.Options.Steps, 0, 0, 0, watch.Elapsed, null, heldOut));
                heldOut = Trainer.MeanNll(model, heldOutTokens, ctx);
            }

            var summary = new TrainingSummary
            {
                OutputFolder = o.OutputFolder,
                Steps = trainer.Step,
                TotalSteps = trainer.Options.Steps,
                Cancelled = cancelled,
                Parameters = model.Parameters.ParameterCount,
                VocabSize = model.Config.VocabSize,
                TrainTokens = trainTokens.Length,
                HeldOutTokens = heldOutTokens.Length,
                FinalTrainLoss = recent.Count > 0 ? recent.Average() : double.NaN,
                HeldOutLoss = heldOut,
                TokensPerSecond = (trainer.Step - startStep) * trainer.TokensPerStep / Math.Max(trainSeconds, 1e-9),
                Seconds = watch.Elapsed.TotalSeconds,
            };
            WriteSummary(Path.Combine(o.OutputFolder, "training.json"), summary, trainer.Options, o);
            return summary;
        }
    }

    /// <summary>
    /// Reads the text and splits off the last <paramref name="heldOutFraction"/> (moved forward to the next line
    /// start, so held-out.txt begins with a whole line).
    /// </summary>
    public static (string Train, string HeldOut) ReadAndSplit(string path, double heldOutFraction)
    {
        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: data file not found.");
        }

        if (heldOutFraction is < 0 or >= 1 || double.IsNaN(heldOutFraction))
        {
            throw new MinnowException($"--held-out {heldOutFraction} must be at least 0 and below 1.");
        }

        string text;
        try
        {
            text = new UTF8Encoding(false, true).GetString(File.ReadAllBytes(path));
        }
        catch (DecoderFallbackException)
        {
            throw new MinnowException($"{path}: not UTF-8 text.");
        }

        text = text.Replace("\r\n", "\n", StringComparison.Ordinal);
        if (text.Length > 0 && text[0] == '\uFEFF')
        {
            text = text[1..];
        }

        if (string.IsNullOrWhiteSpace(text))
        {
            throw new MinnowException($"{path}: the data file has no text.");
        }

        if (heldOutFraction == 0)
        {
            return (text, "");
        }

        int cut = (int)(text.Length * (1 - heldOutFraction));
        int lineStart = text.IndexOf('\n', cut);
        if (lineStart >= 0 && lineStart + 1 < text.Length)
        {
            cut = lineStart + 1;
        }

        return (text[..cut], text[cut..]);
    }

    private static void WriteSummary(string path, TrainingSummary s, TrainingOptions t, TrainingRunOptions o)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteString("data", Path.GetFileName(o.DataPath));
            json.WriteNumber("steps", s.Steps);
            json.WriteNumber("total_steps", s.TotalSteps);
            json.WriteBoolean("cancelled", s.Cancelled);
            json.WriteNumber("parameters", s.Parameters);
            json.WriteNumber("vocab_size", s.VocabSize);
            json.WriteNumber("train_tokens", s.TrainTokens);
            json.WriteNumber("held_out_tokens", s.HeldOutTokens);
            if (double.IsFinite(s.FinalTrainLoss))
            {
                json.WriteNumber("final_train_loss", Math.Round(s.FinalTrainLoss, 4));
            }

            if (s.HeldOutLoss is double h)
            {
                json.WriteNumber("held_out_loss", Math.Round(h, 4));
                json.WriteNumber("held_out_perplexity", Math.Round(Math.Exp(h), 3));
            }

            json.WriteNumber("tokens_per_second", Math.Round(s.TokensPerSecond));
            json.WriteNumber("seconds", Math.Round(s.Seconds, 1));
            json.WritePropertyName("options");
            JsonSerializer.Serialize(json, t, TrainingJsonContext.Default.TrainingOptions);
            json.WriteEndObject();
        }

        AtomicFile.WriteAllText(path, Encoding.UTF8.GetString(buffer.ToArray()) + "\n");
    }
}
