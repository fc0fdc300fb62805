using Microsoft.AspNetCore.Http;

namespace Minnow.Server;

/// <summary>
/// <c>/dashboard</c>: the rollout's variants, weights, per-variant requests, errors, TTFT and inter-token latency of
/// the last analysis window, the probe agreement and perplexity, the decision log, and the resident adapters.
/// </summary>
/// <remarks>
/// The page itself holds no data, so it is served without the API key: its script reads <c>GET /admin/rollout</c> and
/// <c>GET /v1/adapters</c> every two seconds, sending the key (entered in the page, or given once as
/// <c>/dashboard#key=KEY</c>, and kept in the tab's sessionStorage) as a bearer header. Without a valid key it shows
/// nothing but the key prompt; the data endpoints stay protected.
/// </remarks>
internal static class Dashboard
{
    public const string Path = "/dashboard";

    private const string Page = """
        <!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>minnow dashboard</title>
        <style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0 1.5em}
        td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f4f4f4}.rollback,.fail{color:#b00}.promote,.advance{color:#070}
        #auth{background:#fff4d6;padding:.5em;display:none}</style></head><body>
        <h1>minnow dashboard</h1>
        <form id="auth"><span id="auth-message">This server needs its API key.</span>
        <input id="key" type="password" autocomplete="off" placeholder="API key"> <button type="submit">Show</button></form>
        <div id="data"></div>
        <script>
        "use strict";
        const store = "minnow-api-key";
        if (location.hash.startsWith("#key=")) {
          sessionStorage.setItem(store, decodeURIComponent(location.hash.slice(5)));
          history.replaceState(null, "", location.pathname);
        }
        const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
        const num = (v, d) => typeof v === "number" ? v.toFixed(d) : "–";
        const pct = v => typeof v === "number" ? (v * 100).toFixed(1) + " %" : "–";
        async function get(path) {
          const key = sessionStorage.getItem(store);
          const r = await fetch(path, {headers: key ? {Authorization: "Bearer " + key} : {}, cache: "no-store"});
          if (r.status === 401) throw new Error("unauthorized");
          return r.status === 404 ? null : r.json();
        }
        function rolloutHtml(r) {
          if (!r) return '<p id="phase">no rollout: start the server with --variant and --rollout PLAN.json or --canary PERCENT.</p>';
          const ppl = r.probe_perplexity ? Object.entries(r.probe_perplexity).map(([k, v]) => esc(k) + " " + num(v, 3)).join(", ") : "–";
          let h = '<h2>Rollout</h2><p id="phase">phase <b>' + esc(r.phase) + "</b>, step " + r.step + " of " + r.steps_total + ", "
            + r.consecutive_failures + " of " + r.failures_to_rollback + ' failed checks in a row, probe agreement <span id="agreement">'
            + pct(r.probe_agreement) + '</span>, probe perplexity <span id="perplexity">' + ppl + "</span></p>"
            + '<table id="variants"><tr><th>variant</th><th>serves</th><th>weight %</th><th>requests</th><th>errors</th><th>error rate (window)</th><th>TTFT p95 ms (window)</th><th>inter-token p95 ms (window)</th></tr>';
          for (const [name, v] of Object.entries(r.variants)) {
            h += '<tr data-variant="' + esc(name) + '"><td>' + esc(name) + "</td><td>" + esc((r.served_by || {})[name]) + '</td><td class="weight">'
              + num(r.weights[name], 2) + "</td><td>" + v.requests + "</td><td>" + v.errors + "</td><td>" + pct(v.last_window_error_rate)
              + "</td><td>" + num(v.last_window_ttft_p95_ms, 1) + "</td><td>" + num(v.last_window_inter_token_p95_ms, 1) + "</td></tr>";
          }
          h += '</table><h2>Decisions</h2><table id="decisions"><tr><th>at (UTC)</th><th>action</th><th>step</th><th>canary %</th><th>reason</th></tr>';
          for (const d of [...r.decisions].reverse()) {
            h += '<tr class="' + esc(d.action) + '"><td>' + esc(d.at.replace("T", " ").slice(0, 19)) + "</td><td>" + esc(d.action) + "</td><td>" + d.step
              + "</td><td>" + num(d.canary_percent, 2) + "</td><td>" + esc(d.reason) + "</td></tr>";
          }
          return h + "</table>";
        }
        function adaptersHtml(a) {
          let h = '<h2>Adapters</h2><table id="adapters"><tr><th>model</th><th>folder</th><th>bytes</th><th>rank</th><th>last used (UTC)</th></tr>';
          for (const x of (a && a.data) || []) {
            h += "<tr><td>" + esc(x.id) + "</td><td>" + esc(x.path) + "</td><td>" + x.bytes + "</td><td>" + x.rank + "</td><td>" + esc(x.last_used_at.replace("T", " ").slice(0, 19)) + "</td></tr>";
          }
          return h + "</table>";
        }
        async function refresh() {
          try {
            const [r, a] = await Promise.all([get("/admin/rollout"), get("/v1/adapters")]);
            document.getElementById("auth").style.display = "none";
            document.getElementById("data").innerHTML = rolloutHtml(r) + adaptersHtml(a);
          } catch (e) {
            document.getElementById("data").innerHTML = "";
            document.getElementById("auth").style.display = "block";
            document.getElementById("auth-message").textContent = sessionStorage.getItem(store)
              ? "The API key was not accepted; enter it again." : "This server needs its API key.";
          }
        }
        document.getElementById("auth").addEventListener("submit", e => {
          e.preventDefault();
          sessionStorage.setItem(store, document.getElementById("key").value);
          document.getElementById("key").value = "";
          refresh();
        });
        refresh();
        setInterval(refresh, 2000);
        </script></body></html>
        """;

    /// <summary>The page: served to anyone, since it holds no data until its own requests are authorized.</summary>
    public static Task Write(HttpContext context)
    {
        context.Response.StatusCode = 200;
        context.Response.ContentType = "text/html; charset=utf-8";
        context.Response.Headers.CacheControl = "no-store";
        context.Response.Headers["Content-Security-Policy"] = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'";
        context.Response.Headers["Referrer-Policy"] = "no-referrer";
        return context.Response.WriteAsync(Page, context.RequestAborted);
    }
}
