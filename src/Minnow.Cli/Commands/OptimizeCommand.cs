using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Minnow.Export;
using Minnow.Inference;
using Minnow.Loading;
using Minnow.Optimization;
using Minnow.Quantization;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow optimize [MODEL] [--ram 2GB] [--latency 80ms] [--eval FILE] [--calib FILE] [--out DIR]</c>: measures the
/// model, tries the recipes (quantization schemes, structured pruning, both, mixed precision), chooses the most
/// accurate one within the budget (without a budget: the smallest within --max-ppl-increase), writes it as
/// DIR/model.gguf with report.json and report.html, and runs the deployment checklist on the written file.
/// </summary>
internal static class OptimizeCommand
{
    public const string ModelFileName = "model.gguf";
    public const string CacheFileName = ".optimize-cache.json";

    public static Command Create()
    {
        var model = ModelArgument();
        var output = new Option<string>("--out", "-o") { Description = "Output folder: model.gguf, report.json, report.html.", DefaultValueFactory = _ => "minnow-optimized" };
        var ram = new Option<string?>("--ram") { Description = "Memory the model may use on the device, e.g. 2GB or 512MiB (a 10% safety margin is kept)." };
        var latency = new Option<string?>("--latency") { Description = "Most time a decoded token may take at batch 1, e.g. 80ms." };
        var maxSize = new Option<string?>("--max-size") { Description = "Most bytes the weights may take, e.g. 90MB." };
        var maxIncrease = new Option<string>("--max-ppl-increase")
        {
            Description = "Without --ram, --latency and --max-size: the smallest model whose perplexity is at most this much above the original's.",
            DefaultValueFactory = _ => "2%",
        };
        var eval = new Option<string?>("--eval") { Description = "Evaluation text (default: held-out.txt beside the model)." };
        var calib = new Option<string?>("--calib") { Description = "Calibration text (default: the first part of the evaluation text, which is then evaluated on the rest)." };
        var ids = new Option<bool>("--ids") { Description = "--calib and --eval hold token ids, for models without a tokenizer." };
        var ctx = new Option<int>("--ctx", "-c") { Description = "Evaluation window in tokens (capped to the model's context).", DefaultValueFactory = _ => 512 };
        var chunks = new Option<int>("--chunks") { Description = "Evaluation windows scored in full per candidate.", DefaultValueFactory = _ => 100 };
        var calibTokens = new Option<int>("--calib-tokens") { Description = "Most calibration tokens.", DefaultValueFactory = _ => 8192 };
        var recipe = new Option<string[]>("--recipe")
        {
            Description = "Try only these recipes (repeatable), by the names the report uses, e.g. q4_0-gptq or prune-h75-f75+q8_0.",
            AllowMultipleArgumentsPerToken = true,
        };
        var json = JsonOption();
        var command = new Command("optimize", "Find the most accurate compressed model that fits a RAM and latency budget; write it with a report.")
        {
            model, output, ram, latency, maxSize, maxIncrease, eval, calib, ids, ctx, chunks, calibTokens, recipe, json,
        };

        command.SetSyncAction((r, ct) =>
        {
            var watch = Stopwatch.StartNew();
            var budget = new Budget
            {
                RamBytes = r.GetValue(ram) is string ramText ? ParseSize(ramText, "--ram") : null,
                LatencyMs = r.GetValue(latency) is string latencyText ? ParseMilliseconds(latencyText) : null,
                MaxWeightBytes = r.GetValue(maxSize) is string sizeText ? ParseSize(sizeText, "--max-size") : null,
                MaxPerplexityIncrease = ParseFraction(r.GetValue(maxIncrease)!),
            };
            if (r.GetValue(chunks) < 1)
            {
                throw new MinnowException($"--chunks must be positive (got {r.GetValue(chunks)}).");
            }

            var recipes = SelectRecipes(r.GetValue(recipe));
            string outDir = Path.GetFullPath(r.GetValue(output)!);
            if (File.Exists(outDir))
            {
                throw new MinnowException($"{outDir}: is a file; --out must be a folder.");
            }

            using var loaded = LoadedModel.Open(DefaultModel.Resolve(r.GetValue(model)));
            var texts = QuantizeCommand.Texts.Prepare(loaded, r.GetValue(calib), r.GetValue(eval), r.GetValue(ids), null, r.GetValue(calibTokens), null);
            var err = Err(r);
            WriteNotes(err, texts.Notes.Concat(loaded.Notes));

            int context = Math.Min(r.GetValue(ctx), loaded.Config.MaxPositions);
            var search = new SearchTexts(texts.Calibration, texts.Evaluation, context, texts.Bos, r.GetValue(chunks));
            Directory.CreateDirectory(outDir);
            var cache = new CandidateCache(Path.Combine(outDir, CacheFileName), CacheKey(loaded, texts, context, r.GetValue(chunks)));
            if (cache.Count > 0)
            {
                err.WriteLine($"note: reusing {cache.Count} measured candidates from {Path.Combine(outDir, CacheFileName)}.");
            }

            SearchResult? result = null;
            CheckResult? check = null;
            string target = Path.Combine(outDir, ModelFileName);
            ProgressPhases.Run(ErrIsTerminal(r), err, phase =>
            {
                string? current = null;
                IProgress<(int Done, int Total)>? progress = null;
                var optimizer = new Optimizer(loaded.Model, search, budget, cache)
                {
                    Progress = (stage, done, total) =>
                    {
                        string kind = stage.Split(':')[0];
                        if (kind != current)
                        {
                            current = kind;
                            progress = phase(kind);
                        }

                        progress!.Report((done, total));
                    },
                };
                result = optimizer.Run(recipes, ct);
                if (result.Chosen is { } chosen)
                {
                    var writing = phase($"writing {chosen.Recipe.Name}");
                    using var built = optimizer.Build(chosen.Recipe, ct);
                    var tokenizer = GgufTokenizerMetadata.For(loaded.Path, loaded.Format, loaded.Config.VocabSize);
                    GgufExporter.Export(built, target, chosen.Recipe.FileType, tokenizer.Write, writing, ct);
                }
            });

            if (result!.Chosen is not null)
            {
                // The checklist on the file as written, measured in fresh processes as a deployment would run it.
                err.WriteLine("deployment check...");
                check = DeploymentCheck.Run(p => CheckCommand.RunPart(Path.GetFullPath(target), p, Tensors.WorkerPool.DefaultThreadCount, context, [], ct), budget, ct);
            }
            else
            {
                File.Delete(target); // an earlier run's model does not belong to this report
            }

            string reproduce = result.Chosen is { } c
                ? $"minnow optimize {Quote(loaded.Path)} --recipe {c.Recipe.Name} --out {Quote(outDir)}" + (texts.CalibrationSource.Contains(" (first ", StringComparison.Ordinal) ? "" : $" --calib {Quote(texts.CalibrationSource)}") +
                  $" --eval {Quote(texts.EvaluationSource)} --ctx {context} --chunks {r.GetValue(chunks)}"
                : "";
            var report = new OptimizationReport
            {
                Model = loaded.Path,
                EvaluationSource = texts.EvaluationSource,
                CalibrationSource = texts.CalibrationSource,
                Budget = budget,
                Context = context,
                Search = result,
                Check = check,
                Output = result.Chosen is null ? null : target,
                Reproduce = result.Chosen is null ? null : reproduce,
                Seconds = watch.Elapsed.TotalSeconds,
            };
            WriteAtomically(Path.Combine(outDir, "report.json"), stream =>
            {
                using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
                report.WriteJson(w);
            });
            WriteAtomically(Path.Combine(outDir, "report.html"), stream => stream.Write(Encoding.UTF8.GetBytes(report.ToHtml())));

            var o = Out(r);
            if (r.GetValue(json))
            {
                WriteJson(o, report.WriteProperties);
            }
            else
            {
                WriteTable(o, report);
            }

            if (result.Chosen is null)
            {
                throw new MinnowException($"{result.Verdict}. See {Path.Combine(outDir, "report.html")}.");
            }

            if (check is { Passed: false })
            {
                throw new MinnowException($"{target} failed the deployment check: " +
                    string.Join("; ", check.Items.Where(i => i.Status == "FAIL").Select(i => $"{i.Name} ({i.Figure})")) + ".");
            }

            return 0;
        });
        return command;
    }

