using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Minnow.Serving;

namespace Minnow.Server;

/// <summary>
/// Operating a running server: adapters loaded and unloaded at run time (<c>/v1/adapters</c>), the canary rollout
/// (<c>/admin/rollout</c>) and its dashboard (<c>/dashboard</c>).
/// </summary>
internal static class OperationsEndpoints
{
    public static void Map(WebApplication app, Func<HttpContext, Func<HttpContext, Task>, Task> guard, Func<ServedModels> served)
    {
        app.MapGet("/v1/adapters", context => guard(context, c => ListAdapters(c, served())));
        app.MapPost("/v1/adapters", context => guard(context, c => LoadAdapter(c, served())));
        app.MapDelete("/v1/adapters/{name}", context => guard(context, c => UnloadAdapter(c, served())));
        app.MapGet("/admin/rollout", context => guard(context, c => ShowRollout(c, served())));
        app.MapPost("/admin/rollout/{action}", context => guard(context, c => OverrideRollout(c, served())));
        app.MapGet("/dashboard", context => guard(context, c => Dashboard.Write(c, served())));
    }

    /// <summary>The adapters as entries of <c>/v1/models</c>: <c>BASE:NAME</c>, with the adapter's details.</summary>
    public static void WriteAdapterModels(Utf8JsonWriter w, ServedModels served, long created, int contextSize)
    {
        foreach (var a in served.Adapters.List())
        {
            w.WriteStartObject();
            w.WriteString("id", $"{served.BaseId}:{a.Name}");
            w.WriteString("object", "model");
            w.WriteNumber("created", created);
            w.WriteString("owned_by", "minnow");
            w.WriteString("parent", served.BaseId);
            w.WriteNumber("max_model_len", contextSize);
            w.WriteEndObject();
        }
    }

    private static void WriteAdapter(Utf8JsonWriter w, ServedModels served, AdapterInfo a)
    {
        w.WriteString("id", $"{served.BaseId}:{a.Name}");
        w.WriteString("object", "adapter");
        w.WriteString("name", a.Name);
        w.WriteString("path", a.Source);
        w.WriteNumber("bytes", a.Bytes);
        w.WriteNumber("rank", a.Rank);
        w.WriteString("loaded_at", a.LoadedAt);
        w.WriteString("last_used_at", a.LastUsed);
    }

    private static Task ListAdapters(HttpContext context, ServedModels served) => OpenAiWriter.WriteJson(context, 200, w =>
    {
        w.WriteString("object", "list");
        w.WriteNumber("budget_bytes", served.Adapters.BudgetBytes);
        w.WriteNumber("resident_bytes", served.Adapters.ResidentBytes);
        w.WriteStartArray("data");
        foreach (var a in served.Adapters.List())
        {
            w.WriteStartObject();
            WriteAdapter(w, served, a);
            w.WriteEndObject();
        }

        w.WriteEndArray();
    });

    /// <summary><c>POST /v1/adapters {"name": "NAME", "path": "PEFT folder"}</c>: loads (or replaces) an adapter.</summary>
    private static async Task LoadAdapter(HttpContext context, ServedModels served)
    {
        using var doc = await JsonDocument.ParseAsync(context.Request.Body, default, context.RequestAborted);
        var body = doc.RootElement;
        if (body.ValueKind != JsonValueKind.Object)
        {
            throw ApiError.BadRequest("the request body must be a JSON object {\"name\": ..., \"path\": ...}.");
        }

        string name = body.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String ? n.GetString()! : throw ApiError.BadRequest("name must be a string.", "name");
        string path = body.TryGetProperty("path", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString()! : throw ApiError.BadRequest("path must be a string (a PEFT adapter folder on the server).", "path");
        var (loaded, evicted) = served.Adapters.Load(name, path);
        await OpenAiWriter.WriteJson(context, 200, w =>
        {
            WriteAdapter(w, served, loaded);
            w.WriteStartArray("evicted");
            foreach (string e in evicted)
            {
                w.WriteStringValue(e);
            }

            w.WriteEndArray();
        });
    }

    private static Task UnloadAdapter(HttpContext context, ServedModels served)
    {
        string name = context.Request.RouteValues["name"] as string ?? "";
        return served.Adapters.Unload(name)
            ? OpenAiWriter.WriteJson(context, 200, w =>
            {
                w.WriteString("id", $"{served.BaseId}:{name}");
                w.WriteString("object", "adapter");
                w.WriteBoolean("deleted", true);
            })
            : throw ApiError.NotFound($"no adapter '{name}' is loaded.", "name", "adapter_not_found");
    }

    private static Task ShowRollout(HttpContext context, ServedModels served)
    {
        var rollout = served.Rollout ?? throw NoRollout();
        return WriteWhole(context, rollout.WriteJson);
    }

    private static Task OverrideRollout(HttpContext context, ServedModels served)
    {
        var rollout = served.Rollout ?? throw NoRollout();
        string action = context.Request.RouteValues["action"] as string ?? "";
        string who = "operator (POST /admin/rollout/" + action + ")";
        _ = action switch
        {
            "promote" => rollout.Promote(who),
            "rollback" => rollout.Rollback(who),
            "pause" => rollout.Pause(who),
            "resume" => rollout.Resume(who),
            _ => throw ApiError.NotFound($"no rollout action '{action}' (promote, rollback, pause, resume).", null, "not_found"),
        };
        served.RefreshGauges();
        return WriteWhole(context, rollout.WriteJson);
    }

    /// <summary>Answers 200 with a JSON document the writer makes whole (its own outer object).</summary>
    private static async Task WriteWhole(HttpContext context, Action<Utf8JsonWriter> write)
    {
        context.Response.StatusCode = 200;
        context.Response.ContentType = "application/json";
        await using (var w = new Utf8JsonWriter(context.Response.BodyWriter))
        {
            write(w);
        }

        await context.Response.BodyWriter.FlushAsync(context.RequestAborted);
    }

    private static ApiError NoRollout() =>
        ApiError.NotFound("this server runs no rollout (start it with --variant and --rollout PLAN.json or --canary PERCENT).", null, "not_found");
}
