using System.Diagnostics;
using System.Text.Json;
using Minnow.Export.Onnx;
using Minnow.Inference;
using Minnow.OnnxRuntime;
using Minnow.Tokenizers;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow perplexity</c> and <c>minnow generate</c> on a folder written by <c>minnow export --format onnx</c>: the
/// model runs in ONNX Runtime, scored and sampled by the same code as Minnow's own models.
/// </summary>
internal static class OnnxModelCommands
{
    /// <summary>Whether MODEL is an exported ONNX folder (model.onnx and genai_config.json, no config.json) or an .onnx file.</summary>
    public static bool IsOnnx(string? model) =>
        model is not null && (
            (File.Exists(model) && model.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)) ||
            (Directory.Exists(model) && File.Exists(Path.Combine(model, OnnxExporter.ModelFileName)) && !File.Exists(Path.Combine(model, "config.json"))));

    private static string Folder(string model) => Directory.Exists(model) ? Path.GetFullPath(model) : Path.GetDirectoryName(Path.GetFullPath(model))!;

    /// <summary>context_length from genai_config.json (int.MaxValue when unknown).</summary>
    public static int ContextLength(string model)
    {
        string config = Path.Combine(Folder(model), GenAiFolder.ConfigFileName);
        if (!File.Exists(config))
        {
            return int.MaxValue;
        }

        using var doc = JsonDocument.Parse(File.ReadAllBytes(config));
        return doc.RootElement.TryGetProperty("model", out var m) && m.TryGetProperty("context_length", out var c) && c.TryGetInt32(out int n) ? n : int.MaxValue;
    }

    public static ITextTokenizer? Tokenizer(string model) => TokenizerLoader.TryLoadFromFolder(Folder(model));

    public static int Perplexity(TextWriter output, TextWriter err, string model, string? textFile, string? idsFile, int requested, int? maxChunks, string? bosText,
        bool json, CancellationToken ct)
    {
        var tokenizer = Tokenizer(model);
        int[] tokens;
        int? bos = null;
        if (textFile is not null)
        {
            if (tokenizer is null)
            {
                throw new MinnowException($"{model}: the exported folder has no tokenizer.json, so {textFile} cannot be tokenized; pass token ids with --ids FILE.");
            }

            tokens = [.. tokenizer.Encode(File.ReadAllText(textFile), addSpecial: true, parseSpecial: false)];
            bos = tokenizer.AddsBos ? tokenizer.BosId : null;
        }
        else
        {
            tokens = ParseIds(File.ReadAllText(idsFile!), idsFile!);
        }

        if (bosText is not null)
        {
            bos = bosText.Equals("none", StringComparison.OrdinalIgnoreCase)
                ? null
                : int.TryParse(bosText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int b)
                    ? b
                    : throw new MinnowException($"--bos must be a token id or 'none' (got '{bosText}').");
        }

        int context = Math.Min(requested, ContextLength(model));
        if (context < requested)
        {
            err.WriteLine($"note: --ctx {requested} capped to the model's context length {context}.");
        }

        using var decoder = OrtDecoder.Open(model);
        var result = OrtPerplexity.Evaluate(decoder, tokens, context, maxChunks, bos, null, ct);
        long peak = PeakMemoryBytes();
        if (json)
        {
            WriteJson(output, w =>
            {
                w.WriteString("model", Path.GetFullPath(model));
                w.WriteString("runtime", "onnxruntime");
                w.WriteString("file", Path.GetFullPath((textFile ?? idsFile)!));
                w.Number("ppl", result.Perplexity);
                w.Number("stderr", result.StandardError);
                w.Number("mean_nll", result.MeanNll);
                w.WriteNumber("tokens", tokens.Length);
                w.WriteNumber("tokens_scored", result.TokensScored);
                w.WriteNumber("ctx", result.Context);
                w.WriteNumber("chunks", result.Chunks);
                w.Number("tokens_per_second", result.TokensPerSecond);
                w.Number("seconds", result.Seconds);
                w.WriteNumber("peak_memory_bytes", peak);
            });
        }
        else
        {
            output.WriteLine($"perplexity {F(result.Perplexity, "0.0000")} ± {F(result.StandardError, "0.0000")} (ONNX Runtime)");
            output.WriteLine(
                $"mean NLL {F(result.MeanNll, "0.000000")} over {Count(result.TokensScored)} scored tokens ({result.Chunks} windows of {result.Context}); " +
                $"{F(result.TokensPerSecond, "0.0")} tok/s, {F(result.Seconds, "0.00")} s, peak memory {Bytes(peak)}");
        }

        return 0;
    }

    public static int Generate(TextWriter output, TextWriter err, string model, string? text, string? ids, int maxTokens, SamplingOptions sampling, bool ignoreEos,
        bool json, CancellationToken ct)
    {
        var tokenizer = Tokenizer(model);
        int[] prompt;
        if (text is not null)
        {
            if (tokenizer is null)
            {
                throw new MinnowException($"{model}: the exported folder has no tokenizer.json; give the prompt as --prompt-ids.");
            }

            prompt = [.. tokenizer.Encode(text, addSpecial: true, parseSpecial: false)];
        }
        else
        {
            prompt = ParseIds(ids!, "--prompt-ids");
        }

        if (maxTokens <= 0)
        {
            throw new MinnowException($"--max-tokens must be positive (got {maxTokens}).");
        }

        int context = ContextLength(model);
        if (prompt.Length >= context)
        {
            throw new MinnowException($"the prompt has {prompt.Length} tokens, not shorter than the context of {context} tokens ({model}).");
        }

        using var decoder = OrtDecoder.Open(model);
        var sampler = new Sampler(sampling, decoder.VocabSize);
        var history = new List<int>(prompt);
        var produced = new List<int>();
        var stopIds = ignoreEos || tokenizer is null ? [] : tokenizer.EosIds;
        var decodeText = tokenizer is null ? null : new TokenStreamDecoder(tokenizer, skipSpecialTokens: true, atStartOfText: false);
        var watch = Stopwatch.StartNew();
        var logits = decoder.Forward(prompt, allLogits: false);
        double firstToken = watch.Elapsed.TotalSeconds;
        while (produced.Count < maxTokens && decoder.Length < context)
        {
            ct.ThrowIfCancellationRequested();
            int next = sampler.Sample(logits, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(history));
            if (stopIds.Contains(next))
            {
                break;
            }

            produced.Add(next);
            history.Add(next);
            if (!json)
            {
                output.Write(decodeText is null ? $"{(produced.Count > 1 ? " " : "")}{next}" : decodeText.Add(next));
                output.Flush();
            }

            if (produced.Count < maxTokens && decoder.Length < context)
            {
                logits = decoder.Forward([next], allLogits: false);
            }
        }

        double seconds = watch.Elapsed.TotalSeconds;
        double decodeRate = produced.Count > 1 ? (produced.Count - 1) / Math.Max(1e-9, seconds - firstToken) : 0;
        if (json)
        {
            WriteJson(output, w =>
            {
                w.WriteString("model", Path.GetFullPath(model));
                w.WriteString("runtime", "onnxruntime");
                if (tokenizer is not null)
                {
                    w.WriteString("text", tokenizer.Decode(produced, skipSpecialTokens: true));
                }
                else
                {
                    w.WriteNull("text");
                }

                w.Ints("token_ids", produced);
                w.WriteNumber("prompt_tokens", prompt.Length);
                w.WriteNumber("generated_tokens", produced.Count);
                w.Number("tokens_per_second", decodeRate);
                w.Number("prefill_tokens_per_second", prompt.Length / Math.Max(1e-9, firstToken));
                w.Number("ttft_ms", firstToken * 1000);
                w.Number("seconds", seconds);
                w.WriteString("stop_reason", produced.Count >= maxTokens ? "length" : decoder.Length >= context ? "context" : "eos");
                w.WriteNumber("peak_memory_bytes", PeakMemoryBytes());
            });
        }
        else
        {
            output.WriteLine();
            err.WriteLine($"{produced.Count} tokens in ONNX Runtime, first after {F(firstToken * 1000, "0")} ms, decode {F(decodeRate, "0.0")} tok/s");
        }

        return 0;
    }
}