    private static IReadOnlyList<Recipe> SelectRecipes(string[]? names)
    {
        if (names is null || names.Length == 0)
        {
            return Recipe.Defaults;
        }

        return names.Select(n => Recipe.Defaults.FirstOrDefault(d => d.Name == n.Trim().ToLowerInvariant())
            ?? throw new MinnowException($"--recipe '{n}' is not a known recipe ({string.Join(", ", Recipe.Defaults.Select(d => d.Name))}).")).ToList();
    }

    private static void WriteTable(TextWriter o, OptimizationReport report)
    {
        var s = report.Search;
        var b = s.Baseline;
        o.WriteLine($"original: {Bytes(b.WeightBytes)} of weights, perplexity {F(b.Perplexity ?? double.NaN, "0.00")}, " +
            $"{F(b.DecodeMsPerToken ?? double.NaN, "0.00")} ms a token, peak RSS {Bytes(b.PeakRssBytes ?? 0)}");
        o.WriteLine($"{"recipe",-28} {"weights",10} {"est. RAM",10} {"ppl",9} {"Δ ppl",8} {"ms/token",9}  ");
        foreach (var c in s.Candidates)
        {
            var m = c.Measurement;
            string mark = ReferenceEquals(c, s.Chosen) ? "← chosen" : c.MeetsBudget ? "meets budget" : "";
            if (m.Error is not null)
            {
                o.WriteLine($"{c.Recipe.Name,-28} {m.Error}");
                continue;
            }

            string ppl = m.Perplexity is double p ? F(p, "0.00") : $"~{F(m.QuickPerplexity, "0.00")}";
            string delta = m.Perplexity is double p1 && b.Perplexity is double p0 ? F(((p1 / p0) - 1) * 100, "+0.00;-0.00;+0.00") + "%" : "";
            o.WriteLine($"{c.Recipe.Name,-28} {Bytes(m.WeightBytes),10} {(m.EstimatedRamBytes is long ram ? Bytes(ram) : ""),10} {ppl,9} {delta,8} " +
                $"{(m.DecodeMsPerToken is double ms ? F(ms, "0.00") : ""),9}  {mark}");
        }

        if (b.SpeedConditions is not null)
        {
            o.WriteLine($"(speed: {b.SpeedConditions})");
        }

        o.WriteLine(s.Verdict);
        if (report.Check is { } check)
        {
            foreach (var item in check.Items)
            {
                o.WriteLine($"  [{item.Status}] {item.Name}: {item.Figure}");
            }
        }

        if (report.Output is not null)
        {
            o.WriteLine($"wrote {report.Output}, report.json and report.html in {Path.GetDirectoryName(report.Output)} ({F(report.Seconds, "0")} s)");
        }
    }

