using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Minnow.Benchmarking;
using Minnow.Formats.Gguf;
using Minnow.Inference;
#if MINNOW_LLAMACPP
using Minnow.LlamaCpp;
#endif
using Minnow.Loading;
using Minnow.Tensors;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow bench MODEL [--vs llama.cpp]</c>: prefill and decode speed, time to first token and peak memory of
/// Minnow — and of llama.cpp on the very same GGUF file with the same token ids — each run in its own child
/// process (peak RSS is per process), alternating engines, medians reported; then whether the two engines agree
/// (argmax at every position, perplexity). A model that is not a GGUF file is exported to one first (--type).
/// </summary>
internal static class BenchCommand
{
    private const string MinnowEngineName = "minnow";
    private const string LlamaCppEngineName = "llama.cpp";
    private const string OnnxRuntimeEngineName = "onnxruntime";

    public static Command Create()
    {
        var model = ModelArgument();
        var vs = new Option<string?>("--vs")
        {
            Description = "Also run these engines on the same model and compare: llama.cpp (the same GGUF file), onnxruntime (that model exported to ONNX, " +
                "quantized weights as they are), or both: llama.cpp,onnxruntime.",
        };
        var threads = new Option<int>("--threads", "-t") { Description = "Threads for each engine.", DefaultValueFactory = _ => 2 };
        var prompt = new Option<int>("--prompt", "-p") { Description = "Prompt tokens (evaluated in one batch).", DefaultValueFactory = _ => 128 };
        var gen = new Option<int>("--gen", "-n") { Description = "Tokens decoded one at a time after the prompt.", DefaultValueFactory = _ => 64 };
        var runs = new Option<int>("--runs", "-r") { Description = "Measured runs per engine (each in a fresh process); medians are reported.", DefaultValueFactory = _ => 5 };
        var type = new Option<string?>("--type")
        {
            Description = "When MODEL is not a GGUF file: export it to a temporary GGUF of this type (f32, f16, q8_0, q4_0) and run on that. " +
                "Default with --vs: f32; without --vs, Minnow runs MODEL as it is.",
        };
        var kvCache = new Option<string>("--kv-cache")
        {
            Description = "Minnow's KV cache type: f16 (the default, as llama.cpp keeps its cache) or f32.",
            DefaultValueFactory = _ => "f16",
        };
        var seed = new Option<ulong>("--seed", "-s") { Description = "Seed of the pseudo-random prompt ids.", DefaultValueFactory = _ => 0 };
        var agreementText = new Option<string?>("--agreement-text")
        {
            Description = "With --vs: a UTF-8 text, tokenized with the model's tokenizer, on which both engines' argmax and perplexity are " +
                "compared (default: a sequence sampled from the model itself).",
        };
        var agreementTokens = new Option<int>("--agreement-tokens") { Description = "Tokens of the agreement check.", DefaultValueFactory = _ => 256 };
        var noAgreement = new Option<bool>("--no-agreement") { Description = "With --vs: measure speed only, skip the agreement check." };
        var batch = new Option<string?>("--batch", "-b")
        {
            Description = "Decode this many sequences at once through the engine, for each count in a list such as 1,2,4,8: aggregate tokens/s and " +
                "each sequence's ms/token (with --vs llama.cpp, llama.cpp's own batched decode beside it).",
        };
        var json = JsonOption();
        var profile = new Option<bool>("--profile")
        {
            Description = "With --batch: where a decode step's time goes (linear layers, attention, rope, output head, norms and activations, " +
                "the engine's batching and sampling), per step and per token.",
        };

        // The child-process mode the parent uses: one engine, one measured run, one JSON object.
        var engine = new Option<string?>("--engine") { Hidden = true };
        var singleRun = new Option<bool>("--single-run") { Hidden = true };
        var idsFile = new Option<string?>("--ids-file") { Hidden = true };

        var command = new Command("bench", "Measure prefill and decode speed, time to first token and peak memory; with --vs llama.cpp, side by side on the same GGUF.")
        {
            model, vs, threads, prompt, gen, runs, type, kvCache, seed, agreementText, agreementTokens, noAgreement, batch, json, profile, engine, singleRun, idsFile,
        };

        command.SetSyncAction((r, ct) =>
        {
            var settings = new Settings
            {
                Threads = r.GetValue(threads),
                Prompt = r.GetValue(prompt),
                Gen = r.GetValue(gen),
                Runs = r.GetValue(runs),
                Seed = r.GetValue(seed),
                KvCache = ParseKvCache(r.GetValue(kvCache) ?? "f16"),
                Profile = r.GetValue(profile),
            };
            settings.Validate();
            if (r.GetValue(singleRun) && string.Equals(r.GetValue(engine), OnnxRuntimeEngineName, StringComparison.OrdinalIgnoreCase))
            {
                return SingleRun(r, OnnxRuntimeEngineName, Path.GetFullPath(DefaultModel.Resolve(r.GetValue(model))), r.GetValue(idsFile), settings, ct);
            }

            string modelPath = LoadedModel.ResolveModelPath(Path.GetFullPath(DefaultModel.Resolve(r.GetValue(model))));
            int[]? batches = r.GetValue(batch) is { } batchText ? BenchBatches.ParseList(batchText) : null;
            if (batches is not null && settings.Gen < 2)
            {
                throw new MinnowException($"--batch needs --gen of at least 2 tokens (got {settings.Gen}).");
            }

            if (r.GetValue(singleRun))
            {
                if (batches is not null)
                {
                    string file = r.GetValue(idsFile) is { } f && File.Exists(f) ? f : throw new MinnowException("--single-run needs --ids-file FILE.");
                    return BenchBatches.SingleRun(r, r.GetValue(engine)?.ToLowerInvariant() ?? "", batches[0], modelPath, ParseIds(File.ReadAllText(file), file),
                        settings.Threads, settings.Prompt, settings.Gen, settings.KvCache, r.GetValue(profile), ct);
                }

                return SingleRun(r, r.GetValue(engine), modelPath, r.GetValue(idsFile), settings, ct);
            }

            var peers = ParsePeers(r.GetValue(vs));
            string? peer = peers.Contains(LlamaCppEngineName) ? LlamaCppEngineName : null;

            if (peer is not null)
            {
                LlamaCppSupport.Require("--vs llama.cpp");
            }

            string? textFile = r.GetValue(agreementText);
            if (textFile is not null && !File.Exists(textFile))
            {
                throw new MinnowException($"{textFile}: file not found.");
            }

            int checkTokens = r.GetValue(agreementTokens);
            if (checkTokens < 2)
            {
                throw new MinnowException($"--agreement-tokens must be at least 2 (got {checkTokens}).");
            }

            string? typeText = r.GetValue(type);
            DType? exportType = typeText is null ? null : ExportCommand.ParseType(typeText);
            if (exportType is DType t && t.IsSparse() && peer is not null)
            {
                throw new MinnowException($"--type {typeText}: llama.cpp cannot read Minnow's sparse types; compare with --vs llama.cpp on f16 or q8_0.");
            }

            return Compare(r, modelPath, peers.Contains(LlamaCppEngineName), peers.Contains(OnnxRuntimeEngineName), exportType, settings, textFile, r.GetValue(noAgreement) ? 0 : checkTokens,
                r.GetValue(json), batches, ct);
        });
        return command;
    }

