using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
#if MINNOW_LLAMACPP
using LLama.Native;
#endif
using Minnow.Export;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Quantization;
using Minnow.Serving;
using Minnow.Tensors;
using Spectre.Console;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow quantize [MODEL] --out OUT.gguf --scheme q8_0|q4_0|int4|int3|int8 [--group 32|64|128] [--method rtn|gptq|awq|llamacpp] [--smooth-alpha A]</c>:
/// quantizes a model's linear layers to GGUF Q8_0 / Q4_0 blocks or INT4 / INT3 groups with a scale and zero point (round
/// to nearest, GPTQ or AWQ-style scaling, calibrated on a
/// text), writes a GGUF file every engine runs, then measures it against the original on an evaluation text:
/// size, bits per weight, perplexity before and after, KL divergence and top-1 agreement, decode speed, and the
/// per-layer relative output error on the calibration data. <c>--method llamacpp</c> runs llama.cpp's own
/// quantizer instead (the reference to compare with). The file appears only once complete; Ctrl+C leaves nothing.
/// </summary>
internal static class QuantizeCommand
{
    public const int DefaultCalibrationTokens = 32768;

    /// <summary>SmoothQuant's α for <c>--scheme int8</c> (the paper's default for most models).</summary>
    public const double DefaultSmoothAlpha = 0.5;

    /// <summary>Calibration windows the mixed-precision sensitivity scan runs per layer.</summary>
    private const int MixedScanWindows = 16;

