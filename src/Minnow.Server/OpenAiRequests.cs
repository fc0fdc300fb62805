using System.Text.Json;
using Minnow.Inference;
using Minnow.Serving;
using Minnow.Tokenizers;

namespace Minnow.Server;

/// <summary>A parsed completion request: the prompt, how to complete it, and how to answer.</summary>
internal sealed record ParsedRequest(TextCompletionRequest Completion, bool Stream, bool IncludeUsage, bool Chat);

/// <summary>
/// Reads OpenAI's request bodies (<c>/v1/chat/completions</c>, <c>/v1/completions</c>) with llama-server's and vLLM's
/// extra fields (<c>top_k</c>, <c>min_p</c>, <c>ignore_eos</c>, <c>repetition_penalty</c>); every field of the wrong
/// type or out of range is a 400 naming the field. Unknown fields are ignored, as OpenAI-compatible servers do.
/// </summary>
internal static class OpenAiRequests
{
    public static ParsedRequest Parse(JsonElement body, bool chat, PromptEncoder prompts, string modelId)
    {
        if (body.ValueKind != JsonValueKind.Object)
        {
            throw ApiError.BadRequest("the request body must be a JSON object.");
        }

        var r = new Fields(body);
        string? model = r.String("model");
        if (model is not null && model != modelId)
        {
            throw ApiError.NotFound($"the model '{model}' does not exist; this server serves '{modelId}'.", "model");
        }

        int? n = r.Int("n", 1, int.MaxValue);
        if (n is > 1)
        {
            throw ApiError.BadRequest($"n={n} is not supported: this server returns one choice per request (n=1).", "n");
        }

        int[] prompt = chat ? prompts.EncodeChat(Messages(body)) : Prompt(body, prompts);
        if (prompt.Length == 0)
        {
            throw ApiError.BadRequest("the prompt is empty (no tokens).", chat ? "messages" : "prompt");
        }

        int? maxTokens = r.Int("max_completion_tokens", 1, int.MaxValue) ?? r.Int("max_tokens", 1, int.MaxValue);
        float temperature = r.Float("temperature", 0, 2) ?? 1f;
        var sampling = new SamplingOptions
        {
            Temperature = temperature,
            TopP = r.Float("top_p", 0, 1) is float topP ? (topP > 0 ? topP : throw ApiError.BadRequest("top_p must be greater than 0.", "top_p")) : 1f,
            TopK = r.Int("top_k", 0, int.MaxValue) ?? 0,
            MinP = r.Float("min_p", 0, 1) ?? 0f,
            RepetitionPenalty = r.Float("repetition_penalty", 0.01f, 10) ?? 1f,
            Seed = r.Long("seed") is long seed ? unchecked((ulong)seed) : null,
        };

        bool logprobs;
        int top;
        if (chat)
        {
            logprobs = r.Bool("logprobs") ?? false;
            top = r.Int("top_logprobs", 0, 20) ?? 0;
            if (top > 0 && !logprobs)
            {
                throw ApiError.BadRequest("top_logprobs needs logprobs: true.", "top_logprobs");
            }
        }
        else
        {
            // The legacy endpoint's logprobs is the number of alternatives (0 still reports the chosen token's).
            int? count = r.Int("logprobs", 0, 20);
            logprobs = count is not null;
            top = count ?? 0;
        }

        bool stream = r.Bool("stream") ?? false;
        bool includeUsage = false;
        if (body.TryGetProperty("stream_options", out var options) && options.ValueKind != JsonValueKind.Null)
        {
            if (options.ValueKind != JsonValueKind.Object)
            {
                throw ApiError.BadRequest("stream_options must be an object.", "stream_options");
            }

            includeUsage = new Fields(options, "stream_options.").Bool("include_usage") ?? false;
        }

        r.String("user"); // accepted (a caller's own tag), checked for its type only
        return new ParsedRequest(new TextCompletionRequest
        {
            Prompt = prompt,
            MaxTokens = maxTokens,
            Sampling = sampling,
            StopStrings = Stops(body),
            IgnoreEos = r.Bool("ignore_eos") ?? false,
            Logprobs = logprobs,
            TopLogprobs = top,
        }, stream, includeUsage, chat);
    }