    private sealed record Settings
    {
        public required int Threads { get; init; }

        public required int Prompt { get; init; }

        public required int Gen { get; init; }

        public required int Runs { get; init; }

        public required ulong Seed { get; init; }

        public required DType KvCache { get; init; }

        /// <summary>With --batch: time the parts of each decode step.</summary>
        public bool Profile { get; init; }

        public int Context => Prompt + Gen;

        public void Validate()
        {
            if (Threads < 1)
            {
                throw new MinnowException($"--threads must be at least 1 (got {Threads}).");
            }

            if (Prompt < 1)
            {
                throw new MinnowException($"--prompt must be at least 1 token (got {Prompt}).");
            }

            if (Gen < 1)
            {
                throw new MinnowException($"--gen must be at least 1 token (got {Gen}).");
            }

            if (Runs < 1)
            {
                throw new MinnowException($"--runs must be at least 1 (got {Runs}).");
            }
        }
    }

    /// <summary>f16 or f32, for <c>--kv-cache</c>.</summary>
    internal static DType ParseKvCache(string text) => text.ToLowerInvariant() switch
    {
        "f16" => DType.F16,
        "f32" => DType.F32,
        _ => throw new MinnowException($"--kv-cache must be f16 or f32 (got '{text}')."),
    };

    /// <summary>One child's measurement.</summary>
    private sealed record Measurement(string Engine, double PrefillTokS, double DecodeTokS, double TtftMs, double PeakRssMb, double LoadMs);

