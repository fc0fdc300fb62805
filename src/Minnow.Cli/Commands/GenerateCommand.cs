using System.CommandLine;
using Minnow.Inference;
using Minnow.Loading;
using Minnow.Serving;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow generate [MODEL] -p TEXT</c>: continues a prompt, streaming the text to stdout as it is produced
/// (speed on stderr), or prints one JSON object with <c>--json</c>. Models without a tokenizer take
/// <c>--prompt-ids</c> and print token ids.
/// </summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var prompt = new Option<string?>("--prompt", "-p") { Description = "The prompt text." };
        var promptIds = new Option<string?>("--prompt-ids")
        {
            Description = "The prompt as token ids, e.g. 1,2,3 (for models without a tokenizer).",
        };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "Most tokens to generate.", DefaultValueFactory = _ => 128 };
        var temperature = new Option<float>("--temperature", "--temp")
        {
            Description = "Sampling temperature; 0 is greedy (always the most likely token).",
            DefaultValueFactory = _ => 0.8f,
        };
        var topK = new Option<int>("--top-k") { Description = "Keep only the k most likely tokens (0: off).", DefaultValueFactory = _ => 40 };
        var topP = new Option<float>("--top-p") { Description = "Keep the most likely tokens up to this total probability (1: off).", DefaultValueFactory = _ => 0.95f };
        var minP = new Option<float>("--min-p") { Description = "Drop tokens less likely than this fraction of the best one (0: off).", DefaultValueFactory = _ => 0.05f };
        var repeatPenalty = new Option<float>("--repeat-penalty") { Description = "Penalty for repeating recent tokens (1: off).", DefaultValueFactory = _ => 1.0f };
        var repeatLastN = new Option<int>("--repeat-last-n") { Description = "How many recent tokens the repeat penalty looks at.", DefaultValueFactory = _ => 64 };
        var seed = new Option<ulong?>("--seed", "-s") { Description = "Random seed, for reproducible sampling." };
        var stop = new Option<string[]>("--stop")
        {
            Description = "Stop when this text appears (repeatable); it is not printed.",
            Arity = ArgumentArity.ZeroOrMore,
            DefaultValueFactory = _ => [],
        };
        var ctx = new Option<int?>("--ctx", "-c") { Description = "Context size in tokens (default: the model's context length)." };
        var chat = new Option<bool>("--chat") { Description = "Wrap the prompt in the tokenizer's chat template (instruction-tuned models)." };
        var system = new Option<string?>("--system") { Description = "A system message for --chat." };
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Do not stop at the end-of-generation token." };
        var adapter = FinetuneCommand.AdapterOption();
        var threads = ThreadsOption();
        var json = JsonOption();

        var command = new Command("generate", "Generate text from a prompt, streaming it to stdout; speed and time to first token go to stderr.")
        {
            model, prompt, promptIds, maxTokens, temperature, topK, topP, minP, repeatPenalty, repeatLastN, seed, stop, ctx,
            chat, system, ignoreEos, adapter, threads, json,
        };
        var package = new PackageOptions();
        package.AddTo(command);

        command.SetSyncAction((r, ct) =>
        {
            string? text = r.GetValue(prompt);
            string? ids = r.GetValue(promptIds);
            bool asJson = r.GetValue(json);
            bool useChat = r.GetValue(chat);
            string[] stops = r.GetValue(stop) ?? [];
            if (text is null && ids is null)
            {
                throw new MinnowException("no prompt: give one with -p TEXT (or --prompt-ids 1,2,3 for a model without a tokenizer).");
            }

            if (text is not null && ids is not null)
            {
                throw new MinnowException("give either -p TEXT or --prompt-ids, not both.");
            }

            if (useChat && text is null)
            {
                throw new MinnowException("--chat needs a text prompt (-p TEXT).");
            }

            var sampling = new SamplingOptions
            {
                Temperature = r.GetValue(temperature),
                TopK = r.GetValue(topK),
                TopP = r.GetValue(topP),
                MinP = r.GetValue(minP),
                RepetitionPenalty = r.GetValue(repeatPenalty),
                RepeatLastN = r.GetValue(repeatLastN),
                Seed = r.GetValue(seed),
            };
            sampling.Validate();
            int max = r.GetValue(maxTokens);
            if (max < 0)
            {
                throw new MinnowException($"--max-tokens must be ≥ 0 (got {max}).");
            }

            if (OnnxModelCommands.IsOnnx(r.GetValue(model)))
            {
                return OnnxModelCommands.Generate(Out(r), Err(r), r.GetValue(model)!, text, ids, r.GetValue(maxTokens), sampling, r.GetValue(ignoreEos), asJson, ct);
            }

            int threadCount = ResolveThreads(r.GetValue(threads));
            using var pool = new Tensors.WorkerPool(threadCount);
            long opening = System.Diagnostics.Stopwatch.GetTimestamp();
            using var loaded = package.Open(r, DefaultModel.Resolve(r.GetValue(model)), pool);
            double openMs = System.Diagnostics.Stopwatch.GetElapsedTime(opening).TotalMilliseconds;
            WriteNotes(Err(r), loaded.Notes);
            using var lora = FinetuneCommand.LoadAdapter(loaded, r.GetValue(adapter));
            var tokenizer = PromptEncoder.For(loaded);
            if (text is not null && tokenizer is null)
            {
                throw new MinnowException($"{loaded.Path}: {PromptEncoder.Missing(loaded)}, so a text prompt cannot be encoded; pass token ids with --prompt-ids 1,2,3.");
            }

            if (stops.Length > 0 && tokenizer is null)
            {
                throw new MinnowException($"{loaded.Path}: --stop needs a tokenizer to decode the output ({PromptEncoder.Missing(loaded)}).");
            }

            int[] promptTokens = text is not null
                ? tokenizer!.EncodePrompt(text, useChat, r.GetValue(system))
                : ParseIds(ids!, "--prompt-ids");
            if (promptTokens.Length == 0)
            {
                throw new MinnowException("the prompt is empty (no tokens).");
            }

            int modelContext = loaded.Config.MaxPositions;
            int context = r.GetValue(ctx) ?? modelContext;
            if (context <= 0)
            {
                throw new MinnowException($"--ctx must be positive (got {context}).");
            }

            if (context > modelContext)
            {
                throw new MinnowException($"--ctx {context} is larger than the context length of {loaded.Path} ({modelContext} tokens).");
            }

            if (promptTokens.Length > context)
            {
                throw new MinnowException($"the prompt has {promptTokens.Length} tokens, longer than the context of {context} tokens ({loaded.Path}); shorten the prompt{(context < modelContext ? " or raise --ctx" : "")}.");
            }

            var stopTokens = new List<int>();
            if (!r.GetValue(ignoreEos))
            {
                if (tokenizer is not null)
                {
                    stopTokens.AddRange(tokenizer.EndOfGenerationIds);
                }
                else if (loaded.Config.EosTokenId is int eos)
                {
                    stopTokens.Add(eos);
                }
            }

            var options = new GenerationOptions
            {
                MaxTokens = max,
                Sampling = sampling,
                StopTokens = stopTokens,
                StopStrings = stops,
            };

            var output = Out(r);
            Func<int, string>? decodePiece = null;
            Action<string>? onText = null;
            var decoder = tokenizer?.CreateStreamingDecoder();
            if (decoder is not null)
            {
                decodePiece = decoder.Add;
            }
            else if (!asJson)
            {
                bool first = true;
                decodePiece = id =>
                {
                    string piece = first ? id.ToString(System.Globalization.CultureInfo.InvariantCulture) : " " + id.ToString(System.Globalization.CultureInfo.InvariantCulture);
                    first = false;
                    return piece;
                };
            }

            if (!asJson)
            {
                onText = piece =>
                {
                    output.Write(piece);
                    output.Flush();
                };
            }

            int sessionSize = (int)Math.Min(context, (long)promptTokens.Length + Math.Max(1, max));
            GenerationResult result;
            using (var engine = new Engine(loaded.Model, EngineOptions.ForOneSequence(loaded.Config, sessionSize)))
            {
                result = Generator.Generate(engine, promptTokens, options, decodePiece, onText, ct, lora);
            }

            // Bytes of a character left incomplete at the end come out as U+FFFD, as a full decode gives them.
            string rest = decoder is not null && result.StopReason != "stop_string" ? decoder.Flush() : "";
            string generatedText = result.Text + rest;
            if (!asJson)
            {
                output.Write(rest);
                output.WriteLine();
                output.Flush();
            }

            ct.ThrowIfCancellationRequested();
            long peak = PeakMemoryBytes();
            var conditions = new Benchmarking.MeasureConditions
            {
                PromptTokens = result.PromptTokens,
                GeneratedTokens = result.TokenIds.Length,
                Threads = threadCount,
                WarmUpRuns = 0,
            };
            if (asJson)
            {
                WriteJson(output, w =>
                {
                    w.WriteString("model", loaded.Path);
                    if (tokenizer is null)
                    {
                        w.WriteNull("text");
                    }
                    else
                    {
                        w.WriteString("text", generatedText);
                    }

                    w.Ints("token_ids", result.TokenIds);
                    w.WriteNumber("prompt_tokens", result.PromptTokens);
                    w.WriteNumber("generated_tokens", result.TokenIds.Length);
                    w.Number("tokens_per_second", result.TokensPerSecond);
                    w.Number("prefill_tokens_per_second", result.PrefillTokensPerSecond);
                    w.Number("ttft_ms", result.TimeToFirstTokenMs);
                    w.Number("open_ms", openMs);
                    w.Number("prefill_seconds", result.PrefillSeconds);
                    w.Number("decode_seconds", result.DecodeSeconds);
                    w.WriteString("stop_reason", result.StopReason);
                    w.WriteNumber("ctx", sessionSize);
                    w.WriteNumber("peak_memory_bytes", peak);
                    w.WriteStartObject("conditions");
                    conditions.WriteProperties(w);
                    w.WriteEndObject();
                });
            }
            else
            {
                Err(r).WriteLine(
                    $"[{result.TokenIds.Length} tokens: decode {F(result.TokensPerSecond, "0.0")} tok/s, prefill {result.PromptTokens} tokens at " +
                    $"{F(result.PrefillTokensPerSecond, "0.0")} tok/s, first token after {F(result.TimeToFirstTokenMs, "0")} ms, " +
                    $"stopped: {result.StopReason}, peak RSS {Benchmarking.Units.MiB(peak)}; {conditions.Describe()}]");
            }

            return 0;
        });
        return command;
    }
}
