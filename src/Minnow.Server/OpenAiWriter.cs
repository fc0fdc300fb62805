using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Minnow.Inference;
using Minnow.Serving;

namespace Minnow.Server;

/// <summary>Writes OpenAI's response shapes: whole JSON bodies and server-sent events.</summary>
internal static class OpenAiWriter
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();

    // Text as it is (apostrophes, accents): JSON strings still escape quotes, control characters and newlines.
    private static readonly JsonWriterOptions Relaxed = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static async Task WriteJson(HttpContext context, int status, Action<Utf8JsonWriter> body)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await using (var w = new Utf8JsonWriter(context.Response.BodyWriter, Relaxed))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }

        await context.Response.BodyWriter.FlushAsync(context.RequestAborted);
    }

    public static Task WriteError(HttpContext context, ApiError error)
    {
        if (error.Status == 429)
        {
            context.Response.Headers.RetryAfter = "1";
        }

        return WriteJson(context, error.Status, w => Error(w, error));
    }

    public static void Error(Utf8JsonWriter w, ApiError error)
    {
        w.WriteStartObject("error");
        w.WriteString("message", error.Message);
        w.WriteString("type", error.Type);
        NullableString(w, "param", error.Param);
        NullableString(w, "code", error.Code);
        w.WriteEndObject();
    }

    public static void StartEvents(HttpContext context)
    {
        context.Response.StatusCode = 200;
        context.Response.ContentType = "text/event-stream; charset=utf-8";
        context.Response.Headers.CacheControl = "no-cache";
        context.Response.Headers["X-Accel-Buffering"] = "no";
    }

    /// <summary>One server-sent event <c>data: {json}</c>, flushed at once.</summary>
    public static async ValueTask WriteEvent(HttpContext context, Action<Utf8JsonWriter> body)
    {
        var pipe = context.Response.BodyWriter;
        pipe.Write(DataPrefix);
        using (var w = new Utf8JsonWriter(pipe, Relaxed))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }

        pipe.Write(EventEnd);
        await pipe.FlushAsync(context.RequestAborted);
    }

    public static async ValueTask WriteDone(HttpContext context)
    {
        context.Response.BodyWriter.Write("data: [DONE]\n\n"u8);
        await context.Response.BodyWriter.FlushAsync(context.RequestAborted);
    }

    public static string FinishName(CompletionFinish finish) => finish == CompletionFinish.Stop ? "stop" : "length";

    public static void Usage(Utf8JsonWriter w, TextCompletion c)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", c.PromptTokens);
        w.WriteNumber("completion_tokens", c.CompletionTokens);
        w.WriteNumber("total_tokens", c.PromptTokens + c.CompletionTokens);
        w.WriteStartObject("prompt_tokens_details");
        w.WriteNumber("cached_tokens", c.Sequence.CachedPromptTokens);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    /// <summary>Chat's log-probabilities: <c>{"content":[{token, logprob, bytes, top_logprobs}]}</c>.</summary>
    public static void ChatLogprobs(Utf8JsonWriter w, IEnumerable<TextDelta> tokens, PromptEncoder prompts)
    {
        w.WriteStartObject("logprobs");
        w.WriteStartArray("content");
        foreach (var t in tokens)
        {
            w.WriteStartObject();
            ChatToken(w, t.TokenId, t.Logprob, prompts);
            w.WriteStartArray("top_logprobs");
            foreach (var alt in t.TopLogprobs ?? [])
            {
                w.WriteStartObject();
                ChatToken(w, alt.Id, alt.Logprob, prompts);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void ChatToken(Utf8JsonWriter w, int id, float logprob, PromptEncoder prompts)
    {
        w.WriteString("token", prompts.TokenText(id));
        w.WriteNumber("logprob", logprob);
        w.WriteStartArray("bytes");
        foreach (byte b in prompts.Tokenizer.TokenBytes(id))
        {
            w.WriteNumberValue(b);
        }

        w.WriteEndArray();
    }

    /// <summary>The legacy endpoint's log-probabilities: parallel arrays of tokens, log-probabilities, alternatives and offsets.</summary>
    public static void CompletionLogprobs(Utf8JsonWriter w, IReadOnlyList<TextDelta> tokens, PromptEncoder prompts, int textOffset)
    {
        w.WriteStartObject("logprobs");
        w.WriteStartArray("tokens");
        foreach (var t in tokens)
        {
            w.WriteStringValue(prompts.TokenText(t.TokenId));
        }

        w.WriteEndArray();
        w.WriteStartArray("token_logprobs");
        foreach (var t in tokens)
        {
            w.WriteNumberValue(t.Logprob);
        }

        w.WriteEndArray();
        w.WriteStartArray("top_logprobs");
        foreach (var t in tokens)
        {
            w.WriteStartObject();
            foreach (var alt in t.TopLogprobs ?? [])
            {
                w.WriteNumber(prompts.TokenText(alt.Id), alt.Logprob);
            }

            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteStartArray("text_offset");
        int offset = textOffset;
        foreach (var t in tokens)
        {
            w.WriteNumberValue(offset);
            offset += prompts.TokenText(t.TokenId).Length;
        }

        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void NullableString(Utf8JsonWriter w, string name, string? value)
    {
        if (value is null)
        {
            w.WriteNull(name);
        }
        else
        {
            w.WriteString(name, value);
        }
    }

    public static string NewId(string prefix) => prefix + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray())[..24];

    public static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);
}
