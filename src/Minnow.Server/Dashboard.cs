using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Minnow.Server;

/// <summary>
/// <c>/dashboard</c>: the rollout's variants, weights, per-variant requests, errors, TTFT and inter-token latency of
/// the last analysis window, the probe agreement, the decision log, and the resident adapters. Rendered on the
/// server from the same JSON as <c>GET /admin/rollout</c> and refreshed by the browser every two seconds, so it
/// needs no script.
/// </summary>
internal static class Dashboard
{
    public static async Task Write(HttpContext context, ServedModels served)
    {
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">")
            .Append("<title>minnow dashboard</title><style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0 1.5em}")
            .Append("td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f4f4f4}.rollback,.fail{color:#b00}.promote,.advance{color:#070}</style></head><body>")
            .Append(CultureInfo.InvariantCulture, $"<h1>minnow: {E(served.BaseId)}</h1>");
        if (served.Rollout is { } rollout)
        {
            using var buffer = new MemoryStream();
            using (var w = new Utf8JsonWriter(buffer))
            {
                rollout.WriteJson(w);
            }

            using var doc = JsonDocument.Parse(buffer.ToArray());
            var r = doc.RootElement;
            html.Append(CultureInfo.InvariantCulture, $"<h2>Rollout</h2><p id=\"phase\">phase <b>{E(r.GetProperty("phase").GetString())}</b>, step {r.GetProperty("step")} of {r.GetProperty("steps_total")}, ")
                .Append(CultureInfo.InvariantCulture, $"{r.GetProperty("consecutive_failures")} of {r.GetProperty("failures_to_rollback")} failed checks in a row, ")
                .Append(CultureInfo.InvariantCulture, $"probe agreement <span id=\"agreement\">{Number(r.GetProperty("probe_agreement"), "P1")}</span></p>")
                .Append("<table id=\"variants\"><tr><th>variant</th><th>serves</th><th>weight %</th><th>requests</th><th>errors</th><th>error rate (window)</th><th>TTFT p95 ms (window)</th><th>inter-token p95 ms (window)</th></tr>");
            var weights = r.GetProperty("weights");
            foreach (var v in r.GetProperty("variants").EnumerateObject())
            {
                string serves = served.Variants.TryGetValue(v.Name, out var sv) ? sv.Slot.Path + (sv.Adapter is { } a ? " + adapter " + a.Source : "") : "";
                html.Append(CultureInfo.InvariantCulture, $"<tr data-variant=\"{E(v.Name)}\"><td>{E(v.Name)}</td><td>{E(serves)}</td><td class=\"weight\">{Number(weights.GetProperty(v.Name), "0.##")}</td>")
                    .Append(CultureInfo.InvariantCulture, $"<td>{v.Value.GetProperty("requests")}</td><td>{v.Value.GetProperty("errors")}</td><td>{Number(v.Value.GetProperty("last_window_error_rate"), "P1")}</td>")
                    .Append(CultureInfo.InvariantCulture, $"<td>{Number(v.Value.GetProperty("last_window_ttft_p95_ms"), "0.#")}</td><td>{Number(v.Value.GetProperty("last_window_inter_token_p95_ms"), "0.#")}</td></tr>");
            }

            html.Append("</table><h2>Decisions</h2><table id=\"decisions\"><tr><th>at (UTC)</th><th>action</th><th>step</th><th>canary %</th><th>reason</th></tr>");
            foreach (var d in r.GetProperty("decisions").EnumerateArray().Reverse())
            {
                string action = d.GetProperty("action").GetString()!;
                html.Append(CultureInfo.InvariantCulture, $"<tr class=\"{E(action)}\"><td>{d.GetProperty("at").GetDateTimeOffset():yyyy-MM-dd HH:mm:ss}</td><td>{E(action)}</td>")
                    .Append(CultureInfo.InvariantCulture, $"<td>{d.GetProperty("step")}</td><td>{Number(d.GetProperty("canary_percent"), "0.##")}</td><td>{E(d.GetProperty("reason").GetString())}</td></tr>");
            }

            html.Append("</table>");
        }
        else
        {
            html.Append("<p id=\"phase\">no rollout: start the server with --variant and --rollout PLAN.json or --canary PERCENT.</p>");
        }

        html.Append(CultureInfo.InvariantCulture, $"<h2>Adapters</h2><table id=\"adapters\"><tr><th>model</th><th>folder</th><th>bytes</th><th>rank</th><th>last used (UTC)</th></tr>");
        foreach (var a in served.Adapters.List())
        {
            html.Append(CultureInfo.InvariantCulture, $"<tr><td>{E(served.BaseId + ":" + a.Name)}</td><td>{E(a.Source)}</td><td>{a.Bytes:N0}</td><td>{a.Rank}</td><td>{a.LastUsed:yyyy-MM-dd HH:mm:ss}</td></tr>");
        }

        html.Append("</table></body></html>");
        context.Response.StatusCode = 200;
        context.Response.ContentType = "text/html; charset=utf-8";
        context.Response.Headers.CacheControl = "no-store";
        await context.Response.WriteAsync(html.ToString(), context.RequestAborted);
    }

    private static string E(string? text) => WebUtility.HtmlEncode(text ?? "");

    private static string Number(JsonElement value, string format) =>
        value.ValueKind == JsonValueKind.Number ? value.GetDouble().ToString(format, CultureInfo.InvariantCulture) : "–";
}
