using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Minnow.Serving;

namespace Minnow.Server;

/// <summary>Answers a running completion: as one JSON body, or as server-sent events, one per generated token.</summary>
internal static class CompletionStreams
{
    public static async Task Whole(HttpContext context, TextCompletion completion, ParsedRequest request, string model, PromptEncoder prompts, ServerMetrics metrics, OutputSigning? signing = null)
    {
        var tokens = new List<TextDelta>();
        var text = new StringBuilder();
        long previous = 0;
        await foreach (var delta in completion.ReadAsync(context.RequestAborted))
        {
            text.Append(delta.Text);
            if (delta.TokenId >= 0)
            {
                tokens.Add(delta);
                if (previous != 0)
                {
                    metrics.InterToken(previous, delta.Timestamp);
                }

                previous = delta.Timestamp;
            }
        }

        if (completion.Finish == CompletionFinish.Cancelled)
        {
            throw ApiError.Unavailable("the server shut down before the request finished.");
        }

        bool chat = request.Chat;
        bool logprobs = request.Completion.Logprobs;
        var signed = signing?.Sign(text.ToString());
        if (signed is not null)
        {
            context.Response.Headers[Sealing.SignedOutput.HeaderName] = signed.ToHeader();
        }

        await OpenAiWriter.WriteJson(context, 200, w =>
        {
            w.WriteString("id", OpenAiWriter.NewId(chat ? "chatcmpl-" : "cmpl-"));
            w.WriteString("object", chat ? "chat.completion" : "text_completion");
            w.WriteNumber("created", DateTimeOffset.UtcNow.ToUnixTimeSeconds());
            w.WriteString("model", model);
            w.WriteString("system_fingerprint", "minnow");
            w.WriteStartArray("choices");
            w.WriteStartObject();
            w.WriteNumber("index", 0);
            if (chat)
            {
                w.WriteStartObject("message");
                w.WriteString("role", "assistant");
                w.WriteString("content", text.ToString());
                w.WriteEndObject();
            }
            else
            {
                w.WriteString("text", text.ToString());
            }

            if (!logprobs)
            {
                w.WriteNull("logprobs");
            }
            else if (chat)
            {
                OpenAiWriter.ChatLogprobs(w, tokens, prompts);
            }
            else
            {
                OpenAiWriter.CompletionLogprobs(w, tokens, prompts, 0);
            }

            w.WriteString("finish_reason", OpenAiWriter.FinishName(completion.Finish));
            w.WriteEndObject();
            w.WriteEndArray();
            OpenAiWriter.Usage(w, completion);
            if (signed is not null)
            {
                OutputSigning.WriteField(w, signed);
            }
        });
    }

    public static async Task Stream(HttpContext context, TextCompletion completion, ParsedRequest request, string model, PromptEncoder prompts, ServerMetrics metrics, OutputSigning? signing = null)
    {
        bool chat = request.Chat;
        bool logprobs = request.Completion.Logprobs;
        string id = OpenAiWriter.NewId(chat ? "chatcmpl-" : "cmpl-");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        int textOffset = 0;

        void Head(Utf8JsonWriter w)
        {
            w.WriteString("id", id);
            w.WriteString("object", chat ? "chat.completion.chunk" : "text_completion");
            w.WriteNumber("created", created);
            w.WriteString("model", model);
            w.WriteString("system_fingerprint", "minnow");
        }

        void Choice(Utf8JsonWriter w, string? text, TextDelta? token, string? finish)
        {
            w.WriteStartArray("choices");
            w.WriteStartObject();
            w.WriteNumber("index", 0);
            if (chat)
            {
                w.WriteStartObject("delta");
                if (text is not null)
                {
                    w.WriteString("content", text);
                }

                w.WriteEndObject();
            }
            else
            {
                w.WriteString("text", text ?? "");
            }

            if (logprobs && token is { } t)
            {
                if (chat)
                {
                    OpenAiWriter.ChatLogprobs(w, [t], prompts);
                }
                else
                {
                    OpenAiWriter.CompletionLogprobs(w, [t], prompts, textOffset);
                }
            }
            else
            {
                w.WriteNull("logprobs");
            }

            if (finish is null)
            {
                w.WriteNull("finish_reason");
            }
            else
            {
                w.WriteString("finish_reason", finish);
            }

            w.WriteEndObject();
            w.WriteEndArray();
            if (request.IncludeUsage)
            {
                w.WriteNull("usage");
            }
        }

        OpenAiWriter.StartEvents(context);
        if (chat)
        {
            // The first chunk names the role, as OpenAI's does.
            await OpenAiWriter.WriteEvent(context, w =>
            {
                Head(w);
                w.WriteStartArray("choices");
                w.WriteStartObject();
                w.WriteNumber("index", 0);
                w.WriteStartObject("delta");
                w.WriteString("role", "assistant");
                w.WriteString("content", "");
                w.WriteEndObject();
                w.WriteNull("logprobs");
                w.WriteNull("finish_reason");
                w.WriteEndObject();
                w.WriteEndArray();
                if (request.IncludeUsage)
                {
                    w.WriteNull("usage");
                }
            });
        }

        long previous = 0;
        var signedText = signing is null ? null : new StringBuilder();
        try
        {
            await foreach (var delta in completion.ReadAsync(context.RequestAborted))
            {
                TextDelta? token = delta.TokenId >= 0 ? delta : null;
                if (token is not null)
                {
                    if (previous != 0)
                    {
                        metrics.InterToken(previous, delta.Timestamp);
                    }

                    previous = delta.Timestamp;
                }

                await OpenAiWriter.WriteEvent(context, w =>
                {
                    Head(w);
                    Choice(w, delta.Text, token, null);
                });
                textOffset += delta.Text.Length;
                signedText?.Append(delta.Text);
            }
        }
        catch (MinnowException e) when (!context.RequestAborted.IsCancellationRequested)
        {
            await OpenAiWriter.WriteEvent(context, w => OpenAiWriter.Error(w, new ApiError(500, e.Message, "server_error")));
            await OpenAiWriter.WriteDone(context);
            return;
        }

        if (completion.Finish == CompletionFinish.Cancelled)
        {
            // Cancelled by the server (a shutdown past its deadline): say so rather than end as if complete.
            await OpenAiWriter.WriteEvent(context, w => OpenAiWriter.Error(w, ApiError.Unavailable("the server shut down before the request finished.")));
            await OpenAiWriter.WriteDone(context);
            return;
        }

        await OpenAiWriter.WriteEvent(context, w =>
        {
            Head(w);
            Choice(w, chat ? null : "", null, OpenAiWriter.FinishName(completion.Finish));
        });
        if (request.IncludeUsage)
        {
            await OpenAiWriter.WriteEvent(context, w =>
            {
                Head(w);
                w.WriteStartArray("choices");
                w.WriteEndArray();
                OpenAiWriter.Usage(w, completion);
            });
        }

        if (signing is not null)
        {
            var signed = signing.Sign(signedText!.ToString());
            await OpenAiWriter.WriteEvent(context, w => OutputSigning.WriteField(w, signed));
        }

        await OpenAiWriter.WriteDone(context);
    }

    internal static long Now() => Stopwatch.GetTimestamp();
}