    public static Command Create()
    {
        var model = ModelArgument();
        var output = new Option<string>("--out", "-o") { Description = "The GGUF file to write.", Required = true };
        var scheme = new Option<string>("--scheme")
        {
            Description = "Weight format: q8_0, q4_0, int4 (a scale and zero point per --group of values; 32 is llama.cpp's q4_1), " +
                "int3 (3-bit codes, a scale and zero point per --group; Minnow's own GGUF types), " +
                "int8 (one scale per output channel: I8 codes and an F16 scale per row, Minnow's own; SmoothQuant with --smooth-alpha), " +
                "or mixed (q4_0 with the layers that matter most kept at q8_0, within --max-size). " +
                "With --method llamacpp also llama.cpp's own types: q4_1, q5_0, q5_1, q2_k, q3_k_m, q4_k_s, q4_k_m, q5_k_m, q6_k.",
            DefaultValueFactory = _ => "q4_0",
        };
        var group = new Option<int>("--group")
        {
            Description = "With --scheme int4 or int3: values per scale and zero point, 32, 64 or 128 (int4 64 and 128, and every int3, are Minnow's own GGUF types).",
            DefaultValueFactory = _ => 32,
        };
        var maxSize = new Option<string?>("--max-size")
        {
            Description = "With --scheme mixed: the most the weights may take, e.g. 90MB or 1.2GiB (default: 10% over the all-q4_0 size).",
        };
        var method = new Option<string>("--method")
        {
            Description = "rtn (llama.cpp's round to nearest), gptq (Hessian error feedback), awq (activation-aware scaling, then rtn), " +
                "or llamacpp (llama.cpp's own quantizer, for comparison).",
            DefaultValueFactory = _ => "gptq",
        };
        var calib = new Option<string?>("--calib") { Description = "Calibration text (default: the first part of the evaluation text, which is then evaluated on the rest)." };
        var calibTokens = new Option<int>("--calib-tokens")
        {
            Description = "Most calibration tokens used.",
            DefaultValueFactory = _ => DefaultCalibrationTokens,
        };
        var calibLength = new Option<int?>("--calib-seq") { Description = "Tokens per calibration sequence (default: min(256, the model's context))." };
        var eval = new Option<string?>("--eval")
        {
            Description = "Evaluation text for the report (default: held-out.txt beside the model, when there is one).",
        };
        var ids = new Option<bool>("--ids") { Description = "--calib and --eval hold token ids (whitespace or comma separated), for models without a tokenizer." };
        var ctx = new Option<int>("--ctx", "-c") { Description = "Evaluation window in tokens (capped to the model's context).", DefaultValueFactory = _ => 512 };
        var chunks = new Option<int?>("--chunks") { Description = "Evaluate at most this many windows (default: all)." };
        var bos = new Option<string?>("--bos") { Description = "Token id put at the start of every window and calibration sequence, or 'none' (default: the tokenizer's BOS when it adds one)." };
        var damp = new Option<double>("--damp") { Description = "GPTQ dampening, as a fraction of the Hessian's mean diagonal.", DefaultValueFactory = _ => 0.01 };
        var noActOrder = new Option<bool>("--no-act-order") { Description = "GPTQ: quantize columns left to right instead of by decreasing Hessian diagonal." };
        var noScaleSearch = new Option<bool>("--no-scale-search") { Description = "GPTQ Q4_0, int4, int3: use llama.cpp's scale rules (Q4_0 max / -8; groups (max - min) / 15, or / 7 for int3) instead of a Hessian-weighted search." };
        var smoothAlpha = new Option<double?>("--smooth-alpha")
        {
            Description = "With --scheme int8: SmoothQuant migration strength α in [0, 1] (default 0.5; 0 turns smoothing off).",
        };
        var json = JsonOption();
        var command = new Command("quantize", "Quantize a model to GGUF Q8_0, Q4_0, INT4 or INT3 groups (round to nearest, GPTQ or AWQ) and report what it costs in quality.")
        {
            model, output, scheme, group, maxSize, method, calib, calibTokens, calibLength, eval, ids, ctx, chunks, bos, damp, noActOrder, noScaleSearch, smoothAlpha, json,
        };

        command.SetSyncAction((r, ct) =>
        {
            var watch = Stopwatch.StartNew();
            string schemeName = r.GetValue(scheme)?.Trim().ToLowerInvariant() ?? "q4_0";
            bool mixed = schemeName == "mixed";
            string methodName = r.GetValue(method)?.Trim().ToLowerInvariant() ?? "gptq";
            bool llamaCpp = methodName is "llamacpp" or "llama.cpp";
            if (llamaCpp)
            {
                LlamaCppSupport.Require("--method llamacpp");
            }

            bool int8 = schemeName == "int8";
            if (r.GetValue(smoothAlpha) is not null && !int8)
            {
                throw new MinnowException("--smooth-alpha applies to --scheme int8 only.");
            }

            if (int8 && llamaCpp)
            {
                throw new MinnowException("--scheme int8 is Minnow's own (per-channel scales); llama.cpp's quantizer does not make it.");
            }

            // llama.cpp's quantizer also makes its own other types (q4_k_m, ...), for comparison.
            bool llamaCppOnly = llamaCpp && schemeName is not ("q8_0" or "q8" or "q4_0" or "q4");
            var type = mixed || llamaCppOnly ? DType.Q4_0 : QuantizationOptions.ParseScheme(schemeName, r.GetValue(group));
            if (llamaCppOnly)
            {
                LlamaCppQuantizer.ParseType(schemeName);
            }

            long? budget = r.GetValue(maxSize) is string sizeText ? MixedPrecision.ParseSize(sizeText) : null;
            if (budget is not null && !mixed)
            {
                throw new MinnowException("--max-size applies to --scheme mixed only.");
            }

            if (llamaCpp && mixed)
            {
                throw new MinnowException("--method llamacpp makes llama.cpp's own types (q8_0, q4_0, q4_k_m, ...), not mixed.");
            }

            var options = new QuantizationOptions
            {
                Scheme = type,
                Method = llamaCpp ? QuantizationMethod.Rtn : QuantizationOptions.ParseMethod(methodName),
                Dampening = r.GetValue(damp),
                ActOrder = !r.GetValue(noActOrder),
                ScaleSearch = !r.GetValue(noScaleSearch),
                PerChannel = int8,
                SmoothAlpha = int8 ? r.GetValue(smoothAlpha) ?? DefaultSmoothAlpha : 0,
            };
            options.Validate();
            if (r.GetValue(calibTokens) < 2)
            {
                throw new MinnowException($"--calib-tokens must be at least 2 (got {r.GetValue(calibTokens)}).");
            }

            if (r.GetValue(chunks) is <= 0)
            {
                throw new MinnowException($"--chunks must be positive (got {r.GetValue(chunks)}).");
            }

            string target = Path.GetFullPath(r.GetValue(output)!);
            if (Directory.Exists(target))
            {
                throw new MinnowException($"{target}: is a folder; --out must be a file path such as model-q4_0.gguf.");
            }

            using var loaded = LoadedModel.Open(DefaultModel.Resolve(r.GetValue(model)));
            if (string.Equals(loaded.Path, target, StringComparison.Ordinal))
            {
                throw new MinnowException($"{target}: --out is the model itself; write to another file.");
            }

            var err = Err(r);
            var texts = Texts.Prepare(loaded, r.GetValue(calib), r.GetValue(eval), r.GetValue(ids), r.GetValue(bos), r.GetValue(calibTokens),
                r.GetValue(calibLength));
            foreach (var note in texts.Notes)
            {
                err.WriteLine("note: " + note);
            }

            int requested = r.GetValue(ctx);
            int context = Math.Min(requested, loaded.Config.MaxPositions);
            var tokenizer = GgufTokenizerMetadata.For(loaded.Path, loaded.Format, loaded.Config.VocabSize);
            bool bar = ErrIsTerminal(r);
            var report = new Report { SchemeOverride = mixed ? "mixed" : llamaCppOnly ? schemeName : int8 ? "int8" : null, Options = options, Method = llamaCpp ? "llamacpp" : QuantizationOptions.MethodName(options.Method), Texts = texts, Context = context };

            var writtenNotes = new List<string>();
            ProgressPhases.Run(bar, err, phase =>
            {
                var calibWatch = Stopwatch.StartNew();
                using var statistics = Calibration.Collect(loaded.Model, texts.Calibration, phase($"calibrating ({Count(texts.CalibrationTokens)} tokens)"), ct);
                report.CalibrationSeconds = calibWatch.Elapsed.TotalSeconds;

                var quantizeWatch = Stopwatch.StartNew();
                if (mixed)
                {
                    // Sensitivity on calibration windows (never on the evaluation text), then the budget.
                    var scanTokens = texts.Calibration.SelectMany(s => texts.Bos is null ? s : s.Skip(1)).ToList();
                    var sensitivities = MixedPrecision.Scan(loaded.Model, scanTokens, texts.SequenceLength, MixedScanWindows, texts.Bos,
                        phase("sensitivity scan"), ct);
                    long limit = budget ?? (long)(MixedPrecision.EstimateBytes(loaded.Model, options) * 1.10);
                    report.MixedPlan = MixedPrecision.Choose(loaded.Model, sensitivities, limit);
                    options = options with { TypeOverrides = report.MixedPlan.Overrides };
                    report.Options = options;
                }

                if (llamaCpp)
                {
                    var progress = phase("llama.cpp quantizer");
                    LlamaCppQuantizer.Quantize(loaded.Model, tokenizer.Write, target, llamaCppOnly ? schemeName : type.Name().ToLowerInvariant(), ct);
                    progress.Report((1, 1));
                }
                else
                {
                    using var quantized = ModelQuantizer.Quantize(loaded.Model, options, statistics, phase($"quantizing ({report.Method})"), ct);
                    report.Tensors = quantized.Tensors;
                    var writing = phase("writing");
                    GgufExporter.Export(quantized.Model, target, type, tokenizer.Write, writing, ct, rowScaledInt8: options.PerChannel);
                }

                report.QuantizeSeconds = quantizeWatch.Elapsed.TotalSeconds;

                // Measure what was written, as every other command will load it.
                using var written = ModelLoader.LoadModel(target, null, writtenNotes);
                report.FileBytes = new FileInfo(target).Length;
                using (var file = Formats.Gguf.GgufFile.Open(target))
                {
                    // As stored: llama.cpp's k-quant tensors are converted to F32 when loaded.
                    report.TensorBytes = file.Tensors.Sum(t => t.ByteSize);
                }

                report.Parameters = written.Weights.ParameterCount;
                report.OriginalBytes = loaded.Model.Weights.ByteSize;
                if (llamaCpp)
                {
                    report.Tensors = LayerErrors(loaded.Model, written, statistics, target);
                }

                report.Comparison = ModelComparison.Compare(loaded.Model, written, texts.Evaluation, context, r.GetValue(chunks), texts.Bos,
                    phase("evaluating"), ct);
                var before = ModelComparison.DecodeSpeed(loaded.Model, WorkerPool.Shared.ThreadCount);
                report.OriginalDecode = before.DecodeTokensPerSecond;
                report.Decode = ModelComparison.DecodeSpeed(written, WorkerPool.Shared.ThreadCount).DecodeTokensPerSecond;
                report.SpeedConditions = before.Conditions.Describe();
            });

            WriteNotes(err, writtenNotes);
            report.Seconds = watch.Elapsed.TotalSeconds;
            if (r.GetValue(json))
            {
                WriteJson(Out(r), w => report.WriteJson(w, loaded, target, tokenizer.Description));
            }
            else
            {
                report.WriteText(Out(r), loaded, target, tokenizer.Description);
            }

            return 0;
        });
        return command;
    }

