using System.Text;
using Minnow.Benchmarking;
using Minnow.Cli;
using Minnow.Formats.Llama2c;
using Minnow.Formats.Safetensors;
using Minnow.Optimization;
using Minnow.Tensors;

namespace Minnow.Fuzz;

/// <summary>
/// The seed corpus of every target, made by the project itself: a small synthetic Llama in each storage type,
/// its GGUF exports (with models/default's tokenizer), a llama2.c conversion, a PEFT adapter, tokenizer files and an
/// optimize cache. Nothing from ../shared is copied; scripts/fuzz-seeds.sh may add mutation seeds from it locally.
/// </summary>
public static class Seeds
{
    public static void Write(string output, string root)
    {
        string Dir(string target) => Directory.CreateDirectory(Path.Combine(output, target)).FullName;
        using var fixtures = new FuzzFixtures(root, Path.Combine(output, ".fixtures"));
        string work = Directory.CreateDirectory(Path.Combine(output, ".work")).FullName;
        var shape = FuzzTargets.TinyShape;

        foreach (var dtype in new[] { DType.F32, DType.F16, DType.BF16 })
        {
            string folder = Path.Combine(work, "tiny-" + dtype.Name().ToLowerInvariant());
            SyntheticCheckpoint.Write(shape, folder, seed: 11, dtype);
            File.Copy(Path.Combine(folder, "model.safetensors"), Path.Combine(Dir("safetensors"), $"tiny-{dtype.Name().ToLowerInvariant()}.safetensors"), true);
        }

        // A safetensors file with metadata, empty tensors and odd shapes, from the project's writer.
        var odd = new SafetensorsWriter();
        odd.AddMetadata("format", "pt");
        odd.Add("scalar", [], [1.5f]);
        odd.Add("empty", [0, 4], []);
        odd.Add("vector", [3], [1f, 2f, 3f], DType.F16);
        odd.Add("matrix", [2, 2], [1f, 2f, 3f, 4f], DType.BF16);
        odd.Save(Path.Combine(Dir("safetensors"), "odd.safetensors"));

        // llama2.c: the same weights in run.c's layout, with a 64-piece tokenizer.bin (SentencePiece-style pieces and
        // byte fallbacks); its GGUF exports carry that vocabulary, so the GGUF seeds exercise the tokenizer metadata too.
        string tiny = Path.Combine(work, "tiny-f32");
        string llama2c = Directory.CreateDirectory(Path.Combine(work, "llama2c")).FullName;
        WriteLlama2c(Path.Combine(tiny, "model.safetensors"), Path.Combine(llama2c, "tiny.bin"), shape);
        var pieces = new List<string> { "<unk>", "<s>", "</s>", "<0x0A>", "<0x20>", "<0xC3>", "<0xA9>", "<0xF0>" };
        pieces.AddRange("abcdefghijklmnopqrstuvwxyz".Select(c => c.ToString()));
        pieces.AddRange([" ", " t", " th", " the", " a", "on", "ce", " up", "ti", "me", " fish", "é", "🐟", "in", "er", "an", " s", " w", "ou", "ll", " o", " f", " b", " c", "ing", "ed"]);
        pieces = pieces.Take(shape.VocabSize).ToList();
        Llama2cTokenizerFile.Write(Path.Combine(llama2c, "tokenizer.bin"), pieces, [.. pieces.Select((_, i) => -(float)i)]);
        File.Copy(Path.Combine(llama2c, "tiny.bin"), Path.Combine(Dir("llama2c"), "tiny.bin"), true);
        File.Copy(Path.Combine(llama2c, "tokenizer.bin"), Path.Combine(Dir("llama2c-tokenizer"), "tokenizer.bin"), true);

        foreach (string type in new[] { "f32", "f16", "q8_0", "q4_0", "sparse-f16", "sparse-q8", "sparse-i8" })
        {
            string gguf = Path.Combine(Dir("gguf"), $"tiny-{type}.gguf");
            var stderr = new StringWriter();
            int code = MinnowCli.Run(["export", Path.Combine(llama2c, "tiny.bin"), "--type", type, "--out", gguf], TextWriter.Null, stderr);
            if (code != 0)
            {
                Console.Error.WriteLine($"seed tiny-{type}.gguf not written: {stderr.ToString().Trim()}");
            }
        }

        // Minnow's own group quantizations (q4_1 groups, int3) come from `quantize`.
        string ids = Path.Combine(work, "ids.txt");
        File.WriteAllText(ids, string.Join(' ', Enumerable.Range(0, 400).Select(i => (i * 7 % shape.VocabSize).ToString(System.Globalization.CultureInfo.InvariantCulture))));
        foreach (string scheme in new[] { "int4", "int3" })
        {
            string gguf = Path.Combine(Dir("gguf"), $"tiny-{scheme}.gguf");
            var stderr = new StringWriter();
            int code = MinnowCli.Run(["quantize", tiny, "--scheme", scheme, "--group", "32", "--method", "rtn", "--ids", "--eval", ids, "--out", gguf], TextWriter.Null, stderr);
            if (code != 0)
            {
                Console.Error.WriteLine($"seed tiny-{scheme}.gguf not written: {stderr.ToString().Trim()}");
            }
        }

        File.Copy(Path.Combine(tiny, "config.json"), Path.Combine(Dir("config"), "tiny-config.json"), true);
        File.WriteAllText(Path.Combine(Dir("config"), "tiny-config-scaled.json"), File.ReadAllText(Path.Combine(tiny, "config.json"))
            .Replace("\"model_type\"", "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 32},\n  \"minnow_layer_heads\": [2, 2],\n  \"model_type\"", StringComparison.Ordinal));
        File.Copy(fixtures.TokenizerJson, Path.Combine(Dir("tokenizer-json"), "default-tokenizer.json"), true);
        File.Copy(fixtures.TokenizerConfig, Path.Combine(Dir("tokenizer-config"), "default-tokenizer_config.json"), true);
        File.WriteAllText(Path.Combine(Dir("tokenizer-config"), "chatml-tokenizer_config.json"),
            "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_bos_token\": true, \"model_max_length\": 64, " +
            "\"chat_template\": \"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}\"}");
        File.Copy(fixtures.AdapterConfig, Path.Combine(Dir("peft-config"), "adapter_config.json"), true);
        File.Copy(fixtures.AdapterWeights, Path.Combine(Dir("peft-safetensors"), "adapter_model.safetensors"), true);

        string cachePath = Path.Combine(Dir("optimize-cache"), "cache.json");
        var cache = new CandidateCache(cachePath, FuzzTargets.CacheKey);
        cache.Put(new Measurement { Name = "q4_0", WeightBytes = 12345, Parameters = 678, QuickPerplexity = 12.5, Perplexity = 13.25, DecodeMsPerToken = 3.5, EstimatedRamBytes = 1 << 20 });
        cache.Put(new Measurement { Name = "f16", WeightBytes = 99999, Parameters = 678, QuickPerplexity = 11.5, Error = "too big" });

        Directory.Delete(work, true);
        Console.WriteLine($"seeds written to {output}");
    }

