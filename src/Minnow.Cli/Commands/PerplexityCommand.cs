using System.CommandLine;
using Minnow.Inference;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Quantization;
using Minnow.Serving;
using Spectre.Console;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow perplexity [MODEL] --text FILE</c>: perplexity as llama.cpp's perplexity tool measures it
/// (non-overlapping windows of --ctx tokens, the second half of each scored), with its standard error.
/// </summary>
internal static class PerplexityCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var text = new Option<string?>("--text", "-f") { Description = "A UTF-8 text file to score (tokenized with the model's tokenizer)." };
        var ids = new Option<string?>("--ids")
        {
            Description = "A file of token ids separated by whitespace or commas, instead of --text (for models without a tokenizer).",
        };
        var ctx = new Option<int>("--ctx", "-c")
        {
            Description = "Window size in tokens, capped to the model's context length.",
            DefaultValueFactory = _ => 512,
        };
        var chunks = new Option<int?>("--chunks") { Description = "Score at most this many windows (default: all)." };
        var bos = new Option<string?>("--bos")
        {
            Description = "Token id put at the start of every window, or 'none' (default: the tokenizer's BOS when it adds one, else none).",
        };
        var klBase = new Option<string?>("--kl-base")
        {
            Description = "A reference model (e.g. the original of a quantized model): also report the mean KL divergence of this model's " +
                "next-token distributions from the reference's, and how often both rank the same token first (llama.cpp's --kl-divergence).",
        };
        var adapter = FinetuneCommand.AdapterOption();
        var json = JsonOption();
        var command = new Command("perplexity", "Measure perplexity on a text file (llama.cpp's method: windows of --ctx tokens, second half scored).")
        {
            model, text, ids, ctx, chunks, bos, klBase, adapter, json,
        };
        var package = new PackageOptions();
        package.AddTo(command);

        command.SetSyncAction((r, ct) =>
        {
            string? textFile = r.GetValue(text);
            string? idsFile = r.GetValue(ids);
            if ((textFile is null) == (idsFile is null))
            {
                throw new MinnowException("give the text to score with --text FILE (or token ids with --ids FILE), one of the two.");
            }

            int? maxChunks = r.GetValue(chunks);
            if (maxChunks is <= 0)
            {
                throw new MinnowException($"--chunks must be positive (got {maxChunks}).");
            }

            string inputFile = (textFile ?? idsFile)!;
            if (!File.Exists(inputFile))
            {
                throw new MinnowException($"{inputFile}: file not found.");
            }

            if (OnnxModelCommands.IsOnnx(r.GetValue(model)))
            {
                return OnnxModelCommands.Perplexity(Out(r), Err(r), r.GetValue(model)!, textFile, idsFile, r.GetValue(ctx), maxChunks, r.GetValue(bos), r.GetValue(json), ct);
            }

            using var loaded = package.Open(r, DefaultModel.Resolve(r.GetValue(model)));
            using var lora = FinetuneCommand.LoadAdapter(loaded, r.GetValue(adapter));
            var tokenizer = PromptEncoder.For(loaded);
            var err = Err(r);
            WriteNotes(err, loaded.Notes);
            int[] tokens;
            int? bosToken;
            if (textFile is not null)
            {
                if (tokenizer is null)
                {
                    throw new MinnowException($"{loaded.Path}: {PromptEncoder.Missing(loaded)}, so {textFile} cannot be tokenized; pass token ids with --ids FILE.");
                }

                tokens = tokenizer.EncodeForScoring(File.ReadAllText(textFile));
                bosToken = tokenizer.AddedBos;
            }
            else
            {
                tokens = ParseIds(File.ReadAllText(idsFile!), idsFile!);
                bosToken = null;
            }

            string? bosText = r.GetValue(bos);
            if (bosText is not null)
            {
                bosToken = bosText.Equals("none", StringComparison.OrdinalIgnoreCase)
                    ? null
                    : int.TryParse(bosText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int b)
                        ? b
                        : throw new MinnowException($"--bos must be a token id or 'none' (got '{bosText}').");
            }

            int requested = r.GetValue(ctx);
            int context = Math.Min(requested, loaded.Config.MaxPositions);
            if (context < requested)
            {
                err.WriteLine($"note: --ctx {requested} capped to the model's context length {context}.");
            }

            PerplexityResult result;
            if (ErrIsTerminal(r))
            {
                result = WithProgressBar(loaded, tokens, context, maxChunks, bosToken, lora, ct);
            }
            else
            {
                result = PerplexityEvaluator.Evaluate(loaded.Model, tokens, context, maxChunks, bosToken, null, ct, lora);
            }

            ComparisonResult? kl = null;
            string? klBasePath = r.GetValue(klBase);
            if (klBasePath is not null)
            {
                using var reference = LoadedModel.Open(klBasePath);
                kl = ModelComparison.Compare(reference.Model, loaded.Model, tokens, Math.Min(context, reference.Config.MaxPositions), maxChunks, bosToken, null, ct, lora);
                klBasePath = reference.Path;
            }

            long peak = PeakMemoryBytes();
            var output = Out(r);
            if (r.GetValue(json))
            {
                WriteJson(output, w =>
                {
                    w.WriteString("model", loaded.Path);
                    w.WriteString("file", Path.GetFullPath(inputFile));
                    w.Number("ppl", result.Perplexity);
                    w.Number("stderr", result.StandardError);
                    w.Number("mean_nll", result.MeanNll);
                    w.WriteNumber("tokens", tokens.Length);
                    w.WriteNumber("tokens_scored", result.TokensScored);
                    w.WriteNumber("ctx", result.Context);
                    w.WriteNumber("chunks", result.Chunks);
                    if (bosToken is int bosId)
                    {
                        w.WriteNumber("bos", bosId);
                    }
                    else
                    {
                        w.WriteNull("bos");
                    }

                    if (kl is not null)
                    {
                        w.WriteString("kl_base", klBasePath);
                        w.Number("ppl_base", kl.ReferencePerplexity);
                        w.Number("kl_divergence", kl.MeanKl);
                        w.Number("kl_divergence_stderr", kl.KlStandardError);
                        w.Number("top1_agreement", kl.Top1Agreement);
                        w.Number("top1_agreement_stderr", kl.Top1StandardError);
                    }

                    w.Number("tokens_per_second", result.TokensPerSecond);
                    w.Number("seconds", result.Seconds);
                    w.WriteNumber("peak_memory_bytes", peak);
                });
            }
            else
            {
                output.WriteLine($"perplexity {F(result.Perplexity, "0.0000")} ± {F(result.StandardError, "0.0000")}");
                output.WriteLine(
                    $"mean NLL {F(result.MeanNll, "0.000000")} over {Count(result.TokensScored)} scored tokens ({result.Chunks} windows of {result.Context}); " +
                    $"{F(result.TokensPerSecond, "0.0")} tok/s, {F(result.Seconds, "0.00")} s, peak memory {Bytes(peak)}");
                if (kl is not null)
                {
                    output.WriteLine($"against {klBasePath} (perplexity {F(kl.ReferencePerplexity, "0.0000")}): KL divergence {F(kl.MeanKl, "0.000000")} ± " +
                        $"{F(kl.KlStandardError, "0.000000")}, same top-1 {F(kl.Top1Agreement * 100, "0.00")} ± {F(kl.Top1StandardError * 100, "0.00")} %");
                }
            }

            return 0;
        });
        return command;
    }

    private static PerplexityResult WithProgressBar(LoadedModel loaded, int[] tokens, int context, int? maxChunks, int? bos, LoraAdapter? lora, CancellationToken ct)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        PerplexityResult? result = null;
        console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(progress =>
            {
                var task = progress.AddTask("perplexity");
                result = PerplexityEvaluator.Evaluate(loaded.Model, tokens, context, maxChunks, bos,
                    new InlineProgress(p =>
                    {
                        task.MaxValue = p.Total;
                        task.Value = p.Done;
                    }), ct, lora);
            });
        return result!;
    }

    /// <summary>Reports on the calling thread (System.Progress would post to the thread pool).</summary>
    private sealed class InlineProgress(Action<(int Done, int Total)> report) : IProgress<(int Done, int Total)>
    {
        public void Report((int Done, int Total) value) => report(value);
    }
}
