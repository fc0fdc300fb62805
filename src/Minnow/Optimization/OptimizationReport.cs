using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;

namespace Minnow.Optimization;

/// <summary>Everything <c>minnow optimize</c> found, written as report.json and as a self-contained report.html.</summary>
public sealed record OptimizationReport
{
    public required string Model { get; init; }

    public required string EvaluationSource { get; init; }

    public required string CalibrationSource { get; init; }

    public required Budget Budget { get; init; }

    public required int Context { get; init; }

    public required SearchResult Search { get; init; }

    public CheckResult? Check { get; init; }

    /// <summary>The file written (null when no recipe met the budget).</summary>
    public string? Output { get; init; }

    /// <summary>The command that reproduces the chosen model.</summary>
    public string? Reproduce { get; init; }

    public required double Seconds { get; init; }

    public void WriteJson(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        WriteProperties(w);
        w.WriteEndObject();
    }

    /// <summary>The report's fields, inside an object the caller opened.</summary>
    public void WriteProperties(Utf8JsonWriter w)
    {
        w.WriteString("model", Model);
        w.WriteString("eval", EvaluationSource);
        w.WriteString("calib", CalibrationSource);
        w.WriteNumber("ctx", Context);
        w.WriteStartObject("budget");
        if (Budget.RamBytes is long ram)
        {
            w.WriteNumber("ram_bytes", ram);
        }

        if (Budget.LatencyMs is double latency)
        {
            w.WriteNumber("latency_ms", latency);
        }

        if (Budget.MaxWeightBytes is long size)
        {
            w.WriteNumber("max_weight_bytes", size);
        }

        w.WriteNumber("max_ppl_increase", Budget.MaxPerplexityIncrease);
        w.WriteNumber("ram_safety_margin", Budget.SafetyMargin);
        w.WriteEndObject();
        w.WritePropertyName("baseline");
        CandidateCache.Write(w, Search.Baseline);
        w.WriteStartArray("candidates");
        foreach (var c in Search.Candidates)
        {
            w.WriteStartObject();
            w.WriteString("recipe", c.Recipe.Name);
            w.WriteNumber("techniques", c.Recipe.Techniques);
            w.WriteBoolean("meets_budget", c.MeetsBudget);
            w.WriteBoolean("pareto", c.OnParetoFront);
            w.WriteBoolean("cached", c.FromCache);
            w.WriteBoolean("chosen", ReferenceEquals(c, Search.Chosen));
            w.WritePropertyName("measurement");
            CandidateCache.Write(w, c.Measurement);
            w.WriteEndObject();
        }

        w.WriteEndArray();
        if (Search.Chosen is { } chosen)
        {
            w.WriteString("chosen", chosen.Recipe.Name);
        }
        else
        {
            w.WriteNull("chosen");
        }

        if (Search.Closest is { } closest)
        {
            w.WriteString("closest", closest.Recipe.Name);
        }

        w.WriteString("verdict", Search.Verdict);
        if (Output is not null)
        {
            w.WriteString("output", Output);
        }

        if (Reproduce is not null)
        {
            w.WriteString("reproduce", Reproduce);
        }

        if (Check is { } check)
        {
            w.WriteStartObject("check");
            check.WriteProperties(w);
            w.WriteEndObject();
        }

        w.WriteNumber("seconds", Seconds);
    }