    /// <summary>
    /// Per-layer errors of a model quantized elsewhere (llama.cpp), matched to the original by name. Llama's q/k rows
    /// come back in llama.cpp's interleaved order; the error is the same whichever order the rows are in, so they
    /// are compared row-for-row after undoing the permutation.
    /// </summary>
    private static List<TensorReport> LayerErrors(TransformerModel original, TransformerModel written, ActivationStatistics statistics, string file)
    {
        // The types as stored (k-quant tensors are F32 once loaded).
        using var gguf = Formats.Gguf.GgufFile.Open(file);
        string arch = GgufNames.ArchitectureOf(original.Config);
        var stored = gguf.Tensors.ToDictionary(t => t.Name, t => t, StringComparer.Ordinal);
        var reports = new List<TensorReport>();
        var plan = statistics.Plan;
        foreach (var layer in plan.Layers)
        {
            if (!written.Weights.Has(layer.Name) || !statistics.Has(layer.Group))
            {
                continue;
            }

            var tensor = written.Weights.Get(layer.Name);
            var w = ModelQuantizer.ReadMatrix(original.Weights.Get(layer.Name), layer);
            var q = tensor.ToFloatArray();
            if (original.Config.RopeStyle != written.Config.RopeStyle && layer.Name.Contains(".self_attn.", StringComparison.Ordinal) &&
                (layer.Name.Contains("q_proj", StringComparison.Ordinal) || layer.Name.Contains("k_proj", StringComparison.Ordinal)))
            {
                int heads = layer.Rows / original.Config.HeadDim;
                q = UndoInterleave(q, heads, original.Config.HeadDim, layer.Columns);
            }

            using var error = new OutputError(statistics.Hessian(layer.Group), layer.Columns);
            string? ggufName = GgufNames.FromHuggingFace(arch, layer.Name.StartsWith("transformer.", StringComparison.Ordinal) ? layer.Name["transformer.".Length..] : layer.Name);
            var file0 = ggufName is not null && stored.TryGetValue(ggufName, out var s0) ? s0 : tensor;
            double? rtnError = null;
            if (file0.Type is DType.Q4_0 or DType.Q8_0 || (file0.Type.IsIntGroup() && layer.Columns % file0.Type.BlockSize() == 0))
            {
                var rtn = BlockCodec.RoundToNearest(file0.Type, w, layer.Rows, layer.Columns).ToFloats();
                rtnError = error.Relative(w, rtn, layer.Rows);
            }

            reports.Add(new TensorReport
            {
                Name = layer.Name,
                Type = file0.Type,
                Shape = [layer.Rows, layer.Columns],
                Bytes = file0.ByteSize,
                Method = "llamacpp",
                RelativeOutputError = error.Relative(w, q, layer.Rows),
                RoundToNearestError = rtnError,
            });
        }

        return reports;
    }

