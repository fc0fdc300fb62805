using System.CommandLine;
using Minnow.Models;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow merge [MODEL] --adapter DIR --out OUT</c>: merges a PEFT LoRA adapter into the base weights and
/// writes a float32 Hugging Face model folder.
/// </summary>
internal static class MergeCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var adapter = new Option<DirectoryInfo>("--adapter") { Description = "A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors).", Required = true };
        var output = new Option<DirectoryInfo>("--out") { Description = "Output folder (Hugging Face layout, F32).", Required = true };
        var json = JsonOption();
        var command = new Command("merge", "Merge a LoRA adapter into a model's weights, writing a Hugging Face model folder (F32).")
        {
            model, adapter, output, json,
        };

        command.SetSyncAction((r, ct) =>
        {
            var result = LoraMerge.Run(DefaultModel.Resolve(r.GetValue(model)), r.GetValue(adapter)!.FullName, r.GetValue(output)!.FullName);
            if (r.GetValue(json))
            {
                WriteJson(Out(r), w =>
                {
                    w.WriteString("output", result.OutputFolder);
                    w.WriteNumber("merged_layers", result.MergedLayers);
                    w.WriteNumber("parameters", result.Parameters);
                    w.WriteNumber("bytes", result.Bytes);
                    w.WriteBoolean("tokenizer", result.TokenizerCopied);
                });
            }
            else
            {
                Out(r).WriteLine($"merged {result.MergedLayers} adapted layers; wrote {result.OutputFolder} ({Count(result.Parameters)} parameters, {Bytes(result.Bytes)})" +
                    (result.TokenizerCopied ? "" : "; no tokenizer.json was copied (the base has none in Hugging Face form)"));
            }

            return 0;
        });
        return command;
    }
}
