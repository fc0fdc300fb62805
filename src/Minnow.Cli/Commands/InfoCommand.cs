using System.CommandLine;
using Minnow.Loading;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary><c>minnow info [MODEL] [--json]</c>: what a model is — architecture, size, dtype, tokenizer, context.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var json = JsonOption();
        var command = new Command("info", "Show a model's architecture, parameter count, dtype, size on disk, tokenizer and context length.")
        {
            model,
            json,
        };
        command.SetSyncAction((r, ct) =>
        {
            using var loaded = LoadedModel.Open(DefaultModel.Resolve(r.GetValue(model)));
            var f = loaded.Facts;
            var output = Out(r);
            if (r.GetValue(json))
            {
                WriteJson(output, w =>
                {
                    w.WriteString("path", f.Path);
                    w.WriteString("format", f.Format.ToString().ToLowerInvariant());
                    w.WriteString("architecture", f.Architecture.ToString());
                    w.WriteString("model_type", f.ModelType);
                    w.WriteNumber("parameters", f.Parameters);
                    w.WriteString("dtype", f.DType);
                    w.WriteNumber("size_bytes", f.WeightFileBytes);
                    w.WriteNumber("context_length", f.ContextLength);
                    w.WriteNumber("layers", f.Layers);
                    w.WriteNumber("hidden_size", f.HiddenSize);
                    w.WriteNumber("heads", f.Heads);
                    w.WriteNumber("kv_heads", f.KvHeads);
                    w.WriteNumber("vocab_size", f.VocabSize);
                    if (f.TokenizerKind is null)
                    {
                        w.WriteNull("tokenizer");
                    }
                    else
                    {
                        w.WriteStartObject("tokenizer");
                        w.WriteString("kind", f.TokenizerKind);
                        w.WriteNumber("vocab_size", f.TokenizerVocabSize ?? 0);
                        w.WriteEndObject();
                    }
                });
                return 0;
            }

            void Row(string name, string value) => output.WriteLine($"{name,-14}{value}");
            Row("model", f.Path);
            Row("format", ModelFacts.FormatName(f.Format));
            Row("architecture", $"{f.Architecture} (model_type {f.ModelType})");
            Row("parameters", $"{Short(f.Parameters)} ({Count(f.Parameters)})");
            Row("dtype", f.DType);
            Row("size", $"{Bytes(f.WeightFileBytes)} ({Count(f.WeightFileBytes)} bytes in {f.WeightFiles.Count} file{(f.WeightFiles.Count == 1 ? "" : "s")})");
            Row("context", $"{Count(f.ContextLength)} tokens");
            Row("layers", f.Layers.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Row("hidden", f.HiddenSize.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Row("heads", $"{f.Heads} query, {f.KvHeads} key/value");
            Row("vocab", Count(f.VocabSize));
            Row("tokenizer", f.TokenizerDescription);
            return 0;
        });
        return command;
    }
}