    /// <summary>llama.cpp's rows (2i, 2i+1) of each head back to Hugging Face's (i, i + d/2).</summary>
    private static float[] UndoInterleave(float[] values, int heads, int headDim, int columns)
    {
        var result = new float[values.Length];
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
        {
            for (int i = 0; i < half; i++)
            {
                Array.Copy(values, ((h * headDim) + (2 * i)) * columns, result, ((h * headDim) + i) * columns, columns);
                Array.Copy(values, ((h * headDim) + (2 * i) + 1) * columns, result, ((h * headDim) + half + i) * columns, columns);
            }
        }

        return result;
    }

    /// <summary>The token streams a run uses: calibration sequences and the evaluation tokens.</summary>
    internal sealed class Texts
    {
        public required List<int[]> Calibration { get; init; }

        public required int[] Evaluation { get; init; }

        public required int? Bos { get; init; }

        public required string CalibrationSource { get; init; }

        public required string EvaluationSource { get; init; }

        public required int SequenceLength { get; init; }

        public List<string> Notes { get; } = [];

        public long CalibrationTokens => Calibration.Sum(s => (long)s.Length);

        public static Texts Prepare(LoadedModel loaded, string? calibFile, string? evalFile, bool ids, string? bosText, int maxTokens, int? sequenceLength)
        {
            var codec = PromptEncoder.For(loaded);
            if (!ids && codec is null)
            {
                throw new MinnowException($"{loaded.Path}: {PromptEncoder.Missing(loaded)}; give token ids with --ids (--calib and --eval files of ids).");
            }

            var notes = new List<string>();
            if (evalFile is null)
            {
                string folder = Directory.Exists(loaded.Path) ? loaded.Path : Path.GetDirectoryName(loaded.Path)!;
                string heldOut = Path.Combine(folder, "held-out.txt");
                if (!ids && File.Exists(heldOut))
                {
                    evalFile = heldOut;
                }
                else
                {
                    throw new MinnowException("give an evaluation text with --eval FILE (there is no held-out.txt beside the model).");
                }
            }

            int? bos = ids ? null : codec!.AddedBos;
            if (bosText is not null)
            {
                bos = bosText.Equals("none", StringComparison.OrdinalIgnoreCase)
                    ? null
                    : int.TryParse(bosText, NumberStyles.None, CultureInfo.InvariantCulture, out int b) && b < loaded.Config.VocabSize
                        ? b
                        : throw new MinnowException($"--bos must be a token id below {loaded.Config.VocabSize} or 'none' (got '{bosText}').");
            }

            // Evaluation reads the tokens as `minnow perplexity` does; calibration sequences get the BOS put back on each
            // instead of the text's own leading one.
            int[] Read(string file)
            {
                if (!File.Exists(file))
                {
                    throw new MinnowException($"{file}: file not found.");
                }

                var tokens = ids ? ParseIds(File.ReadAllText(file), file) : codec!.EncodeForScoring(File.ReadAllText(file));
                foreach (int t in tokens)
                {
                    if ((uint)t >= (uint)loaded.Config.VocabSize)
                    {
                        throw new MinnowException($"{file}: token id {t} is outside the model's vocabulary of {loaded.Config.VocabSize}.");
                    }
                }

                return tokens;
            }

            int Lead(int[] tokens) => bos is int b0 && tokens.Length > 0 && tokens[0] == b0 ? 1 : 0;

            int length = sequenceLength ?? Math.Min(256, loaded.Config.MaxPositions);
            if (length < 2 || length > loaded.Config.MaxPositions)
            {
                throw new MinnowException($"--calib-seq must be between 2 and the model's context {loaded.Config.MaxPositions} (got {length}).");
            }

            var evalTokens = Read(evalFile);
            List<int[]> calibration;
            string calibSource;
            if (calibFile is not null)
            {
                var calibTokens = Read(calibFile);
                calibration = Quantization.Calibration.FromTokens(calibTokens[Lead(calibTokens)..], length, maxTokens, bos);
                calibSource = Path.GetFullPath(calibFile);
            }
            else
            {
                // Calibrate on the first part of the evaluation text, at most half of it, and evaluate on the rest.
                long budget = Math.Min(maxTokens, evalTokens.Length / 2);
                int lead = Lead(evalTokens);
                calibration = Quantization.Calibration.FromTokens(evalTokens[lead..], length, budget, bos);
                int used = Quantization.Calibration.TokensConsumed(calibration, bos);
                evalTokens = evalTokens[(lead + used)..];
                calibSource = Path.GetFullPath(evalFile) + $" (first {used} tokens)";
                notes.Add($"no --calib: calibrating on the first {Count(used)} tokens of {evalFile}, evaluating on the remaining {Count(evalTokens.Length)}.");
            }

            if (calibration.Count == 0)
            {
                throw new MinnowException($"the calibration text is shorter than one sequence of {length} tokens; give a longer --calib or a smaller --calib-seq.");
            }

            var texts = new Texts
            {
                Calibration = calibration,
                Evaluation = evalTokens,
                Bos = bos,
                CalibrationSource = calibSource,
                EvaluationSource = Path.GetFullPath(evalFile),
                SequenceLength = length,
            };
            texts.Notes.AddRange(notes);
            return texts;
        }
    }