    private static List<ChatMessage> Messages(JsonElement body)
    {
        if (!body.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
        {
            throw ApiError.BadRequest("messages must be a non-empty array of {role, content}.", "messages");
        }

        var list = new List<ChatMessage>();
        int i = 0;
        foreach (var m in messages.EnumerateArray())
        {
            string where = $"messages[{i++}]";
            if (m.ValueKind != JsonValueKind.Object)
            {
                throw ApiError.BadRequest($"{where} must be an object with role and content.", where);
            }

            string role = m.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()! : "";
            role = role switch
            {
                "system" or "developer" => "system",
                "user" or "assistant" => role,
                _ => throw ApiError.BadRequest($"{where}.role must be system, developer, user or assistant (got '{role}').", where + ".role"),
            };
            list.Add(new ChatMessage(role, Content(m, where)));
        }

        return list;
    }

    /// <summary>A message's content: a string, or an array of text parts.</summary>
    private static string Content(JsonElement message, string where)
    {
        if (!message.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null)
        {
            return "";
        }

        if (content.ValueKind == JsonValueKind.String)
        {
            return content.GetString()!;
        }

        if (content.ValueKind == JsonValueKind.Array)
        {
            var text = new System.Text.StringBuilder();
            foreach (var part in content.EnumerateArray())
            {
                if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type) || type.ValueEquals("text") == false ||
                    !part.TryGetProperty("text", out var t) || t.ValueKind != JsonValueKind.String)
                {
                    throw ApiError.BadRequest($"{where}.content: only text parts ({{\"type\":\"text\",\"text\":...}}) are supported by a text model.", where + ".content");
                }

                text.Append(t.GetString());
            }

            return text.ToString();
        }

        throw ApiError.BadRequest($"{where}.content must be a string or an array of text parts.", where + ".content");
    }

    private static int[] Prompt(JsonElement body, PromptEncoder prompts)
    {
        if (!body.TryGetProperty("prompt", out var prompt))
        {
            throw ApiError.BadRequest("prompt is required.", "prompt");
        }

        if (prompt.ValueKind == JsonValueKind.String)
        {
            return prompts.EncodeText(prompt.GetString()!);
        }

        if (prompt.ValueKind == JsonValueKind.Array)
        {
            var items = prompt.EnumerateArray().ToList();
            if (items.Count == 1 && items[0].ValueKind == JsonValueKind.String)
            {
                return prompts.EncodeText(items[0].GetString()!);
            }

            if (items.Count > 0 && items.All(e => e.ValueKind == JsonValueKind.Number))
            {
                int vocab = prompts.Tokenizer.VocabSize;
                return [.. items.Select(e => e.TryGetInt32(out int id) && id >= 0 && id < vocab
                    ? id
                    : throw ApiError.BadRequest($"prompt token ids must be integers in [0, {vocab}).", "prompt"))];
            }

            if (items.Count > 1)
            {
                throw ApiError.BadRequest("a batch of prompts is not supported: send one prompt per request.", "prompt");
            }
        }

        throw ApiError.BadRequest("prompt must be a string, an array of one string, or an array of token ids.", "prompt");
    }

    private static string[] Stops(JsonElement body)
    {
        if (!body.TryGetProperty("stop", out var stop) || stop.ValueKind == JsonValueKind.Null)
        {
            return [];
        }

        if (stop.ValueKind == JsonValueKind.String)
        {
            return [stop.GetString()!];
        }

        if (stop.ValueKind == JsonValueKind.Array && stop.GetArrayLength() <= 16 && stop.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String))
        {
            return [.. stop.EnumerateArray().Select(e => e.GetString()!)];
        }

        throw ApiError.BadRequest("stop must be a string or an array of at most 16 strings.", "stop");
    }

    /// <summary>Typed, range-checked optional fields of one JSON object.</summary>
    internal readonly struct Fields(JsonElement obj, string prefix = "")
    {
        private JsonElement? Get(string name) =>
            obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

        public string? String(string name) => Get(name) switch
        {
            null => null,
            { ValueKind: JsonValueKind.String } v => v.GetString(),
            _ => throw ApiError.BadRequest($"{prefix}{name} must be a string.", prefix + name),
        };

        public bool? Bool(string name) => Get(name) switch
        {
            null => null,
            { ValueKind: JsonValueKind.True } => true,
            { ValueKind: JsonValueKind.False } => false,
            _ => throw ApiError.BadRequest($"{prefix}{name} must be true or false.", prefix + name),
        };

        public int? Int(string name, int min, int max)
        {
            if (Get(name) is not { } v)
            {
                return null;
            }

            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int value))
            {
                throw ApiError.BadRequest($"{prefix}{name} must be an integer.", prefix + name);
            }

            return value >= min && value <= max ? value
                : throw ApiError.BadRequest($"{prefix}{name} must be between {min} and {max} (got {value}).", prefix + name);
        }

        public long? Long(string name) => Get(name) switch
        {
            null => null,
            { ValueKind: JsonValueKind.Number } v when v.TryGetInt64(out long value) => value,
            _ => throw ApiError.BadRequest($"{prefix}{name} must be an integer.", prefix + name),
        };

        public float? Float(string name, float min, float max)
        {
            if (Get(name) is not { } v)
            {
                return null;
            }

            if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double value) || !double.IsFinite(value))
            {
                throw ApiError.BadRequest($"{prefix}{name} must be a number.", prefix + name);
            }

            return value >= min && value <= max ? (float)value
                : throw ApiError.BadRequest($"{prefix}{name} must be between {min} and {max} (got {value}).", prefix + name);
        }
    }
}