    /// <summary>Everything the measurements depend on: the model's files, the token ids, the settings.</summary>
    private static string CacheKey(LoadedModel loaded, QuantizeCommand.Texts texts, int context, int chunks)
    {
        var text = new StringBuilder("minnow-optimize-1|");
        var files = Directory.Exists(loaded.Path) ? Directory.GetFiles(loaded.Path).Order(StringComparer.Ordinal) : new[] { loaded.Path }.AsEnumerable();
        foreach (var f in files)
        {
            var info = new FileInfo(f);
            text.Append(info.Name).Append(':').Append(info.Length).Append(':').Append(info.LastWriteTimeUtc.Ticks).Append('|');
        }

        text.Append(context).Append('|').Append(chunks).Append('|').Append(texts.Bos).Append('|').Append(string.Join(',', texts.Evaluation)).Append('|');
        foreach (var s in texts.Calibration)
        {
            text.Append(string.Join(',', s)).Append(';');
        }

        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    private static void WriteAtomically(string path, Action<Stream> write) => Formats.Safetensors.AtomicFile.Write(path, write);

    private static string Quote(string path) => path.Contains(' ', StringComparison.Ordinal) ? $"\"{path}\"" : path;

    public static long ParseSize(string text, string option)
    {
        try
        {
            return MixedPrecision.ParseSize(text);
        }
        catch (MinnowException)
        {
            throw new MinnowException($"{option} '{text}' is not a size; write e.g. 2GB, 512MiB or a number of bytes.");
        }
    }

    public static double ParseMilliseconds(string text)
    {
        string t = text.Trim().ToLowerInvariant();
        double factor = t.EndsWith("ms", StringComparison.Ordinal) ? 1 : t.EndsWith('s') ? 1000 : 1;
        t = t.TrimEnd('m', 's').Trim();
        if (!double.TryParse(t, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double value) || value <= 0)
        {
            throw new MinnowException($"--latency '{text}' is not a duration; write e.g. 80ms or 0.1s.");
        }

        return value * factor;
    }

    private static double ParseFraction(string text)
    {
        string t = text.Trim();
        bool percent = t.EndsWith('%');
        if (!double.TryParse(t.TrimEnd('%'), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double value) || value < 0)
        {
            throw new MinnowException($"--max-ppl-increase '{text}' is not a fraction; write e.g. 2% or 0.02.");
        }

        return percent ? value / 100 : value;
    }
}