    private sealed class Report
    {
        /// <summary>The scheme's name when it is not the block type of <see cref="Options"/> (mixed, llama.cpp's k-quants).</summary>
        public required string? SchemeOverride { get; init; }

        public required QuantizationOptions Options { get; set; }

        public MixedPrecisionPlan? MixedPlan { get; set; }

        private string SchemeName => SchemeOverride ?? Options.Scheme.Name().ToLowerInvariant();

        public required string Method { get; init; }

        public required Texts Texts { get; init; }

        public required int Context { get; init; }

        public IReadOnlyList<TensorReport> Tensors { get; set; } = [];

        public ComparisonResult? Comparison { get; set; }

        public long FileBytes { get; set; }

        public long TensorBytes { get; set; }

        public long OriginalBytes { get; set; }

        public long Parameters { get; set; }

        public double CalibrationSeconds { get; set; }

        public double QuantizeSeconds { get; set; }

        public double OriginalDecode { get; set; }

        public double Decode { get; set; }

        /// <summary>The conditions both decode figures were measured under.</summary>
        public string SpeedConditions { get; set; } = "";

        public double Seconds { get; set; }

        public double BitsPerWeight => TensorBytes * 8.0 / Math.Max(1, Parameters);

        public double OriginalBitsPerWeight => OriginalBytes * 8.0 / Math.Max(1, Parameters);

