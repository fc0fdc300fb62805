using System.CommandLine;
using System.Diagnostics;
using Minnow.Export;
using Minnow.Loading;
using Minnow.Tensors;
using Spectre.Console;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow export MODEL --format gguf --out FILE.gguf [--type f32|f16|q8_0|q4_0|sparse-f16|sparse-q8|sparse-i8]</c>: a GGUF
/// file llama.cpp runs, with the model's vocabulary as <c>tokenizer.ggml.*</c> metadata (or <c>"none"</c> when it
/// has no tokenizer). The sparse types are Minnow's own, for pruned models (llama.cpp cannot read them): matrices
/// with at least 30% zeros keep only their non-zero weights (a bitmap and the values packed). The file appears only
/// once complete.
/// </summary>
internal static class ExportCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var format = new Option<string>("--format") { Description = "Output format: gguf, or onnx (a folder for ONNX Runtime and onnxruntime-genai).", DefaultValueFactory = _ => "gguf" };
        var output = new Option<string>("--out", "-o") { Description = "The file to write, e.g. model.gguf (for onnx: the folder).", Required = true };
        var type = new Option<string?>("--type")
        {
            Description = "Weight type (GGUF, default f16): f32, f16, q8_0 or q4_0 (vectors stay F32; rows whose length is not a multiple of 32 fall back to F16); " +
                "or sparse-f16 / sparse-i8 / sparse-q8 for a pruned model: matrices with at least 30% zeros store only the kept weights " +
                "(a bitmap plus F16, or int8 with one scale per row (i8) or per 64 columns (q8)), the rest as f16 / q8_0. Sparse files run in Minnow only. " +
                "ONNX (default auto: quantized weights as they are, the rest F32): f32, f16, int8 or int4 (float weights rounded to nearest; quantized ones kept).",
        };
        var group = new Option<int>("--group") { Description = "ONNX --type int4: values per INT4 group (32, 64 or 128).", DefaultValueFactory = _ => 32 };
        var accuracy = new Option<int>("--accuracy-level")
        {
            Description = "ONNX: MatMulNBits accuracy_level, 0 (float32 activations: exactly Minnow's weights) or 4 (int8 activations: faster).",
            DefaultValueFactory = _ => 0,
        };
        var json = JsonOption();
        var command = new Command("export", "Export a model to GGUF (llama.cpp's format), with its tokenizer, as f32, f16, q8_0, q4_0, or Minnow's sparse-f16 / sparse-i8 / sparse-q8; " +
            "or to ONNX (--format onnx -o DIR) for ONNX Runtime and onnxruntime-genai.")
        {
            model, format, output, type, group, accuracy, json,
        };

        command.SetSyncAction((r, ct) =>
        {
            string fmt = r.GetValue(format)!.Trim().ToLowerInvariant();
            if (fmt == "onnx")
            {
                return ExportOnnx(r, r.GetValue(model), r.GetValue(output)!, r.GetValue(type), r.GetValue(group), r.GetValue(accuracy), r.GetValue(json), ct);
            }

            if (fmt != "gguf")
            {
                throw new MinnowException($"--format must be gguf or onnx (got '{r.GetValue(format)}').");
            }

            var dtype = ParseType(r.GetValue(type) ?? "f16");
            string target = Path.GetFullPath(r.GetValue(output)!);
            if (Directory.Exists(target))
            {
                throw new MinnowException($"{target}: is a folder; --out must be a file path such as model.gguf.");
            }

            string source = LoadedModel.ResolveModelPath(Path.GetFullPath(DefaultModel.Resolve(r.GetValue(model))));
            if (Path.GetFullPath(source) == target)
            {
                throw new MinnowException($"{target}: --out is the model itself; write to another file.");
            }

            var watch = Stopwatch.StartNew();
            var (tokenizer, parameters) = Export(source, target, dtype, ErrIsTerminal(r) && !r.GetValue(json), ct);
            long size = new FileInfo(target).Length;
            var o = Out(r);
            if (r.GetValue(json))
            {
                WriteJson(o, w =>
                {
                    w.WriteString("model", source);
                    w.WriteString("path", target);
                    w.WriteString("format", "gguf");
                    w.WriteString("type", dtype.Name());
                    w.WriteNumber("parameters", parameters);
                    w.WriteNumber("size_bytes", size);
                    w.WriteString("tokenizer", tokenizer.Description);
                    w.Number("seconds", watch.Elapsed.TotalSeconds);
                });
            }
            else
            {
                o.WriteLine($"wrote {target}: GGUF {dtype.Name()}, {Short(parameters)} parameters, {Bytes(size)}, tokenizer: {tokenizer.Description} " +
                    $"({F(watch.Elapsed.TotalSeconds, "0.0")} s)");
            }

            return 0;
        });
        return command;
    }

    private static int ExportOnnx(ParseResult r, string? model, string output, string? type, int group, int accuracy, bool json, CancellationToken ct)
    {
        if (accuracy is not (0 or 1 or 2 or 3 or 4))
        {
            throw new MinnowException($"--accuracy-level must be 0, 1, 2, 3 or 4 (got {accuracy}).");
        }

        var options = new Export.Onnx.OnnxExportOptions { Type = OnnxExport.ParseType(type), Group = group, AccuracyLevel = accuracy };
        string target = Path.GetFullPath(output);
        string source = LoadedModel.ResolveModelPath(Path.GetFullPath(DefaultModel.Resolve(model)));
        if (source == target)
        {
            throw new MinnowException($"{target}: --out is the model itself; write to another folder.");
        }

        var watch = Stopwatch.StartNew();
        var outcome = OnnxExport.Export(source, target, options, ErrIsTerminal(r) && !json, ct);
        var o = Out(r);
        if (json)
        {
            WriteJson(o, w =>
            {
                w.WriteString("model", source);
                w.WriteString("path", target);
                w.WriteString("format", "onnx");
                w.WriteString("type", options.Type.ToString().ToLowerInvariant());
                w.WriteNumber("parameters", outcome.Parameters);
                w.WriteNumber("size_bytes", outcome.Result.Bytes);
                w.WriteNumber("matmulnbits_layers", outcome.Result.MatMulNBitsLayers);
                w.WriteNumber("float_layers", outcome.Result.FloatLayers);
                w.WriteBoolean("external_data", outcome.Result.ExternalDataFile is not null);
                w.WriteString("tokenizer", outcome.TokenizerFiles.Contains("tokenizer.json") ? "tokenizer.json" : "none");
                w.Number("seconds", watch.Elapsed.TotalSeconds);
            });
        }
        else
        {
            OnnxExport.Report(o, outcome, target, options, watch);
        }

        return 0;
    }

    /// <summary>Exports the model at <paramref name="source"/> to a GGUF file (with its vocabulary); returns what tokenizer went in.</summary>
    public static (GgufTokenizerMetadata.Source Tokenizer, long Parameters) Export(string source, string target, DType dtype, bool progressBar,
        CancellationToken ct)
    {
        var format = ModelLoader.DetectFormat(source);
        using var model = ModelLoader.LoadModel(source);
        var tokenizer = GgufTokenizerMetadata.For(source, format, model.Config.VocabSize);
        if (!progressBar)
        {
            GgufExporter.Export(model, target, dtype, tokenizer.Write, null, ct);
        }
        else
        {
            AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }).Progress()
                .AutoClear(true)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(progress =>
                {
                    var task = progress.AddTask($"export {dtype.Name()}");
                    GgufExporter.Export(model, target, dtype, tokenizer.Write, new InlineProgress<(int Done, int Total)>(p =>
                    {
                        task.MaxValue = p.Total;
                        task.Value = p.Done;
                    }), ct);
                });
        }

        return (tokenizer, model.Weights.ParameterCount);
    }

    public static DType ParseType(string text) => text.Trim().ToLowerInvariant() switch
    {
        "f32" => DType.F32,
        "f16" => DType.F16,
        "q8_0" or "q8" => DType.Q8_0,
        "q4_0" or "q4" => DType.Q4_0,
        "sparse-f16" => DType.SparseF16,
        "sparse-q8" => DType.SparseQ8,
        "sparse-i8" => DType.SparseI8,
        _ => throw new MinnowException($"--type must be f32, f16, q8_0, q4_0, sparse-f16, sparse-i8 or sparse-q8 (got '{text}')."),
    };
}
