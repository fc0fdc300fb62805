using System.Text.Json;
using Minnow.Models;

namespace Minnow.Export.Onnx;

/// <summary>
/// Makes an exported folder one that onnxruntime-genai opens as it is: genai_config.json describing the decoder's
/// inputs and outputs (names, head counts, context) and greedy search defaults, plus the Hugging Face tokenizer files
/// found beside the source model.
/// </summary>
public static class GenAiFolder
{
    public const string ConfigFileName = "genai_config.json";

    /// <summary>Tokenizer files copied from a Hugging Face source folder when present.</summary>
    public static readonly IReadOnlyList<string> TokenizerFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"];

    /// <summary>Writes genai_config.json and copies the tokenizer files from <paramref name="sourceFolder"/> (when given); returns the files copied.</summary>
    public static IReadOnlyList<string> Write(ModelConfig config, string folder, string? sourceFolder)
    {
        string target = Path.Combine(folder, ConfigFileName);
        string tmp = target + ".tmp";
        using (var stream = File.Create(tmp))
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartObject("model");
            int eos = config.EosTokenId ?? 0;
            w.WriteNumber("bos_token_id", config.BosTokenId ?? eos);
            w.WriteNumber("eos_token_id", eos);
            w.WriteNumber("pad_token_id", eos);
            w.WriteNumber("context_length", config.MaxPositions);
            w.WriteNumber("vocab_size", config.VocabSize);

            // onnxruntime-genai runs every decoder-only type the same way from these names; GPT-NeoX goes as llama.
            w.WriteString("type", config.ModelType is "qwen2" or "mistral" or "gpt2" ? config.ModelType : "llama");
            w.WriteStartObject("decoder");
            w.WriteStartObject("session_options");
            w.WriteString("log_id", "onnxruntime-genai");
            w.WriteStartArray("provider_options");
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteString("filename", OnnxExporter.ModelFileName);
            w.WriteNumber("head_size", config.HeadDim);
            w.WriteNumber("hidden_size", config.HiddenSize);
            w.WriteNumber("num_attention_heads", config.Heads);
            w.WriteNumber("num_hidden_layers", config.Layers);
            w.WriteNumber("num_key_value_heads", config.KvHeads);
            w.WriteStartObject("inputs");
            w.WriteString("input_ids", "input_ids");
            w.WriteString("attention_mask", "attention_mask");
            w.WriteString("position_ids", "position_ids");
            w.WriteString("past_key_names", "past_key_values.%d.key");
            w.WriteString("past_value_names", "past_key_values.%d.value");
            w.WriteEndObject();
            w.WriteStartObject("outputs");
            w.WriteString("logits", "logits");
            w.WriteString("present_key_names", "present.%d.key");
            w.WriteString("present_value_names", "present.%d.value");
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndObject();

            // Greedy by default, as `minnow generate --temperature 0`; the graph concatenates past and present, so no shared buffer.
            w.WriteStartObject("search");
            w.WriteBoolean("do_sample", false);
            w.WriteBoolean("early_stopping", true);
            w.WriteNumber("max_length", config.MaxPositions);
            w.WriteNumber("min_length", 0);
            w.WriteNumber("num_beams", 1);
            w.WriteNumber("num_return_sequences", 1);
            w.WriteBoolean("past_present_share_buffer", false);
            w.WriteNumber("repetition_penalty", 1.0);
            w.WriteNumber("temperature", 1.0);
            w.WriteNumber("top_k", 1);
            w.WriteNumber("top_p", 1.0);
            w.WriteEndObject();
            w.WriteEndObject();
        }

        File.Move(tmp, target, overwrite: true);
        var copied = new List<string>();
        if (sourceFolder is not null && Directory.Exists(sourceFolder) && Path.GetFullPath(sourceFolder) != Path.GetFullPath(folder))
        {
            foreach (string name in TokenizerFiles)
            {
                string from = Path.Combine(sourceFolder, name);
                if (File.Exists(from))
                {
                    File.Copy(from, Path.Combine(folder, name + ".tmp"), overwrite: true);
                    File.Move(Path.Combine(folder, name + ".tmp"), Path.Combine(folder, name), overwrite: true);
                    copied.Add(name);
                }
            }
        }

        return copied;
    }
}