        private IEnumerable<TensorReport> Layers => Tensors.Where(t => t.RelativeOutputError is not null);

        public void WriteText(TextWriter o, LoadedModel loaded, string target, string tokenizer)
        {
            var c = Comparison!;
            o.WriteLine($"wrote {target}: GGUF {SchemeName} ({Method}), {Bytes(FileBytes)}, {F(BitsPerWeight, "0.00")} bits/weight " +
                $"(from {Bytes(OriginalBytes)}, {F(OriginalBitsPerWeight, "0.00")}), tokenizer: {tokenizer}");
            o.WriteLine($"calibration: {Texts.Calibration.Count} sequences of {Texts.SequenceLength} tokens from {Texts.CalibrationSource} " +
                $"({F(CalibrationSeconds, "0.0")} s); quantization {F(QuantizeSeconds, "0.0")} s");
            o.WriteLine($"evaluation: {Texts.EvaluationSource}, {Count(c.TokensScored)} tokens scored ({c.Chunks} windows of {c.Context})");
            o.WriteLine($"perplexity: {F(c.ReferencePerplexity, "0.0000")} ± {F(c.ReferenceStandardError, "0.0000")} → {F(c.Perplexity, "0.0000")} ± {F(c.StandardError, "0.0000")} " +
                $"({F(((c.Perplexity / c.ReferencePerplexity) - 1) * 100, "+0.00;-0.00;+0.00")} %)");
            o.WriteLine($"KL divergence: {F(c.MeanKl, "0.000000")} ± {F(c.KlStandardError, "0.000000")}; same top-1: {F(c.Top1Agreement * 100, "0.00")} ± {F(c.Top1StandardError * 100, "0.00")} %");
            o.WriteLine($"decode: {F(OriginalDecode, "0.0")} → {F(Decode, "0.0")} tokens/s ({SpeedConditions})");
            if (MixedPlan is { } mix)
            {
                var kept = mix.Promoted.ToList();
                o.WriteLine($"mixed: {kept.Count} of {mix.Layers.Count} tensors kept at q8_0 within {Bytes(mix.Budget)} (weights {Bytes(mix.Bytes)}): " +
                    (kept.Count == 0 ? "none" : string.Join(", ", kept)));
            }
            var layers = Layers.ToList();
            if (layers.Count > 0)
            {
                o.WriteLine("relative output error ‖WX − ŴX‖/‖WX‖ on calibration data (round to nearest in brackets):");
                int width = layers.Max(l => l.Name.Length);
                foreach (var l in layers)
                {
                    string rtn = l.RoundToNearestError is double e && l.Method != "rtn" ? $"  [{F(e, "0.00000")}]" : "";
                    string alpha = l.AwqAlpha is double a ? $"  α {F(a, "0.00")}" : "";
                    o.WriteLine($"  {l.Name.PadRight(width)}  {l.Type.Name(),-4}  {F(l.RelativeOutputError!.Value, "0.00000")}{rtn}{alpha}");
                }
            }
        }