    /// <summary>The engines named by --vs ("llama.cpp", "onnxruntime", or both separated by commas).</summary>
    internal static HashSet<string> ParsePeers(string? text)
    {
        var peers = new HashSet<string>(StringComparer.Ordinal);
        foreach (string part in (text ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            peers.Add(part.ToLowerInvariant() switch
            {
                "llama.cpp" or "llamacpp" => LlamaCppEngineName,
                "onnxruntime" or "ort" or "onnx" => OnnxRuntimeEngineName,
                _ => throw new MinnowException($"--vs must be llama.cpp, onnxruntime or llama.cpp,onnxruntime (got '{text}')."),
            });
        }

        return peers;
    }

    private static int Compare(ParseResult r, string modelPath, bool withLlamaCpp, bool withOrt, DType? exportType, Settings s, string? textFile, int checkTokens,
        bool asJson, int[]? batches, CancellationToken ct)
    {
        var err = Err(r);
        string? tempFolder = null;
        try
        {
            // Both engines run on the same GGUF file: export one when MODEL is something else.
            string benchFile = modelPath;
            var format = ModelLoader.DetectFormat(modelPath);
            if (textFile is not null && (withLlamaCpp || withOrt) && checkTokens > 0 && !HasTokenizer(modelPath, format))
            {
                throw new MinnowException($"{modelPath}: the model has no tokenizer, so --agreement-text cannot be tokenized; leave it out to check on a sequence sampled from the model.");
            }

            string? exportedFrom = null;
            if (format != ModelFormat.Gguf && (withLlamaCpp || withOrt || exportType is not null))
            {
                var dtype = exportType ?? DType.F32;
                tempFolder = Path.Combine(Path.GetTempPath(), $"minnow-bench-{Environment.ProcessId}-{Guid.NewGuid():N}");
                Directory.CreateDirectory(tempFolder);
                benchFile = Path.Combine(tempFolder, $"model-{dtype.Name().ToLowerInvariant()}.gguf");
                err.WriteLine($"exporting {modelPath} to a temporary {dtype.Name()} GGUF ...");
                ExportCommand.Export(modelPath, benchFile, dtype, progressBar: false, ct);
                exportedFrom = modelPath;
            }
            else if (format == ModelFormat.Gguf && exportType is not null)
            {
                err.WriteLine($"note: {modelPath} is already a GGUF file; --type is ignored and both engines run on it as it is.");
            }

            using var pool = new WorkerPool(s.Threads);
            using var loaded = LoadedModel.Open(benchFile, pool);
            var config = loaded.Config;
            if (s.Context > config.MaxPositions)
            {
                throw new MinnowException($"--prompt {s.Prompt} + --gen {s.Gen} = {s.Context} tokens is more than the context length of {benchFile} ({config.MaxPositions}).");
            }

            GgufMetadata? metadata = ModelLoader.DetectFormat(benchFile) == ModelFormat.Gguf ? GgufFile.ReadMetadata(benchFile) : null;
            var special = BenchmarkInputs.SpecialIds(config, loaded.Tokenizer, metadata);
            int[] ids = BenchmarkInputs.PseudoRandomIds(s.Context, config.VocabSize, special, s.Seed);
            tempFolder ??= Directory.CreateTempSubdirectory("minnow-bench-").FullName;
            string idsPath = Path.Combine(tempFolder, "ids.txt");
            File.WriteAllText(idsPath, string.Join(' ', ids.Select(i => i.ToString(CultureInfo.InvariantCulture))));
            if (batches is not null)
            {
                return BenchBatches.Compare(r, benchFile, idsPath, batches, withLlamaCpp, s.Threads, s.Prompt, s.Gen, s.Runs, s.KvCache, asJson, s.Profile, ct);
            }

            long weightBytes = MinnowEngine.DecodeWeightBytes(loaded.Model);
            string dtypeText = loaded.Facts.DType;
            string? onnxFolder = null;
            if (withOrt)
            {
                // The very model Minnow runs, exported to ONNX with its quantized weights as they are (MatMulNBits).
                onnxFolder = Path.Combine(tempFolder, "onnx");
                err.WriteLine($"exporting {benchFile} to a temporary ONNX model ...");
                OnnxBench.Export(loaded, onnxFolder, ct);
            }

            var minnowRuns = new List<Measurement>();
            var llamaRuns = new List<Measurement>();
            var ortRuns = new List<Measurement>();
            for (int run = 0; run < s.Runs; run++)
            {
                ct.ThrowIfCancellationRequested();
                minnowRuns.Add(RunChild(MinnowEngineName, benchFile, idsPath, s, ct));
                err.WriteLine($"run {run + 1}/{s.Runs} minnow: {Describe(minnowRuns[^1])}");
                if (withLlamaCpp)
                {
                    llamaRuns.Add(RunChild(LlamaCppEngineName, benchFile, idsPath, s, ct));
                    err.WriteLine($"run {run + 1}/{s.Runs} llama.cpp: {Describe(llamaRuns[^1])}");
                }

                if (onnxFolder is not null)
                {
                    ortRuns.Add(RunChild(OnnxRuntimeEngineName, onnxFolder, idsPath, s, ct));
                    err.WriteLine($"run {run + 1}/{s.Runs} onnxruntime: {Describe(ortRuns[^1])}");
                }
            }

            var minnow = Median(MinnowEngineName, minnowRuns);
            var llama = withLlamaCpp ? Median(LlamaCppEngineName, llamaRuns) : null;
            var ort = onnxFolder is not null ? Median(OnnxRuntimeEngineName, ortRuns) : null;
            LogitAgreement? agreement = null;
            string? agreementSource = null;
            if (withLlamaCpp && checkTokens > 0)
            {
                (agreement, agreementSource) = Agreement(loaded, benchFile, textFile, checkTokens, special, s, err, ct);
            }

            LogitAgreement? ortAgreement = null;
            string? ortAgreementSource = null;
            if (onnxFolder is not null && checkTokens > 0)
            {
                (ortAgreement, ortAgreementSource) = OnnxBench.Agreement(loaded, onnxFolder, textFile, checkTokens, special, s.Seed, s.Threads, err, ct);
            }

            double bandwidth(Measurement m) => weightBytes * m.DecodeTokS / 1e9;
            var output = Out(r);
            if (asJson)
            {
                WriteJson(output, w =>
                {
                    w.WriteString("model", exportedFrom ?? benchFile);
                    w.WriteString("file", benchFile);
                    w.WriteString("dtype", dtypeText);
                    w.WriteNumber("threads", s.Threads);
                    w.WriteString("kv_cache", s.KvCache == DType.F16 ? "f16" : "f32");
                    w.WriteNumber("prompt_tokens", s.Prompt);
                    w.WriteNumber("gen_tokens", s.Gen);
                    w.WriteNumber("runs", s.Runs);
                    w.WriteNumber("decode_weight_bytes", weightBytes);
                    WriteMeasurement(w, minnow, bandwidth(minnow));
                    w.WriteStartArray("minnow_runs");
                    foreach (var m in minnowRuns)
                    {
                        w.WriteStartObject();
                        WriteMeasurement(w, m, bandwidth(m));
                        w.WriteEndObject();
                    }

                    w.WriteEndArray();
                    if (llama is not null)
                    {
                        w.WriteStartObject("llama_cpp");
                        WriteMeasurement(w, llama, bandwidth(llama));
                        w.WriteStartArray("runs");
                        foreach (var m in llamaRuns)
                        {
                            w.WriteStartObject();
                            WriteMeasurement(w, m, bandwidth(m));
                            w.WriteEndObject();
                        }

                        w.WriteEndArray();
                        w.WriteEndObject();
                        w.Number("ratio_decode", minnow.DecodeTokS / llama.DecodeTokS);
                        w.Number("ratio_prefill", minnow.PrefillTokS / llama.PrefillTokS);
                        w.Number("ratio_ttft", minnow.TtftMs / llama.TtftMs);
                        w.Number("ratio_peak_rss", minnow.PeakRssMb / llama.PeakRssMb);
                    }

                    if (agreement is not null)
                    {
                        w.Number("argmax_agreement", agreement.ArgmaxAgreement);
                        w.Number("ppl_minnow", agreement.PerplexityA);
                        w.Number("ppl_llama_cpp", agreement.PerplexityB);
                        w.Number("ppl_relative_difference", agreement.PerplexityRelativeDifference);
                        w.Number("max_abs_logit_difference", agreement.MaxAbsDifference);
                        w.Number("argmax_agreement_clear", agreement.ClearArgmaxAgreement);
                        w.WriteNumber("clear_positions", agreement.ClearPositions);
                        w.WriteNumber("agreement_tokens", agreement.Positions);
                        w.WriteString("agreement_source", agreementSource);
                        w.WriteBoolean("agreement_ok", AgreementOk(agreement));
                    }

                    if (ort is not null)
                    {
                        w.WriteStartObject("onnxruntime");
                        WriteMeasurement(w, ort, bandwidth(ort));
                        w.WriteStartArray("runs");
                        foreach (var m in ortRuns)
                        {
                            w.WriteStartObject();
                            WriteMeasurement(w, m, bandwidth(m));
                            w.WriteEndObject();
                        }

                        w.WriteEndArray();
                        w.Number("ratio_decode", minnow.DecodeTokS / ort.DecodeTokS);
                        w.Number("ratio_prefill", minnow.PrefillTokS / ort.PrefillTokS);
                        w.Number("ratio_ttft", minnow.TtftMs / ort.TtftMs);
                        w.Number("ratio_peak_rss", minnow.PeakRssMb / ort.PeakRssMb);
                        if (ortAgreement is not null)
                        {
                            w.Number("argmax_agreement", ortAgreement.ArgmaxAgreement);
                            w.Number("ppl_minnow", ortAgreement.PerplexityA);
                            w.Number("ppl_onnxruntime", ortAgreement.PerplexityB);
                            w.Number("ppl_relative_difference", ortAgreement.PerplexityRelativeDifference);
                            w.Number("max_abs_logit_difference", ortAgreement.MaxAbsDifference);
                            w.Number("argmax_agreement_clear", ortAgreement.ClearArgmaxAgreement);
                            w.WriteNumber("clear_positions", ortAgreement.ClearPositions);
                            w.WriteNumber("agreement_tokens", ortAgreement.Positions);
                            w.WriteString("agreement_source", ortAgreementSource);
                            w.WriteBoolean("agreement_ok", AgreementOk(ortAgreement));
                        }

                        w.WriteEndObject();
                    }
                });
            }
            else
            {
                output.WriteLine($"{exportedFrom ?? benchFile}{(exportedFrom is null ? "" : $" (as {benchFile})")}");
                output.WriteLine($"{dtypeText}; minnow: {MinnowConditions(s).Describe()}; each run in its own process, medians of {s.Runs} runs");
                output.WriteLine($"{"engine",-10} {"prefill tok/s",14} {"decode tok/s",13} {"TTFT ms",9} {"peak RSS MiB",13} {"decode GB/s",12}");
                void Row(Measurement m) => output.WriteLine(
                    $"{m.Engine,-10} {F(m.PrefillTokS, "0.0"),14} {F(m.DecodeTokS, "0.00"),13} {F(m.TtftMs, "0"),9} {F(m.PeakRssMb, "0"),13} {F(bandwidth(m), "0.00"),12}");
                Row(minnow);
                if (llama is not null)
                {
                    Row(llama);
                    output.WriteLine($"minnow / llama.cpp: decode {F(minnow.DecodeTokS / llama.DecodeTokS, "0.00")}×, prefill {F(minnow.PrefillTokS / llama.PrefillTokS, "0.00")}×, " +
                        $"TTFT {F(minnow.TtftMs / llama.TtftMs, "0.00")}×, peak RSS {F(minnow.PeakRssMb / llama.PeakRssMb, "0.00")}×");
                }

                if (ort is not null)
                {
                    Row(ort);
                    output.WriteLine($"minnow / onnxruntime: decode {F(minnow.DecodeTokS / ort.DecodeTokS, "0.00")}×, prefill {F(minnow.PrefillTokS / ort.PrefillTokS, "0.00")}×, " +
                        $"TTFT {F(minnow.TtftMs / ort.TtftMs, "0.00")}×, peak RSS {F(minnow.PeakRssMb / ort.PeakRssMb, "0.00")}×");
                }

                output.WriteLine($"decode reads {Bytes(weightBytes)} of weights per token");
                if (ortAgreement is not null)
                {
                    output.WriteLine($"onnxruntime agreement on {ortAgreement.Positions} tokens ({ortAgreementSource}): argmax {F(ortAgreement.ArgmaxAgreement * 100, "0.0")}%, " +
                        $"where minnow's top two are > 0.1 apart {F(ortAgreement.ClearArgmaxAgreement * 100, "0.0")}% of {ortAgreement.ClearPositions}; perplexity minnow " +
                        $"{F(ortAgreement.PerplexityA, "0.000")} vs onnxruntime {F(ortAgreement.PerplexityB, "0.000")} ({F(ortAgreement.PerplexityRelativeDifference * 100, "0.000")}% apart) — " +
                        (AgreementOk(ortAgreement) ? "ok" : "NOT within ≥ 99% argmax and ≤ 1% perplexity"));
                }

                if (agreement is not null)
                {
                    output.WriteLine($"agreement on {agreement.Positions} tokens ({agreementSource}): argmax {F(agreement.ArgmaxAgreement * 100, "0.0")}% of positions, " +
                        $"perplexity minnow {F(agreement.PerplexityA, "0.000")} vs llama.cpp {F(agreement.PerplexityB, "0.000")} " +
                        $"({F(agreement.PerplexityRelativeDifference * 100, "0.000")}% apart), largest logit difference {F(agreement.MaxAbsDifference, "0.0000")} — " +
                        (AgreementOk(agreement) ? "ok (≥ 99% argmax, ≤ 1% perplexity)" : "NOT within ≥ 99% argmax and ≤ 1% perplexity"));
                    output.WriteLine($"argmax where minnow's top two logits are > 0.1 apart: {F(agreement.ClearArgmaxAgreement * 100, "0.0")}% of {agreement.ClearPositions} positions " +
                        "(random weights give nearly flat logits, so near-ties flip with any rounding difference)");
                }
            }

            return 0;
        }
        finally
        {
            if (tempFolder is not null)
            {
                try
                {
                    Directory.Delete(tempFolder, recursive: true);
                }
                catch (IOException)
                {
                }
            }
        }
    }

    /// <summary>Whether the model comes with a tokenizer (without loading it).</summary>
    private static bool HasTokenizer(string modelPath, ModelFormat format) => format switch
    {
        ModelFormat.HuggingFace => File.Exists(Path.Combine(Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(modelPath)!, "tokenizer.json")),
        ModelFormat.Gguf => Minnow.Tokenizers.TokenizerLoader.HasVocabulary(GgufFile.ReadMetadata(modelPath)),
        _ => File.Exists(Path.Combine(Path.GetDirectoryName(modelPath)!, "tokenizer.bin")),
    };

    private static bool AgreementOk(LogitAgreement a) => a.ArgmaxAgreement >= 0.99 && a.PerplexityRelativeDifference <= 0.01;

    private static (LogitAgreement, string) Agreement(LoadedModel loaded, string gguf, string? textFile, int tokens, IReadOnlySet<int> special,
        Settings s, TextWriter err, CancellationToken ct)
    {
#if MINNOW_LLAMACPP
        int[] ids;
        string source;
        int length = Math.Min(tokens, loaded.Config.MaxPositions);
        if (textFile is not null)
        {
            var tokenizer = loaded.Tokenizer
                ?? throw new MinnowException($"{loaded.Path}: the model has no tokenizer, so --agreement-text cannot be tokenized; leave it out to check on a sequence sampled from the model.");
            var all = tokenizer.Encode(File.ReadAllText(textFile), addSpecial: true, parseSpecial: false);
            ids = all.Take(length).ToArray();
            if (ids.Length < 2)
            {
                throw new MinnowException($"{textFile}: fewer than 2 tokens to check agreement on.");
            }

            source = $"the first {ids.Length} tokens of {Path.GetFileName(textFile)}";
        }
        else
        {
            // Sampled with llama.cpp, the faster engine today; the check then scores both engines on it.
            err.WriteLine($"sampling {length} tokens from the model for the agreement check ...");
            int first = loaded.Config.BosTokenId ?? BenchmarkInputs.PseudoRandomIds(1, loaded.Config.VocabSize, special, s.Seed)[0];
            using var sampler = LlamaCppModel.Load(gguf, new LlamaCppOptions { Threads = s.Threads, ContextSize = length, BatchSize = 1 });
            sampler.Reset();
            int position = 0;
            ids = BenchmarkInputs.Sample(length, first, s.Seed, special, token =>
            {
                ct.ThrowIfCancellationRequested();
                return sampler.Next(token, position++);
            });
            source = "a sequence sampled from the model";
        }

        err.WriteLine($"checking agreement on {ids.Length} tokens ...");
        float[] minnow = MinnowEngine.AllLogits(loaded.Model, ids, cancellation: ct);
        float[] llama;
        using (var peer = LlamaCppModel.Load(gguf, new LlamaCppOptions { Threads = s.Threads, ContextSize = ids.Length }))
        {
            if (peer.VocabSize != loaded.Config.VocabSize)
            {
                throw new MinnowException($"{gguf}: llama.cpp sees {peer.VocabSize} tokens, Minnow {loaded.Config.VocabSize}.");
            }

            llama = peer.EvaluateAllLogits(ids);
        }

        return (LogitAgreement.Compare(minnow, llama, loaded.Config.VocabSize, ids), source);
#else
        throw LlamaCppSupport.Unavailable("the agreement check with llama.cpp");
#endif
    }

    private static Measurement Median(string engine, List<Measurement> runs) => new(
        engine,
        Statistics.Median(runs.Select(m => m.PrefillTokS)),
        Statistics.Median(runs.Select(m => m.DecodeTokS)),
        Statistics.Median(runs.Select(m => m.TtftMs)),
        Statistics.Median(runs.Select(m => m.PeakRssMb)),
        Statistics.Median(runs.Select(m => m.LoadMs)));

    private static string Describe(Measurement m) =>
        $"prefill {F(m.PrefillTokS, "0.0")} tok/s, decode {F(m.DecodeTokS, "0.00")} tok/s, TTFT {F(m.TtftMs, "0")} ms, peak RSS {F(m.PeakRssMb, "0")} MiB";

    private static void WriteMeasurement(Utf8JsonWriter w, Measurement m, double bandwidthGbS)
    {
        w.Number("prefill_tok_s", m.PrefillTokS);
        w.Number("decode_tok_s", m.DecodeTokS);
        w.Number("ttft_ms", m.TtftMs);
        w.Number("peak_rss_mb", m.PeakRssMb);
        w.Number("load_ms", m.LoadMs);
        w.Number("decode_weight_gb_s", bandwidthGbS);
    }

    // ---- the child process ----

    private static int SingleRun(ParseResult r, string? engine, string modelPath, string? idsFile, Settings s, CancellationToken ct)
    {
        if (idsFile is null || !File.Exists(idsFile))
        {
            throw new MinnowException("--single-run needs --ids-file FILE.");
        }

        int[] ids = ParseIds(File.ReadAllText(idsFile), idsFile);
        if (ids.Length < s.Context)
        {
            throw new MinnowException($"{idsFile}: {ids.Length} ids, fewer than --prompt + --gen = {s.Context}.");
        }

        var prompt = ids.AsSpan(0, s.Prompt);
        var decode = ids.AsSpan(s.Prompt, s.Gen);
        var warmPrompt = prompt[..Math.Min(prompt.Length, 32)];
        var warmDecode = decode[..Math.Min(decode.Length, 8)];
        var watch = Stopwatch.StartNew();
        EngineRun run;
        double loadMs;
        switch (engine?.ToLowerInvariant())
        {
            case MinnowEngineName:
                {
                    using var pool = new WorkerPool(s.Threads);
                    using var model = ModelLoader.LoadModel(modelPath, pool);
                    loadMs = watch.Elapsed.TotalMilliseconds;

                    // Through the engine, as generate and check measure: the prompt in one step, then --gen decode steps.
                    var figures = EngineSpeed.Measure(model, MinnowConditions(s), ids, ct);
                    run = new EngineRun
                    {
                        PromptTokens = s.Prompt,
                        DecodedTokens = figures.Conditions.GeneratedTokens - 1,
                        PrefillSeconds = s.Prompt / figures.PrefillTokensPerSecond,
                        DecodeSeconds = (figures.Conditions.GeneratedTokens - 1) * figures.DecodeMsPerStep / 1000,
                        TimeToFirstTokenMs = figures.TimeToFirstTokenMs,
                    };
                    break;
                }

            case OnnxRuntimeEngineName:
                {
                    using var decoder = Minnow.OnnxRuntime.OrtDecoder.Open(modelPath, s.Threads);
                    loadMs = watch.Elapsed.TotalMilliseconds;
                    Minnow.OnnxRuntime.OrtBenchmark.Run(decoder, warmPrompt, warmDecode, ct);
                    Minnow.OnnxRuntime.OrtBenchmark.Run(decoder, warmPrompt, warmDecode, ct);
                    run = Minnow.OnnxRuntime.OrtBenchmark.Run(decoder, prompt, decode, ct);
                    break;
                }

#if MINNOW_LLAMACPP
            case LlamaCppEngineName:
                {
                    using var model = LlamaCppModel.Load(modelPath, new LlamaCppOptions { Threads = s.Threads, ContextSize = s.Context, BatchSize = s.Prompt });
                    loadMs = watch.Elapsed.TotalMilliseconds;
                    model.Run(warmPrompt, warmDecode);
                    model.Run(warmPrompt, warmDecode);
                    var l = model.Run(prompt, decode);
                    run = new EngineRun
                    {
                        PromptTokens = l.PromptTokens,
                        DecodedTokens = l.DecodedTokens,
                        PrefillSeconds = l.PrefillSeconds,
                        DecodeSeconds = l.DecodeSeconds,
                        TimeToFirstTokenMs = l.TimeToFirstTokenMs,
                    };
                    break;
                }

#else
            case LlamaCppEngineName:
                throw LlamaCppSupport.Unavailable("--engine llama.cpp");
#endif
            default:
                throw new MinnowException($"--engine must be {MinnowEngineName}, {LlamaCppEngineName} or {OnnxRuntimeEngineName} (got '{engine}').");
        }

        double peakMb = ProcessMemory.PeakResidentBytes() / (1024.0 * 1024.0);
        WriteJson(Out(r), w =>
        {
            w.WriteString("engine", engine!.ToLowerInvariant());
            w.Number("prefill_tok_s", run.PrefillTokensPerSecond);
            w.Number("decode_tok_s", run.DecodeTokensPerSecond);
            w.Number("ttft_ms", run.TimeToFirstTokenMs);
            w.Number("peak_rss_mb", peakMb);
            w.Number("load_ms", loadMs);
            w.WriteNumber("prompt_tokens", run.PromptTokens);
            w.WriteNumber("gen_tokens", run.DecodedTokens);
        });
        return 0;
    }

    /// <summary>
    /// Minnow's measurement in a child: the prompt read in one step (as llama.cpp is given it), then --gen tokens generated
    /// (the first from the prompt's step, the rest decode steps), after two short warm-up sequences.
    /// </summary>
    private static MeasureConditions MinnowConditions(Settings s) => new()
    {
        PromptTokens = s.Prompt,
        GeneratedTokens = Math.Max(2, s.Gen),
        Threads = s.Threads,
        KvType = s.KvCache,
        StepTokens = s.Prompt,
        WarmUpRuns = 2,
        Runs = 1,
    };

    private static Measurement RunChild(string engine, string model, string idsPath, Settings s, CancellationToken ct)
    {
        string output = RunSelf(
        [
            "bench", model, "--engine", engine, "--single-run", "--ids-file", idsPath,
            "--threads", s.Threads.ToString(CultureInfo.InvariantCulture),
            "--prompt", s.Prompt.ToString(CultureInfo.InvariantCulture),
            "--gen", s.Gen.ToString(CultureInfo.InvariantCulture),
            "--kv-cache", s.KvCache == DType.F16 ? "f16" : "f32",
        ], engine, ct);
        try
        {
            using var doc = JsonDocument.Parse(output);
            var e = doc.RootElement;
            double Num(string key) => e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : double.NaN;
            return new Measurement(engine, Num("prefill_tok_s"), Num("decode_tok_s"), Num("ttft_ms"), Num("peak_rss_mb"), Num("load_ms"));
        }
        catch (JsonException)
        {
            throw new MinnowException($"the {engine} run printed no JSON: {output.Trim()}");
        }
    }

    /// <summary>Runs this CLI again in a child process with <paramref name="arguments"/>; returns what it printed.</summary>
    internal static string RunSelf(IEnumerable<string> arguments, string engine, CancellationToken ct)
    {
        var start = SelfStartInfo();
        foreach (string arg in arguments)
        {
            start.ArgumentList.Add(arg);
        }

        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        start.UseShellExecute = false;
        using var process = Process.Start(start) ?? throw new MinnowException($"could not start {start.FileName}.");
        var stdout = process.StandardOutput.ReadToEndAsync(ct);
        var stderr = process.StandardError.ReadToEndAsync(ct);
        try
        {
            process.WaitForExitAsync(ct).GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        string output = stdout.GetAwaiter().GetResult();
        string errors = stderr.GetAwaiter().GetResult();
        if (process.ExitCode != 0)
        {
            string why = errors.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault()?.Trim() ?? $"exit code {process.ExitCode}";
            throw new MinnowException($"the {engine} run failed: {why}");
        }

        return output;
    }

    /// <summary>How to start this CLI again: its apphost beside Minnow.Cli.dll, else dotnet + the dll; a native build, itself.</summary>
    private static ProcessStartInfo SelfStartInfo()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, typeof(BenchCommand).Assembly.GetName().Name + ".dll");
        if (!File.Exists(dll) && Environment.ProcessPath is { } self)
        {
            return new ProcessStartInfo(self);
        }

        string apphost = Path.Combine(Path.GetDirectoryName(dll)!, Path.GetFileNameWithoutExtension(dll) + (OperatingSystem.IsWindows() ? ".exe" : ""));
        if (File.Exists(apphost))
        {
            return new ProcessStartInfo(apphost);
        }

        string host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h && File.Exists(h) ? h
            : Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p
            : "dotnet";
        var info = new ProcessStartInfo(host);
        info.ArgumentList.Add(dll);
        return info;
    }
}
