using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Minnow.Tensors;
using Minnow.Training;
using Spectre.Console;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow train --data FILE --out DIR</c>: trains a small Llama-architecture model from scratch (tokenizer
/// included) and writes a Hugging Face model folder. Progress goes to stderr; Ctrl+C saves a checkpoint and stops
/// (continue with <c>--resume</c>).
/// </summary>
internal static class TrainCommand
{
    public static Command Create()
    {
        var data = new Option<FileInfo>("--data") { Description = "UTF-8 text file to train on.", Required = true };
        var output = new Option<DirectoryInfo>("--out") { Description = "Output folder (Hugging Face layout).", Required = true };
        var vocab = new Option<int>("--vocab") { Description = "Tokenizer vocabulary size (byte-level BPE).", DefaultValueFactory = _ => 2048 };
        var hidden = new Option<int>("--hidden") { Description = "Hidden size.", DefaultValueFactory = _ => 256 };
        var layers = new Option<int>("--layers") { Description = "Transformer layers.", DefaultValueFactory = _ => 4 };
        var heads = new Option<int>("--heads") { Description = "Attention heads.", DefaultValueFactory = _ => 4 };
        var kvHeads = new Option<int?>("--kv-heads") { Description = "Key/value heads (default: --heads)." };
        var ffn = new Option<int>("--ffn") { Description = "MLP (SwiGLU) intermediate size.", DefaultValueFactory = _ => 768 };
        var ctx = new Option<int>("--ctx") { Description = "Context length trained on.", DefaultValueFactory = _ => 128 };
        var steps = new Option<int>("--steps") { Description = "Optimiser steps.", DefaultValueFactory = _ => 1000 };
        var batch = new Option<int>("--batch") { Description = "Sequences per micro-batch.", DefaultValueFactory = _ => 16 };
        var accumulate = new Option<int>("--accumulate") { Description = "Micro-batches accumulated per step.", DefaultValueFactory = _ => 1 };
        var lr = new Option<float>("--lr") { Description = "Peak learning rate (warm-up, then cosine to a tenth).", DefaultValueFactory = _ => 1e-3f };
        var warmup = new Option<int?>("--warmup") { Description = "Warm-up steps (default: steps/20, at most 200)." };
        var weightDecay = new Option<float>("--weight-decay") { Description = "AdamW weight decay (not on norms).", DefaultValueFactory = _ => 0.1f };
        var clip = new Option<float>("--clip") { Description = "Gradient clipping by global norm (0: off).", DefaultValueFactory = _ => 1f };
        var seed = new Option<long>("--seed") { Description = "Random seed (initialisation and batches).", DefaultValueFactory = _ => 1 };
        var heldOut = new Option<double>("--held-out") { Description = "Fraction of the text (its end) kept for evaluation.", DefaultValueFactory = _ => 0.05 };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Steps between checkpoints.", DefaultValueFactory = _ => 250 };
        var dtype = new Option<string>("--dtype") { Description = "Storage of model.safetensors: f32, f16 or bf16.", DefaultValueFactory = _ => "f32" };
        var resume = new Option<bool>("--resume") { Description = "Continue from the checkpoint in --out." };
        var json = new Option<bool>("--json") { Description = "Print the summary as JSON on stdout." };

        var command = new Command("train", "Train a small Llama-architecture model from scratch on a text file.");
        foreach (Option o in new Option[] { data, output, vocab, hidden, layers, heads, kvHeads, ffn, ctx, steps, batch, accumulate, lr, warmup, weightDecay, clip, seed, heldOut, checkpointEvery, dtype, resume, json })
        {
            command.Options.Add(o);
        }

        command.SetAction((ParseResult r, CancellationToken ct) =>
        {
            var options = new TrainingRunOptions
            {
                DataPath = r.GetValue(data)!.FullName,
                OutputFolder = r.GetValue(output)!.FullName,
                VocabSize = r.GetValue(vocab),
                HiddenSize = r.GetValue(hidden),
                Layers = r.GetValue(layers),
                Heads = r.GetValue(heads),
                KvHeads = r.GetValue(kvHeads),
                IntermediateSize = r.GetValue(ffn),
                Context = r.GetValue(ctx),
                HeldOutFraction = r.GetValue(heldOut),
                Resume = r.GetValue(resume),
                ResumeSteps = r.GetResult(steps) is { Implicit: false } ? r.GetValue(steps) : null,
                CheckpointEvery = Math.Max(1, r.GetValue(checkpointEvery)),
                WeightsType = ParseDType(r.GetValue(dtype)),
                Training = new TrainingOptions
                {
                    Steps = r.GetValue(steps),
                    BatchSize = r.GetValue(batch),
                    AccumulationSteps = r.GetValue(accumulate),
                    SequenceLength = r.GetValue(ctx),
                    LearningRate = r.GetValue(lr),
                    WarmupSteps = r.GetValue(warmup),
                    WeightDecay = r.GetValue(weightDecay),
                    ClipNorm = r.GetValue(clip),
                    Seed = r.GetValue(seed),
                },
            };
            Validate(options);
            var err = r.InvocationConfiguration.Error;
            bool terminal = ReferenceEquals(err, Console.Error) && !Console.IsErrorRedirected;
            var summary = terminal ? RunWithProgressBar(options, err, ct) : RunPlain(options, err, ct);
            if (r.GetValue(json))
            {
                r.InvocationConfiguration.Output.WriteLine(SummaryJson(summary));
            }

            return Task.FromResult(summary.Cancelled ? 130 : 0);
        });
        return command;
    }

    private static DType ParseDType(string? text) => text?.ToLowerInvariant() switch
    {
        "f32" or "float32" => DType.F32,
        "f16" or "float16" => DType.F16,
        "bf16" or "bfloat16" => DType.BF16,
        _ => throw new MinnowException($"--dtype '{text}' is not supported (f32, f16, bf16)."),
    };

    private static void Validate(TrainingRunOptions o)
    {
        if (o.VocabSize < 257 || o.VocabSize > 1_000_000)
        {
            throw new MinnowException($"--vocab {o.VocabSize} must be between 257 and 1000000 (256 bytes + <|endoftext|> at least).");
        }

        if (o.HiddenSize <= 0 || o.Layers <= 0 || o.Heads <= 0 || o.IntermediateSize <= 0 || o.Context < 2 || o.KvHeads is <= 0)
        {
            throw new MinnowException("--hidden, --layers, --heads, --kv-heads and --ffn must be positive and --ctx at least 2.");
        }

        if (o.HiddenSize % o.Heads != 0 || (o.HiddenSize / o.Heads) % 2 != 0)
        {
            throw new MinnowException($"--hidden {o.HiddenSize} must be a multiple of --heads {o.Heads} with an even head size.");
        }

        if (o.Heads % (o.KvHeads ?? o.Heads) != 0)
        {
            throw new MinnowException($"--heads {o.Heads} must be a multiple of --kv-heads {o.KvHeads}.");
        }

        o.Training.Validate();
    }

    private static TrainingSummary RunWithProgressBar(TrainingRunOptions options, TextWriter err, CancellationToken ct)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        TrainingSummary? summary = null;
        console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask("preparing", maxValue: Math.Max(1, options.ResumeSteps ?? options.Training.Steps));
                summary = TrainingRun.Run(options, p =>
                {
                    if (p.TotalSteps > 0)
                    {
                        task.MaxValue = p.TotalSteps;
                        task.Value = p.Step;
                    }

                    task.Description = Markup.Escape(Describe(p));
                }, ct);
                if (!summary.Cancelled)
                {
                    task.Value = task.MaxValue;
                }
            });
        Report(summary!, err);
        return summary!;
    }

    /// <summary>Progress as plain lines (every 15 s and at each phase), for logs and redirected stderr.</summary>
    private static TrainingSummary RunPlain(TrainingRunOptions options, TextWriter err, CancellationToken ct)
    {
        var last = DateTime.MinValue;
        string? lastPhase = null;
        var summary = TrainingRun.Run(options, p =>
        {
            bool phaseChanged = p.Phase != lastPhase;
            lastPhase = p.Phase;
            if (phaseChanged || DateTime.UtcNow - last > TimeSpan.FromSeconds(15) || p.Step == p.TotalSteps)
            {
                last = DateTime.UtcNow;
                err.WriteLine(Describe(p));
            }
        }, ct);
        Report(summary, err);
        return summary;
    }

    private static string Describe(TrainingProgress p) => p.Phase switch
    {
        "training" => string.Create(CultureInfo.InvariantCulture,
            $"step {p.Step}/{p.TotalSteps}  loss {p.Loss:F3}  lr {p.LearningRate:E1}  {p.TokensPerSecond:N0} tok/s") +
            (p.HeldOutLoss is double h ? string.Create(CultureInfo.InvariantCulture, $"  held-out {h:F3}") : "") +
            (p.Remaining is TimeSpan eta ? $"  eta {Format(eta)}" : ""),
        "tokenizer" => "learning the BPE tokenizer",
        "encoding" => "tokenizing the text",
        "saving" => $"saving at step {p.Step}",
        "evaluating" => "measuring held-out loss",
        _ => p.Phase,
    };

    private static string Format(TimeSpan t) => t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:D2}m" : $"{t.Minutes}m{t.Seconds:D2}s";

    private static void Report(TrainingSummary s, TextWriter err)
    {
        var text = string.Create(CultureInfo.InvariantCulture,
            $"{(s.Cancelled ? "stopped" : "trained")} {s.Steps}/{s.TotalSteps} steps in {Format(TimeSpan.FromSeconds(s.Seconds))}: {s.Parameters:N0} parameters, train loss {s.FinalTrainLoss:F3}");
        if (s.HeldOutLoss is double h)
        {
            text += string.Create(CultureInfo.InvariantCulture, $", held-out loss {h:F3} (perplexity {Math.Exp(h):F1})");
        }

        err.WriteLine(text + string.Create(CultureInfo.InvariantCulture, $", {s.TokensPerSecond:N0} tok/s"));
        err.WriteLine(s.Cancelled
            ? $"checkpoint saved in {s.OutputFolder}; continue with --resume."
            : $"model written to {s.OutputFolder}");
    }

    private static string SummaryJson(TrainingSummary s)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("output", s.OutputFolder);
            w.WriteNumber("steps", s.Steps);
            w.WriteNumber("total_steps", s.TotalSteps);
            w.WriteBoolean("cancelled", s.Cancelled);
            w.WriteNumber("parameters", s.Parameters);
            w.WriteNumber("vocab_size", s.VocabSize);
            w.WriteNumber("train_tokens", s.TrainTokens);
            w.WriteNumber("held_out_tokens", s.HeldOutTokens);
            if (double.IsFinite(s.FinalTrainLoss))
            {
                w.WriteNumber("final_train_loss", s.FinalTrainLoss);
            }

            if (s.HeldOutLoss is double h)
            {
                w.WriteNumber("held_out_loss", h);
                w.WriteNumber("held_out_perplexity", Math.Exp(h));
            }

            w.WriteNumber("tokens_per_second", s.TokensPerSecond);
            w.WriteNumber("seconds", s.Seconds);
            w.WriteEndObject();
        }

        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }
}