        public void WriteJson(System.Text.Json.Utf8JsonWriter w, LoadedModel loaded, string target, string tokenizer)
        {
            var c = Comparison!;
            w.WriteString("model", loaded.Path);
            w.WriteString("out", target);
            w.WriteString("scheme", SchemeName);
            w.WriteString("method", Method);
            w.WriteString("tokenizer", tokenizer);
            w.WriteNumber("size_bytes", FileBytes);
            w.WriteNumber("tensor_bytes", TensorBytes);
            w.WriteNumber("parameters", Parameters);
            w.Number("bits_per_weight", BitsPerWeight);
            w.WriteNumber("original_tensor_bytes", OriginalBytes);
            w.Number("original_bits_per_weight", OriginalBitsPerWeight);
            w.Number("ppl_before", c.ReferencePerplexity);
            w.Number("ppl_before_stderr", c.ReferenceStandardError);
            w.Number("ppl_after", c.Perplexity);
            w.Number("ppl_after_stderr", c.StandardError);
            w.Number("kl_divergence", c.MeanKl);
            w.Number("kl_divergence_stderr", c.KlStandardError);
            w.Number("top1_agreement", c.Top1Agreement);
            w.Number("top1_agreement_stderr", c.Top1StandardError);
            w.Number("decode_tokens_per_second_before", OriginalDecode);
            w.Number("decode_tokens_per_second", Decode);
            w.WriteString("speed_conditions", SpeedConditions);
            w.WriteStartObject("eval");
            w.WriteString("file", Texts.EvaluationSource);
            w.WriteNumber("tokens", Texts.Evaluation.Length);
            w.WriteNumber("tokens_scored", c.TokensScored);
            w.WriteNumber("ctx", c.Context);
            w.WriteNumber("chunks", c.Chunks);
            if (Texts.Bos is int b)
            {
                w.WriteNumber("bos", b);
            }
            else
            {
                w.WriteNull("bos");
            }

            w.WriteEndObject();
            w.WriteStartObject("calibration");
            w.WriteString("source", Texts.CalibrationSource);
            w.WriteNumber("sequences", Texts.Calibration.Count);
            w.WriteNumber("sequence_length", Texts.SequenceLength);
            w.WriteNumber("tokens", Texts.CalibrationTokens);
            w.Number("seconds", CalibrationSeconds);
            w.WriteEndObject();
            w.WriteStartObject("options");
            w.Number("damp", Options.Dampening);
            w.WriteBoolean("act_order", Options.ActOrder);
            w.WriteBoolean("scale_search", Options.ScaleSearch);
            w.WriteNumber("awq_grid", Options.AwqGridSteps);
            w.WriteBoolean("per_channel", Options.PerChannel);
            w.Number("smooth_alpha", Options.SmoothAlpha);
            w.WriteEndObject();
            if (MixedPlan is { } mix)
            {
                w.WriteStartObject("mixed");
                w.WriteNumber("budget_bytes", mix.Budget);
                w.WriteNumber("weight_bytes", mix.Bytes);
                w.WriteStartArray("sensitivity");
                foreach (var l in mix.Layers)
                {
                    w.WriteStartObject();
                    w.WriteString("name", l.Name);
                    w.Number("kl_divergence_q4_0", l.KlDivergence);
                    w.Number("delta_nll_q4_0", l.DeltaNll);
                    w.WriteString("type", mix.Overrides.GetValueOrDefault(l.Name, DType.Q4_0).Name().ToLowerInvariant());
                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteEndObject();
            }

            w.Number("quantize_seconds", QuantizeSeconds);
            w.Number("seconds", Seconds);
            w.WriteStartArray("layers");
            foreach (var l in Tensors)
            {
                w.WriteStartObject();
                w.WriteString("name", l.Name);
                w.WriteString("type", l.Type.Name());
                w.WriteString("method", l.Method);
                w.WriteStartArray("shape");
                foreach (long d in l.Shape)
                {
                    w.WriteNumberValue(d);
                }

                w.WriteEndArray();
                w.WriteNumber("bytes", l.Bytes);
                if (l.RelativeOutputError is double e)
                {
                    w.Number("relative_error", e);
                }

                if (l.RoundToNearestError is double rtn)
                {
                    w.Number("rtn_relative_error", rtn);
                }

                if (l.AwqAlpha is double a)
                {
                    w.Number("awq_alpha", a);
                }

                w.WriteEndObject();
            }

            w.WriteEndArray();
        }
    }

#if MINNOW_LLAMACPP
    /// <summary>
    /// llama.cpp's quantizer (through LLamaSharp): the F32 model exported to a temporary GGUF, quantized by
    /// <c>llama_model_quantize</c> with the output head and token embedding at Q8_0 (as Minnow keeps them, so the
    /// files are the same format and size), moved into place when complete.
    /// </summary>
    internal static class LlamaCppQuantizer
    {
        /// <summary>llama.cpp's type names (as its llama-quantize tool spells them) that this comparison offers.</summary>
        public static readonly IReadOnlyDictionary<string, LLamaFtype> Types = new Dictionary<string, LLamaFtype>(StringComparer.Ordinal)
        {
            ["q8_0"] = LLamaFtype.MOSTLY_Q8_0,
            ["q4_0"] = LLamaFtype.MOSTLY_Q4_0,
            ["q4_1"] = LLamaFtype.MOSTLY_Q4_1,
            ["q5_0"] = LLamaFtype.MOSTLY_Q5_0,
            ["q5_1"] = LLamaFtype.MOSTLY_Q5_1,
            ["q2_k"] = LLamaFtype.MOSTLY_Q2_K,
            ["q3_k_m"] = LLamaFtype.MOSTLY_Q3_K_M,
            ["q4_k_s"] = LLamaFtype.MOSTLY_Q4_K_S,
            ["q4_k_m"] = LLamaFtype.MOSTLY_Q4_K_M,
            ["q5_k_m"] = LLamaFtype.MOSTLY_Q5_K_M,
            ["q6_k"] = LLamaFtype.MOSTLY_Q6_K,
        };