    /// <summary>A llama2.c checkpoint of the same weights (run.c's layout), with its RoPE tables.</summary>
    private static unsafe void WriteLlama2c(string safetensors, string output, ModelShape s)
    {
        using var file = SafetensorsFile.Open(safetensors);
        using var stream = File.Create(output);
        using var w = new BinaryWriter(stream, Encoding.UTF8);
        int headDim = s.HiddenSize / s.Heads;
        foreach (int v in new[] { s.HiddenSize, s.IntermediateSize, s.Layers, s.Heads, s.KvHeads, s.VocabSize, s.MaxPositions })
        {
            w.Write(v);
        }

        void Put(string name)
        {
            foreach (float f in file.Tensors[name].ToFloatArray())
            {
                w.Write(f);
            }
        }

        void PerLayer(string suffix)
        {
            for (int l = 0; l < s.Layers; l++)
            {
                Put($"model.layers.{l}.{suffix}");
            }
        }

        Put("model.embed_tokens.weight");
        foreach (string suffix in new[] { "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight" })
        {
            PerLayer(suffix);
        }

        Put("model.norm.weight");
        for (int table = 0; table < 2; table++)
        {
            for (int p = 0; p < s.MaxPositions; p++)
            {
                for (int i = 0; i < headDim / 2; i++)
                {
                    double angle = p / Math.Pow(s.RopeTheta, 2.0 * i / headDim);
                    w.Write((float)(table == 0 ? Math.Cos(angle) : Math.Sin(angle)));
                }
            }
        }
    }
}
