using System.CommandLine;
using System.Diagnostics;
using Minnow.Benchmarking;
using Minnow.Tensors;
using Spectre.Console;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow synth --like SHAPE --out DIR</c>: a randomly initialised checkpoint with the shape of a real model
/// (config.json + model.safetensors), for benchmarks: speed does not depend on the weights' values. It has no
/// tokenizer, so benchmarks feed it token ids.
/// </summary>
internal static class SynthCommand
{
    public static Command Create()
    {
        var like = new Option<string>("--like")
        {
            Description = $"The real model whose shape to copy: {string.Join(", ", ModelShapes.Names)}.",
            Required = true,
        };
        var output = new Option<string>("--out", "-o") { Description = "The folder to write (created if needed).", Required = true };
        var seed = new Option<ulong>("--seed", "-s") { Description = "Random seed (the same seed writes the same weights).", DefaultValueFactory = _ => 0 };
        var dtype = new Option<string>("--dtype") { Description = "Storage type: f32, f16 or bf16.", DefaultValueFactory = _ => "f32" };
        var json = JsonOption();
        var command = new Command("synth", "Write a randomly initialised checkpoint with the shape of a real model (for benchmarks; no tokenizer).")
        {
            like, output, seed, dtype, json,
        };

        command.SetSyncAction((r, ct) =>
        {
            var shape = ModelShapes.Get(r.GetValue(like)!);
            var type = ParseDType(r.GetValue(dtype)!);
            string folder = Path.GetFullPath(r.GetValue(output)!);
            var watch = Stopwatch.StartNew();
            long bytes;
            if (ErrIsTerminal(r) && !r.GetValue(json))
            {
                bytes = 0;
                AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }).Progress()
                    .AutoClear(true)
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                    .Start(progress =>
                    {
                        var task = progress.AddTask($"synth {shape.Name}");
                        bytes = SyntheticCheckpoint.Write(shape, folder, r.GetValue(seed), type, new InlineProgress<(long Done, long Total)>(p =>
                        {
                            task.MaxValue = p.Total;
                            task.Value = p.Done;
                        }), ct);
                    });
            }
            else
            {
                bytes = SyntheticCheckpoint.Write(shape, folder, r.GetValue(seed), type, null, ct);
            }

            var o = Out(r);
            if (r.GetValue(json))
            {
                WriteJson(o, w =>
                {
                    w.WriteString("path", folder);
                    w.WriteString("like", shape.Name);
                    w.WriteString("model", shape.Model);
                    w.WriteString("model_type", shape.ModelType);
                    w.WriteString("dtype", type.Name());
                    w.WriteNumber("parameters", shape.ParameterCount);
                    w.WriteNumber("size_bytes", bytes);
                    w.WriteNumber("seed", r.GetValue(seed));
                    w.Number("seconds", watch.Elapsed.TotalSeconds);
                });
            }
            else
            {
                o.WriteLine($"wrote {folder}: {shape.Name} shape ({shape.Model}), {Short(shape.ParameterCount)} parameters " +
                    $"({Count(shape.ParameterCount)}), {type.Name()}, {Bytes(bytes)} in {F(watch.Elapsed.TotalSeconds, "0.0")} s; no tokenizer (use token ids).");
            }

            return 0;
        });
        return command;
    }

    private static DType ParseDType(string text) => text.Trim().ToLowerInvariant() switch
    {
        "f32" or "float32" => DType.F32,
        "f16" or "float16" => DType.F16,
        "bf16" or "bfloat16" => DType.BF16,
        _ => throw new MinnowException($"--dtype must be f32, f16 or bf16 (got '{text}')."),
    };
}

/// <summary>Reports on the calling thread (System.Progress would post to the thread pool).</summary>
internal sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
