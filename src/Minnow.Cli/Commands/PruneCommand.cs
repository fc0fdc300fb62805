using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Minnow.Benchmarking;
using Minnow.Inference;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Pruning;
using Minnow.Serving;
using Minnow.Tensors;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow prune [MODEL] --out DIR --method M</c>: prunes a Hugging Face model and writes another Hugging Face
/// folder (config.json + model.safetensors + tokenizer files) that every command accepts; reports size,
/// parameters, perplexity and speed before and after, and the sparsity or shape of every layer.
/// </summary>
internal static class PruneCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var output = new Option<string>("--out", "-o") { Description = "Output folder (Hugging Face layout).", Required = true };
        var method = new Option<string>("--method")
        {
            Description = "magnitude | wanda (unstructured, --sparsity), 2:4 | 4:8 (semi-structured), heads | neurons (structured: --keep-heads, --keep-ffn).",
            Required = true,
        };
        var sparsity = new Option<double?>("--sparsity")
        {
            Description = "Fraction removed, 0.1-0.9: of each linear layer's weights (magnitude, wanda; default 0.5), or of the heads / neurons (heads, neurons).",
        };
        var keepHeads = new Option<double?>("--keep-heads") { Description = "Fraction of attention heads kept (structured; kv groups with GQA)." };
        var keepFfn = new Option<double?>("--keep-ffn") { Description = "Fraction of MLP neurons kept (structured)." };
        var allocation = new Option<string>("--allocation")
        {
            Description = "Structured: 'global' (one ranking over all layers, each layer keeps its own count) or 'uniform' (the same fraction in every layer).",
            DefaultValueFactory = _ => "global",
        };
        var calib = new Option<string?>("--calib") { Description = "Calibration text (wanda, heads, neurons; optional for 2:4 and 4:8, which then use Wanda's scores)." };
        var calibIds = new Option<string?>("--calib-ids") { Description = "Calibration token ids (whitespace or commas), instead of --calib." };
        var calibSamples = new Option<int>("--calib-samples") { Description = "Calibration windows of --ctx tokens.", DefaultValueFactory = _ => 64 };
        var eval = new Option<string?>("--eval") { Description = "Text to measure perplexity on, before and after (default: held-out.txt beside the model)." };
        var evalIds = new Option<string?>("--eval-ids") { Description = "Token ids to measure perplexity on, instead of --eval." };
        var ctx = new Option<int>("--ctx", "-c") { Description = "Window in tokens for calibration and perplexity, capped to the model's context.", DefaultValueFactory = _ => 256 };
        var chunks = new Option<int?>("--chunks") { Description = "Score at most this many perplexity windows (default: all)." };
        var includeEmbeddings = new Option<bool>("--include-embeddings")
        {
            Description = "Also prune the token embedding and an untied output head (magnitude, wanda, 2:4, 4:8): per token, the smallest weights.",
        };
        var noSpeed = new Option<bool>("--no-speed") { Description = "Skip the speed measurement." };
        var json = JsonOption();
        var command = new Command("prune", "Prune a model (unstructured, 2:4 / 4:8, or whole heads and neurons) into a new Hugging Face folder, and report what it cost.")
        {
            model, output, method, sparsity, keepHeads, keepFfn, allocation, calib, calibIds, calibSamples, eval, evalIds, ctx, chunks, includeEmbeddings, noSpeed, json,
        };

        command.SetSyncAction((r, ct) =>
        {
            var options = BuildOptions(PruningOptions.ParseMethod(r.GetValue(method) ?? ""), r.GetValue(sparsity), r.GetValue(keepHeads), r.GetValue(keepFfn), r.GetValue(allocation));
            options = options with { IncludeEmbeddings = r.GetValue(includeEmbeddings) };
            options.Validate();
            if (r.GetValue(calibSamples) <= 0)
            {
                throw new MinnowException($"--calib-samples must be positive (got {r.GetValue(calibSamples)}).");
            }

            if (r.GetValue(chunks) is <= 0)
            {
                throw new MinnowException($"--chunks must be positive (got {r.GetValue(chunks)}).");
            }

            if (r.GetValue(calib) != null && r.GetValue(calibIds) != null || r.GetValue(eval) != null && r.GetValue(evalIds) != null)
            {
                throw new MinnowException("give --calib or --calib-ids (and --eval or --eval-ids), not both.");
            }

            string outFolder = r.GetValue(output)!;
            var err = Err(r);
            using var source = LoadedModel.Open(DefaultModel.Resolve(r.GetValue(model)));
            if (source.Format != ModelFormat.HuggingFace)
            {
                throw new MinnowException($"{source.Path}: prune takes a Hugging Face model folder (config.json + safetensors), not a {ModelFacts.FormatName(source.Format)}.");
            }

            string sourceFolder = Directory.Exists(source.Path) ? source.Path : Path.GetDirectoryName(source.Path)!;
            if (Path.GetFullPath(outFolder).TrimEnd(Path.DirectorySeparatorChar) == sourceFolder.TrimEnd(Path.DirectorySeparatorChar))
            {
                throw new MinnowException($"{outFolder}: --out must not be the model's own folder.");
            }

            int context = Math.Min(r.GetValue(ctx), source.Config.MaxPositions);
            if (context < 4)
            {
                throw new MinnowException($"--ctx must be at least 4 (got {context}).");
            }

            if (options.NeedsCalibration && r.GetValue(calib) is null && r.GetValue(calibIds) is null)
            {
                throw new MinnowException($"--method {PruningOptions.MethodName(options.Method)} needs calibration text (--calib FILE, or token ids with --calib-ids FILE).");
            }

            var codec = PromptEncoder.For(source);
            int? bos = codec?.AddedBos;
            int[]? calibTokens = ReadTokens(source, codec, r.GetValue(calib), r.GetValue(calibIds), "--calib");
            string? evalFile = r.GetValue(eval) ?? r.GetValue(evalIds);
            if (evalFile is null && r.GetValue(evalIds) is null && File.Exists(Path.Combine(sourceFolder, "held-out.txt")) && codec != null)
            {
                evalFile = Path.Combine(sourceFolder, "held-out.txt");
            }

            int[]? evalTokens = r.GetValue(evalIds) != null
                ? ReadTokens(source, codec, null, r.GetValue(evalIds), "--eval-ids")
                : ReadTokens(source, codec, evalFile, null, "--eval");
            if (evalTokens is null)
            {
                err.WriteLine("note: no --eval text (and no held-out.txt beside the model): perplexity is not measured.");
            }
            else if (evalTokens.Length < context)
            {
                throw new MinnowException($"{evalFile}: {evalTokens.Length} tokens, fewer than one window of --ctx {context}; use a longer text or a smaller --ctx.");
            }

            var calibration = calibTokens is null ? null : Windows(calibTokens, context, r.GetValue(calibSamples), bos);
            bool measureSpeed = !r.GetValue(noSpeed);
            int? maxChunks = r.GetValue(chunks);

            err.WriteLine($"measuring {source.Path} ...");
            var before = Measure(source, evalTokens, context, maxChunks, bos, measureSpeed, null, ct);
            err.WriteLine(calibration is null
                ? $"pruning ({PruningOptions.MethodName(options.Method)}) ..."
                : $"pruning ({PruningOptions.MethodName(options.Method)}), calibrating on {calibration.Count} windows of {context} tokens ...");
            EditableWeights? pruned = ModelPruner.Prune(source.Model, options, calibration, ct);
            var layers = ModelPruner.Sparsity(pruned);
            var embeddings = options.IncludeEmbeddings ? ModelPruner.EmbeddingSparsity(pruned) : [];
            PrunedModelWriter.Save(pruned, sourceFolder, outFolder, config => config["minnow_pruning"] = Provenance(options, source.Path, calibration, context));
            long zeros = pruned.ZeroCount;
            var prunedConfig = pruned.Config;
            pruned = null; // the float32 copy is no longer needed: let it go before the saved model is loaded

            err.WriteLine($"measuring {Path.GetFullPath(outFolder)} ...");
            using var result = LoadedModel.Open(outFolder);
            var after = Measure(result, evalTokens, context, maxChunks, bos, measureSpeed, zeros, ct);
            var original = source.Config;
            if (r.GetValue(json))
            {
                WriteJson(Out(r), w => Json(w, source.Path, result.Path, options, evalFile, context, before, after, layers, embeddings, original, prunedConfig));
            }
            else
            {
                Text(Out(r), source.Path, result.Path, options, evalFile, before, after, layers, embeddings, original, prunedConfig);
            }

            return 0;
        });
        return command;
    }

    private static PruningOptions BuildOptions(PruningMethod method, double? sparsity, double? keepHeads, double? keepFfn, string? allocation)
    {
        var alloc = allocation?.ToLowerInvariant() switch
        {
            "global" => StructuredAllocation.Global,
            "uniform" => StructuredAllocation.Uniform,
            _ => throw new MinnowException($"--allocation '{allocation}' is not supported (global, uniform)."),
        };
        if (sparsity is double s && (s is < 0.1 or > 0.9 || double.IsNaN(s)))
        {
            throw new MinnowException($"--sparsity must be between 0.1 and 0.9 (got {s}).");
        }

        if (method == PruningMethod.Heads)
        {
            keepHeads ??= 1 - (sparsity ?? 0.5);
        }
        else if (method == PruningMethod.Neurons)
        {
            keepFfn ??= 1 - (sparsity ?? 0.5);
        }
        else if (keepHeads != null || keepFfn != null)
        {
            throw new MinnowException("--keep-heads and --keep-ffn go with --method heads or neurons.");
        }
        else if (sparsity != null && method is PruningMethod.TwoFour or PruningMethod.FourEight)
        {
            throw new MinnowException($"--method {PruningOptions.MethodName(method)} removes half the weights of every group; --sparsity does not apply.");
        }

        return new PruningOptions { Method = method, Sparsity = sparsity ?? 0.5, KeepHeads = keepHeads, KeepFfn = keepFfn, Allocation = alloc };
    }

    private static int[]? ReadTokens(LoadedModel model, PromptEncoder? codec, string? textFile, string? idsFile, string option)
    {
        string? file = textFile ?? idsFile;
        if (file is null)
        {
            return null;
        }

        if (!File.Exists(file))
        {
            throw new MinnowException($"{file}: file not found.");
        }

        if (idsFile != null)
        {
            var ids = ParseIds(File.ReadAllText(idsFile), idsFile);
            int bad = Array.FindIndex(ids, id => id >= model.Config.VocabSize);
            return bad < 0 ? ids : throw new MinnowException($"{idsFile}: token id {ids[bad]} is outside the vocabulary of {model.Config.VocabSize}.");
        }

        if (codec is null)
        {
            throw new MinnowException($"{model.Path}: {PromptEncoder.Missing(model)}, so {file} cannot be tokenized; pass token ids with {option}-ids FILE.");
        }

        return codec.EncodeForScoring(File.ReadAllText(file));
    }

    /// <summary>Consecutive windows of the token stream (the first token of each replaced by BOS, as perplexity does).</summary>
    private static List<int[]> Windows(int[] tokens, int length, int count, int? bos)
    {
        var windows = new List<int[]>();
        for (int start = 0; start < tokens.Length && windows.Count < count; start += length)
        {
            var window = tokens.AsSpan(start, Math.Min(length, tokens.Length - start)).ToArray();
            if (bos is int b)
            {
                window[0] = b;
            }

            windows.Add(window);
        }

        return windows;
    }

    private sealed record Measurement(long Parameters, long NonZero, long FileBytes, PerplexityResult? Perplexity, QuickSpeed? Speed);

    private static Measurement Measure(LoadedModel model, int[]? evalTokens, int context, int? maxChunks, int? bos, bool speed, long? zeros, CancellationToken ct)
    {
        var perplexity = evalTokens is null ? null : PerplexityEvaluator.Evaluate(model.Model, evalTokens, context, maxChunks, bos, null, ct);
        var rate = speed ? EngineSpeed.Quick(model.Model, WorkerPool.Shared.ThreadCount, ct) : null;
        long parameters = model.Model.Weights.ParameterCount;
        return new Measurement(parameters, parameters - (zeros ?? CountZeros(model.Model.Weights)), model.Facts.WeightFileBytes, perplexity, rate);
    }

    private static long CountZeros(WeightSet weights)
    {
        long zeros = 0;
        foreach (var t in weights.All.Values)
        {
            var row = new float[t.Columns];
            for (int r = 0; r < t.Rows; r++)
            {
                t.ReadRow(r, row);
                zeros += row.Count(v => v == 0);
            }
        }

        return zeros;
    }

    private static JsonObject Provenance(PruningOptions o, string source, List<int[]>? calibration, int context)
    {
        var p = new JsonObject
        {
            ["method"] = PruningOptions.MethodName(o.Method),
            ["source"] = Path.GetFileName(source.TrimEnd(Path.DirectorySeparatorChar)),
        };
        if (o.Method is PruningMethod.Magnitude or PruningMethod.Wanda)
        {
            p["sparsity"] = o.Sparsity;
        }

        if (o.IncludeEmbeddings)
        {
            p["include_embeddings"] = true;
        }

        if (o.KeepHeads is double h)
        {
            p["keep_heads"] = h;
        }

        if (o.KeepFfn is double f)
        {
            p["keep_ffn"] = f;
        }

        if (o.IsStructured)
        {
            p["allocation"] = o.Allocation.ToString().ToLowerInvariant();
        }

        if (calibration != null)
        {
            p["calibration_tokens"] = calibration.Sum(w => w.Length);
            p["calibration_window"] = context;
        }

        return p;
    }

    private static void Json(Utf8JsonWriter w, string source, string output, PruningOptions o, string? evalFile, int context,
        Measurement before, Measurement after, IReadOnlyList<LayerSparsity> layers, IReadOnlyList<LayerSparsity> embeddings, ModelConfig original, ModelConfig pruned)
    {
        w.WriteString("model", source);
        w.WriteString("output", output);
        w.WriteString("method", PruningOptions.MethodName(o.Method));
        if (o.Method is PruningMethod.Magnitude or PruningMethod.Wanda)
        {
            w.Number("sparsity", o.Sparsity);
        }

        if (o.KeepHeads is double h)
        {
            w.Number("keep_heads", h);
        }

        if (o.KeepFfn is double f)
        {
            w.Number("keep_ffn", f);
        }

        if (evalFile != null)
        {
            w.WriteString("eval", Path.GetFullPath(evalFile));
        }

        w.WriteNumber("ctx", context);
        foreach (var (name, m) in new[] { ("before", before), ("after", after) })
        {
            w.WriteStartObject(name);
            w.WriteNumber("parameters", m.Parameters);
            w.WriteNumber("nonzero_parameters", m.NonZero);
            w.WriteNumber("file_bytes", m.FileBytes);
            if (m.Perplexity is { } p)
            {
                w.Number("perplexity", p.Perplexity);
                w.Number("perplexity_stderr", p.StandardError);
                w.Number("mean_nll", p.MeanNll);
                w.WriteNumber("tokens_scored", p.TokensScored);
            }

            if (m.Speed is { } s)
            {
                w.Number("prefill_tokens_per_second", s.PrefillTokensPerSecond);
                w.Number("decode_tokens_per_second", s.DecodeTokensPerSecond);
            }

            w.WriteEndObject();
        }

        if (embeddings.Count > 0)
        {
            w.WriteStartObject("embeddings");
            foreach (var t in embeddings)
            {
                w.WriteStartObject(t.Name);
                w.Ints("shape", t.Shape.Select(d => (int)d));
                w.Number("sparsity", t.Sparsity);
                w.WriteEndObject();
            }

            w.WriteEndObject();
        }

        w.WriteStartArray("layers");
        foreach (var group in layers.GroupBy(l => l.Layer))
        {
            int l = group.Key;
            w.WriteStartObject();
            w.WriteNumber("layer", l);
            w.Number("sparsity", (double)group.Sum(x => x.Zeros) / group.Sum(x => x.Count));
            w.WriteNumber("heads", pruned.HeadsOf(l));
            w.WriteNumber("kv_heads", pruned.KvHeadsOf(l));
            w.WriteNumber("intermediate", pruned.IntermediateOf(l));
            w.WriteNumber("original_heads", original.HeadsOf(l));
            w.WriteNumber("original_kv_heads", original.KvHeadsOf(l));
            w.WriteNumber("original_intermediate", original.IntermediateOf(l));
            w.WriteStartObject("tensors");
            foreach (var t in group)
            {
                w.WriteStartObject(ShortName(t.Name));
                w.Ints("shape", t.Shape.Select(d => (int)d));
                w.Number("sparsity", t.Sparsity);
                w.WriteEndObject();
            }

            w.WriteEndObject();
            w.WriteEndObject();
        }

        w.WriteEndArray();
    }

    private static void Text(TextWriter o, string source, string output, PruningOptions options, string? evalFile,
        Measurement before, Measurement after, IReadOnlyList<LayerSparsity> layers, IReadOnlyList<LayerSparsity> embeddings, ModelConfig original, ModelConfig pruned)
    {
        string what = options.Method switch
        {
            PruningMethod.Magnitude or PruningMethod.Wanda => $"{PruningOptions.MethodName(options.Method)}, {F(options.Sparsity * 100, "0.#")}% of each linear layer",
            PruningMethod.TwoFour or PruningMethod.FourEight => PruningOptions.MethodName(options.Method) + " semi-structured",
            _ => "structured: " + string.Join(", ", new[]
            {
                options.KeepHeads is double h ? $"keep {F(h * 100, "0.#")}% of heads" : null,
                options.KeepFfn is double f ? $"keep {F(f * 100, "0.#")}% of MLP neurons" : null,
            }.Where(s => s != null)) + $" ({options.Allocation.ToString().ToLowerInvariant()} allocation)",
        };
        o.WriteLine($"pruned {source} ({what})");
        o.WriteLine($"  -> {output}");
        o.WriteLine();
        o.WriteLine($"{"",-18}{"before",14}{"after",14}{"change",10}");
        Row(o, "parameters", before.Parameters, after.Parameters, Short);
        Row(o, "non-zero params", before.NonZero, after.NonZero, Short);
        Row(o, "file size", before.FileBytes, after.FileBytes, Bytes);
        if (before.Perplexity is { } p0 && after.Perplexity is { } p1)
        {
            o.WriteLine($"{"perplexity",-18}{F(p0.Perplexity, "0.000"),14}{F(p1.Perplexity, "0.000"),14}{Percent(p1.Perplexity / p0.Perplexity),10}");
        }

        if (before.Speed is { } s0 && after.Speed is { } s1)
        {
            o.WriteLine($"{"prefill tok/s",-18}{F(s0.PrefillTokensPerSecond, "0"),14}{F(s1.PrefillTokensPerSecond, "0"),14}{Percent(s1.PrefillTokensPerSecond / s0.PrefillTokensPerSecond),10}");
            o.WriteLine($"{"decode tok/s",-18}{F(s0.DecodeTokensPerSecond, "0"),14}{F(s1.DecodeTokensPerSecond, "0"),14}{Percent(s1.DecodeTokensPerSecond / s0.DecodeTokensPerSecond),10}");
            o.WriteLine($"(speed: {s0.Batch1.Conditions.Describe()})");
        }

        if (after.Perplexity is { } p && evalFile != null)
        {
            o.WriteLine($"(perplexity on {Path.GetFileName(evalFile)}: {p.TokensScored} tokens scored in {p.Chunks} windows of {p.Context})");
        }

        o.WriteLine();
        foreach (var group in layers.GroupBy(l => l.Layer))
        {
            int l = group.Key;
            string shape = options.IsStructured
                ? $"heads {original.HeadsOf(l)}->{pruned.HeadsOf(l)} (kv {original.KvHeadsOf(l)}->{pruned.KvHeadsOf(l)}), mlp {original.IntermediateOf(l)}->{pruned.IntermediateOf(l)}"
                : string.Join(" ", group.Select(t => $"{ShortName(t.Name)} {F(t.Sparsity * 100, "0.0")}%"));
            o.WriteLine($"layer {l}: {shape}; sparsity {F(100.0 * group.Sum(x => x.Zeros) / group.Sum(x => x.Count), "0.0")}%");
        }

        foreach (var t in embeddings)
        {
            o.WriteLine($"{t.Name}: sparsity {F(t.Sparsity * 100, "0.0")}%");
        }

        if (options.IsStructured)
        {
            int heads0 = Enumerable.Range(0, original.Layers).Sum(original.HeadsOf), heads1 = Enumerable.Range(0, pruned.Layers).Sum(pruned.HeadsOf);
            int ffn0 = Enumerable.Range(0, original.Layers).Sum(original.IntermediateOf), ffn1 = Enumerable.Range(0, pruned.Layers).Sum(pruned.IntermediateOf);
            o.WriteLine($"kept {heads1}/{heads0} heads ({F(100.0 * heads1 / heads0, "0.#")}%; whole kv groups with GQA) and {ffn1}/{ffn0} MLP neurons ({F(100.0 * ffn1 / ffn0, "0.#")}%)");
        }
        else
        {
            o.WriteLine("note: this folder stores the zeros densely; `minnow export OUT --type sparse-f16|sparse-i8 -o FILE.gguf` stores only the kept weights.");
        }
    }

    private static void Row(TextWriter o, string name, long before, long after, Func<long, string> format) =>
        o.WriteLine($"{name,-18}{format(before),14}{format(after),14}{Percent(before == 0 ? 1 : (double)after / before),10}");

    private static string Percent(double ratio) => (ratio >= 1 ? "+" : "") + ((ratio - 1) * 100).ToString("0.0", CultureInfo.InvariantCulture) + "%";

    /// <summary>"model.layers.0.self_attn.q_proj.weight" → "self_attn.q_proj".</summary>
    private static string ShortName(string name)
    {
        var parts = name.Split('.');
        return parts.Length >= 3 ? parts[^3] + "." + parts[^2] : name;
    }
}
