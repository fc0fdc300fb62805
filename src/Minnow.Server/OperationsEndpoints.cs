using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Minnow.Serving;
using Minnow.Serving.Rollout;

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
        app.MapGet(Dashboard.Path, Dashboard.Write);
    }

    /// <summary>Paths served without the API key: pages that hold no data and read it with the key the user gives them.</summary>
    public static bool IsPublicPage(PathString path) => path.Equals(Dashboard.Path);

    /// <summary><c>GET /v1/models/BASE:NAME</c>: the adapter's model entry, or 404 naming what this server serves.</summary>
    public static Task WriteAdapterModel(HttpContext context, ServedModels served, string? id, long created, int contextSize)
    {
        string prefix = served.BaseId + ":";
        var adapter = id is not null && id.StartsWith(prefix, StringComparison.Ordinal)
            ? served.Adapters.List().FirstOrDefault(a => a.Name == id[prefix.Length..])
            : null;
        return adapter is null
            ? throw ApiError.NotFound($"the model '{id}' does not exist; this server serves '{served.BaseId}' and its adapters as '{served.BaseId}:NAME' (see GET /v1/models).", "model")
            : OpenAiWriter.WriteJson(context, 200, w => WriteAdapterModel(w, served, adapter, created, contextSize));
    }

    private static void WriteAdapterModel(Utf8JsonWriter w, ServedModels served, AdapterInfo a, long created, int contextSize)
    {
        w.WriteString("id", $"{served.BaseId}:{a.Name}");
        w.WriteString("object", "model");
        w.WriteNumber("created", created);
        w.WriteString("owned_by", "minnow");
        w.WriteString("parent", served.BaseId);
        w.WriteNumber("max_model_len", contextSize);
    }

    /// <summary>The adapters as entries of <c>/v1/models</c>: <c>BASE:NAME</c>, with the adapter's details.</summary>
    public static void WriteAdapterModels(Utf8JsonWriter w, ServedModels served, long created, int contextSize)
    {
        foreach (var a in served.Adapters.List())
        {
            w.WriteStartObject();
            WriteAdapterModel(w, served, a, created, contextSize);
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

    /// <summary>
    /// <c>POST /v1/adapters {"name": "NAME", "path": "PEFT folder or sealed package"}</c>: loads (or replaces) an
    /// adapter; a package is opened with the server's key (<c>--key-file</c>) and decrypted in memory only.
    /// </summary>
    private static async Task LoadAdapter(HttpContext context, ServedModels served)
    {
        using var doc = await JsonDocument.ParseAsync(context.Request.Body, default, context.RequestAborted);
        var body = doc.RootElement;
        if (body.ValueKind != JsonValueKind.Object)
        {
            throw ApiError.BadRequest("the request body must be a JSON object {\"name\": ..., \"path\": ...}.");
        }

        string name = body.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String ? n.GetString()! : throw ApiError.BadRequest("name must be a string.", "name");
        string path = (body.TryGetProperty("path", out var p) || body.TryGetProperty("package", out p)) && p.ValueKind == JsonValueKind.String
            ? p.GetString()!
            : throw ApiError.BadRequest("path must be a string (a PEFT adapter folder, or a sealed package of one, on the server).", "path");
        var (loaded, evicted) = served.Adapters.Load(name, path, served.Packages);
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
        return WriteWhole(context, w => WriteRollout(w, served, rollout));
    }

    /// <summary>The controller's JSON, with what serves each variant (the model file, and its adapter).</summary>
    private static void WriteRollout(Utf8JsonWriter w, ServedModels served, RolloutController rollout)
    {
        using var buffer = new MemoryStream();
        using (var inner = new Utf8JsonWriter(buffer))
        {
            rollout.WriteJson(inner);
        }

        var root = JsonNode.Parse(buffer.ToArray())!.AsObject();
        var by = new JsonObject();
        foreach (var v in served.Variants.Values)
        {
            by[v.Name] = v.Slot.Path + (v.Adapter is { } a ? " + adapter " + a.Source : "");
        }

        root["served_by"] = by;
        root.WriteTo(w);
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
        return WriteWhole(context, w => WriteRollout(w, served, rollout));
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