    /// <summary>A single HTML page with no external resources: tables and two SVG scatter charts.</summary>
    public string ToHtml()
    {
        var b = Search.Baseline;
        var h = new StringBuilder();
        h.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Minnow optimize report</title>\n<style>")
            .Append("body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}table{border-collapse:collapse;margin:1em 0}")
            .Append("td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}")
            .Append(".chosen{background:#e3f7e3;font-weight:bold}.PASS{color:#187a18;font-weight:bold}.FAIL{color:#b00;font-weight:bold}.INFO{color:#555}")
            .Append("figure{display:inline-block;margin:0 1em 1em 0}code{background:#f3f3f3;padding:2px 4px}</style></head><body>\n");
        h.Append("<h1>Minnow optimize</h1>\n<p>Model <code>").Append(E(Model)).Append("</code>; evaluation text <code>").Append(E(EvaluationSource))
            .Append("</code> (windows of ").Append(Context).Append(" tokens); calibration <code>").Append(E(CalibrationSource)).Append("</code>.</p>\n");
        h.Append("<p><strong>").Append(E(Search.Verdict)).Append("</strong></p>\n");
        h.Append("<h2>Budget</h2><p>").Append(E(BudgetText())).Append("</p>\n");
        h.Append("<h2>Baseline</h2><table><tr><th>weights</th><th>parameters</th><th>perplexity</th><th>prefill tok/s</th><th>decode ms/token</th><th>batch 4 ms/step</th><th>peak RSS</th></tr><tr>")
            .Append(Td(Mb(b.WeightBytes))).Append(Td(b.Parameters.ToString("N0", CultureInfo.InvariantCulture))).Append(Td(F(b.Perplexity, "0.00")))
            .Append(Td(F(b.PrefillTokensPerSecond, "0"))).Append(Td(F(b.DecodeMsPerToken, "0.00"))).Append(Td(F(b.Batch4MsPerStep, "0.00")))
            .Append(Td(b.PeakRssBytes is long rss ? Mb(rss) : "")).Append("</tr></table>\n");

        h.Append("<h2>Candidates</h2><table><tr><th>recipe</th><th>weights</th><th>est. RAM</th><th>quick ppl</th><th>perplexity</th><th>Δ ppl</th>")
            .Append("<th>decode ms/token</th><th>batch 4 ms/step</th><th>Pareto</th><th>meets budget</th></tr>\n");
        foreach (var c in Search.Candidates)
        {
            var m = c.Measurement;
            bool chosen = ReferenceEquals(c, Search.Chosen);
            h.Append(chosen ? "<tr class=\"chosen\">" : "<tr>").Append(Td(c.Recipe.Name + (chosen ? " (chosen)" : "")));
            if (m.Error is not null)
            {
                h.Append("<td colspan=\"9\" style=\"text-align:left\">").Append(E(m.Error)).Append("</td></tr>\n");
                continue;
            }

            double? delta = m.Perplexity is double p && b.Perplexity is double p0 ? ((p / p0) - 1) * 100 : null;
            h.Append(Td(Mb(m.WeightBytes))).Append(Td(m.EstimatedRamBytes is long r ? Mb(r) : "")).Append(Td(F(m.QuickPerplexity, "0.00")))
                .Append(Td(F(m.Perplexity, "0.00"))).Append(Td(delta is double d ? d.ToString("+0.00;-0.00;+0.00", CultureInfo.InvariantCulture) + " %" : ""))
                .Append(Td(F(m.DecodeMsPerToken, "0.00"))).Append(Td(F(m.Batch4MsPerStep, "0.00")))
                .Append(Td(c.OnParetoFront ? "yes" : "")).Append(Td(c.MeetsBudget ? "yes" : "no")).Append("</tr>\n");
        }

        h.Append("</table>\n");
        if (b.SpeedConditions is not null)
        {
            h.Append("<p>Speed columns: measured through the engine, ").Append(E(b.SpeedConditions)).Append("; batch 4 the same with four sequences.</p>\n");
        }

        h.Append("<h2>Pareto charts</h2>\n");
        h.Append(Chart("size-vs-perplexity", "weights (MiB)", m => m.WeightBytes / Benchmarking.Units.BytesPerMiB, Budget.MaxWeightBytes / Benchmarking.Units.BytesPerMiB));
        h.Append(Chart("latency-vs-perplexity", "decode latency (ms/token)", m => m.DecodeMsPerToken, Budget.LatencyMs));
        if (Check is { } check)
        {
            h.Append("<h2>Deployment checklist</h2><table><tr><th>check</th><th>result</th><th>figure</th></tr>\n");
            foreach (var item in check.Items)
            {
                h.Append("<tr>").Append(Td(item.Name)).Append("<td class=\"").Append(item.Status).Append("\">").Append(item.Status).Append("</td>")
                    .Append("<td style=\"text-align:left\">").Append(E(item.Figure)).Append("</td></tr>\n");
            }

            h.Append("</table>\n");
        }

        if (Reproduce is not null)
        {
            h.Append("<h2>Reproduce</h2><p><code>").Append(E(Reproduce)).Append("</code></p>\n");
        }

        h.Append("<p>").Append(F(Seconds, "0")).Append(" s.</p></body></html>\n");
        return h.ToString();
    }

    private string BudgetText()
    {
        var parts = new List<string>();
        if (Budget.RamBytes is long ram)
        {
            parts.Add($"RAM {Mb(ram)} (models must fit in {Mb((long)(ram * (1 - Budget.SafetyMargin)))}, a {Budget.SafetyMargin:P0} margin)");
        }

        if (Budget.LatencyMs is double latency)
        {
            parts.Add($"decode latency {latency:0.0} ms a token at batch 1");
        }

        if (Budget.MaxWeightBytes is long size)
        {
            parts.Add($"weights at most {Mb(size)}");
        }

        if (!Budget.HasLimits)
        {
            parts.Add($"no RAM, latency or size limit: the smallest model within {Budget.MaxPerplexityIncrease:P1} of the original's perplexity");
        }

        return string.Join("; ", parts);
    }

