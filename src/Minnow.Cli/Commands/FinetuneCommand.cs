using System.CommandLine;
using System.Globalization;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Training;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow finetune [MODEL] --data FILE --out ADAPTER</c>: trains LoRA adapters on a Llama-architecture model
/// (base weights frozen) and writes them in Hugging Face PEFT's layout. Progress goes to stderr; Ctrl+C saves the
/// adapter trained so far and stops.
/// </summary>
internal static class FinetuneCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var data = new Option<FileInfo>("--data") { Description = "UTF-8 text file to fine-tune on.", Required = true };
        var output = new Option<DirectoryInfo>("--out") { Description = "Adapter folder to write (adapter_config.json + adapter_model.safetensors).", Required = true };
        var rank = new Option<int>("--lora-rank") { Description = "LoRA rank r.", DefaultValueFactory = _ => 8 };
        var alpha = new Option<float>("--lora-alpha") { Description = "LoRA alpha (the update is scaled by alpha/r).", DefaultValueFactory = _ => 32 };
        var targets = new Option<string>("--targets")
        {
            Description = $"Linear layers to adapt, comma-separated, from {LoraTargets.AllNames}.",
            DefaultValueFactory = _ => "q_proj,v_proj",
        };
        var steps = new Option<int>("--steps") { Description = "Optimiser steps.", DefaultValueFactory = _ => 200 };
        var batch = new Option<int>("--batch") { Description = "Sequences per step.", DefaultValueFactory = _ => 8 };
        var context = new Option<int?>("--context", "--ctx") { Description = "Tokens per training sequence (default: the model's context, at most 256)." };
        var lr = new Option<float>("--lr") { Description = "Peak learning rate (warm-up, then cosine to a tenth).", DefaultValueFactory = _ => 2e-3f };
        var weightDecay = new Option<float>("--weight-decay") { Description = "AdamW weight decay on the adapters.", DefaultValueFactory = _ => 0f };
        var seed = new Option<long>("--seed") { Description = "Random seed (adapter initialisation and batches).", DefaultValueFactory = _ => 1 };
        var heldOut = new Option<double>("--held-out") { Description = "Fraction of the text (its end) kept out of training to measure on.", DefaultValueFactory = _ => 0.1 };
        var json = JsonOption();

        var command = new Command("finetune", "Fine-tune a Llama-architecture model with LoRA adapters on a text file (PEFT layout output).")
        {
            model, data, output, rank, alpha, targets, steps, batch, context, lr, weightDecay, seed, heldOut, json,
        };

        command.SetSyncAction((r, ct) =>
        {
            var options = new LoraFinetuneOptions
            {
                ModelPath = DefaultModel.Resolve(r.GetValue(model)),
                DataPath = r.GetValue(data)!.FullName,
                OutputFolder = r.GetValue(output)!.FullName,
                Rank = r.GetValue(rank),
                Alpha = r.GetValue(alpha),
                Targets = LoraTargets.ParseList(r.GetValue(targets) ?? ""),
                Steps = r.GetValue(steps),
                BatchSize = r.GetValue(batch),
                Context = r.GetValue(context),
                LearningRate = r.GetValue(lr),
                WeightDecay = r.GetValue(weightDecay),
                Seed = r.GetValue(seed),
                HeldOutFraction = r.GetValue(heldOut),
            };
            options.Validate();
            var err = Err(r);
            var summary = StepProgressDisplay.Run<LoraFinetuneSummary, LoraFinetuneProgress>(ErrIsTerminal(r), err, options.Steps, report => LoraFinetune.Run(options, report, ct), Describe,
                p => (p.Phase, p.Step, p.TotalSteps), s => s.Cancelled);
            Report(summary, err);
            if (r.GetValue(json))
            {
                Out(r).WriteLine(LoraFinetune.SummaryJson(summary, options, indented: false));
            }

            return summary.Cancelled ? 130 : 0;
        });
        return command;
    }

    /// <summary>The <c>--adapter DIR</c> option of the inference commands.</summary>
    public static Option<DirectoryInfo?> AdapterOption() => new("--adapter")
    {
        Description = "A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) applied on top of the weights, unmerged.",
    };

    /// <summary>Loads the adapter in <paramref name="folder"/> (if any) for the model; the command passes it to what it runs.</summary>
    public static LoraAdapter? LoadAdapter(LoadedModel loaded, DirectoryInfo? folder) =>
        folder is null ? null : LoraAdapter.Load(folder.FullName, loaded.Config);

    private static string Describe(LoraFinetuneProgress p) => p.Phase switch
    {
        "training" => string.Create(CultureInfo.InvariantCulture,
            $"step {p.Step}/{p.TotalSteps}  loss {p.Loss:F3}  lr {p.LearningRate:E1}  {p.TokensPerSecond:N0} tok/s") +
            (p.Remaining is TimeSpan eta ? $"  eta {(int)eta.TotalMinutes}m{eta.Seconds:D2}s" : ""),
        "evaluating" => p.Step == 0 ? "measuring the text's perplexity before" : "measuring the text's perplexity after",
        "saving" => $"saving the adapter at step {p.Step}",
        _ => p.Phase,
    };

    private static void Report(LoraFinetuneSummary s, TextWriter err)
    {
        var c = CultureInfo.InvariantCulture;
        err.WriteLine(string.Create(c,
            $"{(s.Cancelled ? "stopped" : "fine-tuned")} {s.Steps}/{s.TotalSteps} steps in {s.Seconds:F1} s: {s.AdapterParameters:N0} adapter parameters " +
            $"({100.0 * s.AdapterParameters / s.BaseParameters:F2} % of {s.BaseParameters:N0}), {s.TokensPerSecond:N0} tok/s"));
        if (!s.Cancelled)
        {
            err.WriteLine(string.Create(c, $"training text perplexity {Math.Exp(s.TrainLossBefore):F2} → {Math.Exp(s.TrainLossAfter):F2}") +
                (s.HeldOutLossBefore is double hb && s.HeldOutLossAfter is double ha
                    ? string.Create(c, $"; held-out {Math.Exp(hb):F2} → {Math.Exp(ha):F2} ({s.HeldOutTokens:N0} tokens)")
                    : "; no held-out text to measure (use --held-out)"));
        }

        err.WriteLine(string.Create(c,
            $"adapter written to {s.OutputFolder} ({Bytes(s.AdapterBytes)}, {100.0 * s.AdapterBytes / Math.Max(1, s.BaseBytes):F2} % of the base's {Bytes(s.BaseBytes)})"));
    }
}