        public static LLamaFtype ParseType(string name) => Types.TryGetValue(name, out var type)
            ? type
            : throw new MinnowException($"--scheme '{name}' is not one of llama.cpp's types offered here ({string.Join(", ", Types.Keys)}).");

        public static void Quantize(TransformerModel model, Action<Formats.Gguf.GgufWriter>? tokenizer, string target, string type, CancellationToken ct)
        {
            string full = Path.GetFullPath(target);
            string source = Formats.Safetensors.AtomicFile.TemporaryFor(full, ".f32");
            string quantized = Formats.Safetensors.AtomicFile.TemporaryFor(full, ".q");
            try
            {
                GgufExporter.Export(model, source, DType.F32, tokenizer, null, ct);
                ct.ThrowIfCancellationRequested();
                QuantizeFile(source, quantized, type);
                ct.ThrowIfCancellationRequested();
                Formats.Safetensors.AtomicFile.Commit(quantized, full);
            }
            finally
            {
                File.Delete(source);
                File.Delete(quantized);
            }
        }

        /// <summary>llama_model_quantize on a GGUF file: Q4_0 or Q8_0, output head and token embedding at Q8_0.</summary>
        public static void QuantizeFile(string source, string destination, DType type) =>
            QuantizeFile(source, destination, type.Name().ToLowerInvariant());

        /// <summary>
        /// llama_model_quantize on a GGUF file to one of <see cref="Types"/>. For Q4_0 and Q8_0 the output head and token
        /// embedding are Q8_0 (as Minnow keeps them, so the files are the same format and size); the k-quant mixes keep
        /// llama.cpp's own choices for them.
        /// </summary>
        public static void QuantizeFile(string source, string destination, string type)
        {
            var ftype = ParseType(type);
            if (!NativeLibraryConfig.LLama.LibraryHasLoaded)
            {
                NativeLibraryConfig.All.WithLogCallback((level, message) =>
                {
                    if (level == LLamaLogLevel.Error)
                    {
                        Console.Error.Write("llama.cpp: " + message);
                    }
                });
            }

            // Loads the native library through LLamaSharp's resolver (the parameters' own import would not find it).
            NativeApi.llama_empty_call();
            var parameters = LLamaModelQuantizeParams.Default();
            parameters.ftype = ftype;
            if (ftype is LLamaFtype.MOSTLY_Q8_0 or LLamaFtype.MOSTLY_Q4_0)
            {
                parameters.output_tensor_type = GGMLType.GGML_TYPE_Q8_0;
                parameters.token_embedding_type = GGMLType.GGML_TYPE_Q8_0;
            }

            parameters.nthread = WorkerPool.DefaultThreadCount;
            if (NativeApi.llama_model_quantize(source, destination, ref parameters) != 0)
            {
                throw new MinnowException($"llama.cpp could not quantize {source} to {type} (see its log above).");
            }
        }
    }
#else
    /// <summary>llama.cpp's quantizer is not in this build (see <see cref="LlamaCppSupport"/>).</summary>
    internal static class LlamaCppQuantizer
    {
        public static void ParseType(string name) => throw LlamaCppSupport.Unavailable($"--scheme {name}");

        public static void Quantize(TransformerModel model, Action<Formats.Gguf.GgufWriter>? tokenizer, string target, string type, CancellationToken ct) =>
            throw LlamaCppSupport.Unavailable("--method llamacpp");
    }
#endif
}