    /// <summary>An SVG scatter of perplexity against one figure; the chosen model green, the Pareto front blue, the rest grey.</summary>
    private string Chart(string id, string xLabel, Func<Measurement, double?> x, double? limit)
    {
        const int W = 520, H = 340, L = 60, R = 20, T = 20, B = 50;
        var points = Search.Candidates.Where(c => c.Measurement.Full && x(c.Measurement) is double)
            .Select(c => (Label: c.Recipe.Name, X: x(c.Measurement)!.Value, Y: c.Measurement.Perplexity!.Value,
                Color: ReferenceEquals(c, Search.Chosen) ? "#1a9a1a" : c.OnParetoFront ? "#2a62c9" : "#999"))
            .ToList();
        if (Search.Baseline.Full && x(Search.Baseline) is double bx)
        {
            points.Add(("original", bx, Search.Baseline.Perplexity!.Value, "#000"));
        }

        var s = new StringBuilder();
        s.Append("<figure><svg id=\"").Append(id).Append("\" xmlns=\"http://www.w3.org/2000/svg\" width=\"").Append(W).Append("\" height=\"").Append(H)
            .Append("\" viewBox=\"0 0 ").Append(W).Append(' ').Append(H).Append("\" role=\"img\"><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>");
        if (points.Count == 0)
        {
            s.Append("<text x=\"20\" y=\"40\">no candidate evaluated in full</text></svg></figure>\n");
            return s.ToString();
        }

        double x0 = Math.Min(0, points.Min(p => p.X)), x1 = points.Max(p => p.X) * 1.08, y0 = points.Min(p => p.Y), y1 = points.Max(p => p.Y);
        double pad = Math.Max(1e-6, (y1 - y0) * 0.1);
        y0 -= pad;
        y1 += pad;
        double Px(double v) => L + ((v - x0) / Math.Max(1e-12, x1 - x0) * (W - L - R));
        double Py(double v) => T + ((y1 - v) / Math.Max(1e-12, y1 - y0) * (H - T - B));
        s.Append(Line(L, H - B, W - R, H - B, "#333")).Append(Line(L, T, L, H - B, "#333"));
        for (int i = 0; i <= 4; i++)
        {
            double xv = x0 + ((x1 - x0) * i / 4), yv = y0 + ((y1 - y0) * i / 4);
            s.Append(Text(Px(xv), H - B + 16, xv.ToString("0.##", CultureInfo.InvariantCulture), "middle"))
                .Append(Text(L - 6, Py(yv) + 4, yv.ToString("0.00", CultureInfo.InvariantCulture), "end"));
        }

        s.Append(Text((L + W - R) / 2.0, H - 10, xLabel, "middle"));
        s.Append("<text x=\"14\" y=\"").Append(N((T + H - B) / 2.0)).Append("\" transform=\"rotate(-90 14 ").Append(N((T + H - B) / 2.0))
            .Append(")\" text-anchor=\"middle\" font-size=\"12\">perplexity</text>");
        if (limit is double lim && lim >= x0 && lim <= x1)
        {
            s.Append("<line x1=\"").Append(N(Px(lim))).Append("\" y1=\"").Append(T).Append("\" x2=\"").Append(N(Px(lim))).Append("\" y2=\"").Append(H - B)
                .Append("\" stroke=\"#b00\" stroke-dasharray=\"4 3\"/>").Append(Text(Px(lim) + 4, T + 12, "budget", "start"));
        }

        foreach (var p in points)
        {
            s.Append("<circle class=\"point\" cx=\"").Append(N(Px(p.X))).Append("\" cy=\"").Append(N(Py(p.Y))).Append("\" r=\"6\" fill=\"").Append(p.Color)
                .Append("\"><title>").Append(E($"{p.Label}: {p.X:0.###}, perplexity {p.Y:0.00}")).Append("</title></circle>")
                .Append(Text(Px(p.X) + 8, Py(p.Y) - 6, p.Label, "start", 10));
        }

        s.Append("</svg><figcaption>Perplexity against ").Append(E(xLabel)).Append(": chosen green, Pareto front blue, original black.</figcaption></figure>\n");
        return s.ToString();
    }

    private static string Line(double x1, double y1, double x2, double y2, string color) =>
        $"<line x1=\"{N(x1)}\" y1=\"{N(y1)}\" x2=\"{N(x2)}\" y2=\"{N(y2)}\" stroke=\"{color}\"/>";

    private static string Text(double x, double y, string text, string anchor, int size = 11) =>
        $"<text x=\"{N(x)}\" y=\"{N(y)}\" text-anchor=\"{anchor}\" font-size=\"{size}\">{E(text)}</text>";

    private static string N(double v) => v.ToString("0.#", CultureInfo.InvariantCulture);

    private static string Td(string text) => "<td>" + E(text) + "</td>";

    private static string E(string text) => WebUtility.HtmlEncode(text);

    private static string F(double? value, string format) => value is double v && double.IsFinite(v) ? v.ToString(format, CultureInfo.InvariantCulture) : "";

    private static string Mb(long bytes) => Benchmarking.Units.MiB(bytes);
}
