using System.Diagnostics;
using Minnow.Export.Onnx;
using Minnow.Loading;
using Spectre.Console;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow export MODEL --format onnx -o DIR [--type auto|f32|f16|int8|int4] [--group 32|64|128] [--accuracy-level 0|4]</c>:
/// a folder with model.onnx (model.onnx.data beside it when the weights pass 1 GB), genai_config.json and the tokenizer
/// files, which ONNX Runtime, onnxruntime-genai and <c>minnow perplexity|generate</c> open.
/// </summary>
internal static class OnnxExport
{
    public static OnnxWeightType ParseType(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        null or "" or "auto" => OnnxWeightType.Auto,
        "f32" => OnnxWeightType.F32,
        "f16" => OnnxWeightType.F16,
        "int8" or "q8_0" or "q8" => OnnxWeightType.Int8,
        "int4" or "q4" => OnnxWeightType.Int4,
        _ => throw new MinnowException($"--type for ONNX must be auto, f32, f16, int8 or int4 (got '{text}')."),
    };

    public sealed record Outcome(OnnxExportResult Result, IReadOnlyList<string> TokenizerFiles, long Parameters, string Architecture);

    public static Outcome Export(string source, string folder, OnnxExportOptions options, bool progressBar, CancellationToken ct)
    {
        if (File.Exists(folder))
        {
            throw new MinnowException($"{folder}: is a file; --out for ONNX is a folder (it will hold model.onnx, genai_config.json and the tokenizer).");
        }

        using var model = ModelLoader.LoadModel(source);
        OnnxExportResult result = null!;
        if (!progressBar)
        {
            result = OnnxExporter.Export(model, folder, options, null, ct);
        }
        else
        {
            AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }).Progress()
                .AutoClear(true)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(progress =>
                {
                    var task = progress.AddTask("export onnx");
                    result = OnnxExporter.Export(model, folder, options, new InlineProgress<(int Done, int Total)>(p =>
                    {
                        task.MaxValue = p.Total;
                        task.Value = p.Done;
                    }), ct);
                });
        }

        string? sourceFolder = Directory.Exists(source) ? source : Path.GetDirectoryName(source);
        var tokenizerFiles = GenAiFolder.Write(model.Config, folder, ModelLoader.DetectFormat(source) == ModelFormat.HuggingFace ? sourceFolder : null);
        return new Outcome(result, tokenizerFiles, model.Weights.ParameterCount, model.Config.ModelType);
    }

    public static void Report(TextWriter o, Outcome outcome, string folder, OnnxExportOptions options, Stopwatch watch)
    {
        var r = outcome.Result;
        o.WriteLine($"wrote {folder}: ONNX {outcome.Architecture} ({options.Type.ToString().ToLowerInvariant()}), {CommandSupport.Short(outcome.Parameters)} parameters, " +
            $"{r.MatMulNBitsLayers} MatMulNBits + {r.FloatLayers} float layers, {CommandSupport.Bytes(r.Bytes)}" +
            (r.ExternalDataFile is null ? "" : " (weights in model.onnx.data)") +
            $", tokenizer: {(outcome.TokenizerFiles.Contains("tokenizer.json") ? "tokenizer.json" : "none")} ({CommandSupport.F(watch.Elapsed.TotalSeconds, "0.0")} s)");
    }
}
