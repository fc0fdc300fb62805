using System.CommandLine;
using System.Globalization;
using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Training;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow qat [MODEL] --scheme q4_0|int4 [--group N] --data FILE --out OUT.gguf</c>: quantization-aware training
/// (fake-quantized linear layers, straight-through estimator) on a text file, then round-to-nearest quantization in
/// the same scheme, written as GGUF. Progress goes to stderr; Ctrl+C writes the model trained so far and stops.
/// </summary>
internal static class QatCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var data = new Option<FileInfo?>("--data") { Description = "UTF-8 text file to train on." };
        var ids = new Option<FileInfo?>("--ids") { Description = "A file of token ids (whitespace or commas) to train on instead of --data, for models without a tokenizer." };
        var distill = new Option<bool>("--distill")
        {
            Description = "Train towards the float model's next-token distributions (KL divergence) instead of the text's next tokens.",
        };
        var activations = new Option<bool>("--activations")
        {
            Description = "Also fake-quantize the quantized layers' inputs (8 bits per block of 32), as the integer kernels do at run time.",
        };
        var output = new Option<FileInfo>("--out", "-o") { Description = "Quantized GGUF file to write.", Required = true };
        var scheme = new Option<string>("--scheme") { Description = "Block format trained for and written: q4_0, int4 or int3 (see --group), or q8_0.", DefaultValueFactory = _ => "q4_0" };
        var group = new Option<int>("--group") { Description = "int4 and int3: values per scale and zero point (32, 64 or 128).", DefaultValueFactory = _ => 32 };
        var steps = new Option<int>("--steps") { Description = "Optimiser steps.", DefaultValueFactory = _ => 100 };
        var batch = new Option<int>("--batch") { Description = "Sequences per step.", DefaultValueFactory = _ => 8 };
        var context = new Option<int?>("--context", "--ctx") { Description = "Tokens per training sequence (default: the model's context, at most 256)." };
        var lr = new Option<float>("--lr") { Description = "Peak learning rate (warm-up, then cosine to a tenth).", DefaultValueFactory = _ => 5e-5f };
        var seed = new Option<long>("--seed") { Description = "Random seed (batches).", DefaultValueFactory = _ => 1 };
        var heldOut = new Option<double>("--held-out") { Description = "Fraction of the text (its end) kept out of training to measure on.", DefaultValueFactory = _ => 0.1 };

        var command = new Command("qat", "Quantization-aware training on a text file, then round-to-nearest quantization to a GGUF model.")
        {
            model, data, ids, output, scheme, group, steps, batch, context, lr, seed, heldOut, distill, activations,
        };

        command.SetSyncAction((r, ct) =>
        {
            var target = r.GetValue(output)!.FullName;
            if (Directory.Exists(target))
            {
                throw new MinnowException($"{target}: is a folder; --out must be a file path such as model-q4_0.gguf.");
            }

            var idsFile = r.GetValue(ids);
            if (idsFile is not null && !idsFile.Exists)
            {
                throw new MinnowException($"{idsFile.FullName}: file not found.");
            }

            var options = new QatOptions
            {
                ModelPath = DefaultModel.Resolve(r.GetValue(model)),
                DataPath = r.GetValue(data)?.FullName,
                TokenIds = idsFile is null ? null : ParseIds(File.ReadAllText(idsFile.FullName), idsFile.FullName),
                Distill = r.GetValue(distill),
                QuantizeActivations = r.GetValue(activations),
                OutputPath = target,
                Scheme = QuantizationOptions.ParseScheme(r.GetValue(scheme), r.GetValue(group)),
                Steps = r.GetValue(steps),
                BatchSize = r.GetValue(batch),
                Context = r.GetValue(context),
                LearningRate = r.GetValue(lr),
                Seed = r.GetValue(seed),
                HeldOutFraction = r.GetValue(heldOut),
            };
            options.Validate();
            var err = Err(r);
            var summary = StepProgressDisplay.Run<QatSummary, QatProgress>(
                ErrIsTerminal(r), err, options.Steps, report => QuantizationAwareTraining.Run(options, report, ct), Describe, p => (p.Phase, p.Step, p.TotalSteps), s => s.Cancelled);
            Report(summary, options, err);
            return summary.Cancelled ? 130 : 0;
        });
        return command;
    }

    private static string Describe(QatProgress p) => p.Phase switch
    {
        "training" => string.Create(CultureInfo.InvariantCulture,
            $"step {p.Step}/{p.TotalSteps}  loss {p.Loss:F3}  lr {p.LearningRate:E1}  {p.TokensPerSecond:N0} tok/s") +
            (p.Remaining is TimeSpan eta ? $"  eta {(int)eta.TotalMinutes}m{eta.Seconds:D2}s" : ""),
        "evaluating" => p.Step == 0 ? "measuring the held-out perplexity before" : "measuring the held-out perplexity after",
        "writing" => $"quantizing and writing the model at step {p.Step}",
        _ => p.Phase,
    };

    private static void Report(QatSummary s, QatOptions o, TextWriter err)
    {
        var c = CultureInfo.InvariantCulture;
        err.WriteLine(string.Create(c,
            $"{(s.Cancelled ? "stopped" : "trained")} {s.Steps}/{s.TotalSteps} steps with {o.Scheme.Name().ToLowerInvariant()} fake quantization{(o.QuantizeActivations ? " of weights and activations" : "")}{(o.Distill ? ", distilled from the float model" : "")} in {s.Seconds:F1} s, {s.TokensPerSecond:N0} tok/s"));
        if (s.HeldOutLossBefore is double hb && s.HeldOutLossAfter is double ha && !s.Cancelled)
        {
            err.WriteLine(string.Create(c, $"held-out perplexity with quantized linear layers {Math.Exp(hb):F2} → {Math.Exp(ha):F2} ({s.HeldOutTokens:N0} tokens)"));
        }

        err.WriteLine($"quantized model written to {s.OutputPath} ({Bytes(s.FileBytes)})");
    }
}
