using System.Text.Json;
using Minnow.Formats;

namespace Minnow.Optimization;

/// <summary>
/// Measurements of earlier runs, kept in a JSON file in the output folder so a second run of the same search
/// (same model, texts and settings: the <see cref="Key"/>) reuses them. Every new measurement is saved at once
/// (written to a temporary file, then renamed), so an interrupted run resumes where it stopped.
/// </summary>
public sealed class CandidateCache
{
    private readonly string _path;
    private readonly Dictionary<string, Measurement> _entries = new(StringComparer.Ordinal);

    public CandidateCache(string path, string key)
    {
        _path = path;
        Key = key;
        if (File.Exists(path))
        {
            try
            {
                using var document = JsonInput.ParseFile(path);
                var root = document.RootElement;
                if (root.TryGetProperty("key", out var k) && k.GetString() == key && root.TryGetProperty("candidates", out var list))
                {
                    foreach (var item in list.EnumerateArray())
                    {
                        var m = Read(item);
                        _entries[m.Name] = m;
                    }
                }
            }
            catch (Exception e) when (e is MinnowException or JsonException or InvalidOperationException or KeyNotFoundException or FormatException)
            {
                // A damaged cache is only a lost shortcut: start afresh.
                _entries.Clear();
            }
        }
    }

    /// <summary>What the measurements depend on: when it changes, the cache is ignored.</summary>
    public string Key { get; }

    public int Count => _entries.Count;

    public Measurement? TryGet(string name) => _entries.GetValueOrDefault(name);

    public void Put(Measurement measurement)
    {
        _entries[measurement.Name] = measurement;
        Formats.Safetensors.AtomicFile.Write(_path, stream =>
        {
            using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            w.WriteString("key", Key);
            w.WriteStartArray("candidates");
            foreach (var m in _entries.Values)
            {
                Write(w, m);
            }

            w.WriteEndArray();
            w.WriteEndObject();
        });
    }

    /// <summary>Writes a measurement as JSON (also the shape of report.json's entries).</summary>
    public static void Write(Utf8JsonWriter w, Measurement m)
    {
        w.WriteStartObject();
        w.WriteString("name", m.Name);
        w.WriteNumber("weight_bytes", m.WeightBytes);
        w.WriteNumber("parameters", m.Parameters);
        Number(w, "quick_ppl", m.QuickPerplexity);
        Number(w, "ppl", m.Perplexity);
        Number(w, "ppl_stderr", m.PerplexityStandardError);
        Number(w, "prefill_tok_s", m.PrefillTokensPerSecond);
        Number(w, "decode_ms_per_token", m.DecodeMsPerToken);
        Number(w, "batch4_ms_per_step", m.Batch4MsPerStep);
        if (m.EstimatedRamBytes is long ram)
        {
            w.WriteNumber("estimated_ram_bytes", ram);
        }

        if (m.PeakRssBytes is long rss)
        {
            w.WriteNumber("peak_rss_bytes", rss);
        }

        if (m.Error is not null)
        {
            w.WriteString("error", m.Error);
        }

        w.WriteEndObject();
    }

    private static void Number(Utf8JsonWriter w, string name, double? value)
    {
        if (value is double v && double.IsFinite(v))
        {
            w.WriteNumber(name, v);
        }
    }

    private static Measurement Read(JsonElement e)
    {
        double? D(string name) => e.TryGetProperty(name, out var p) ? p.GetDouble() : null;
        long? L(string name) => e.TryGetProperty(name, out var p) ? p.GetInt64() : null;
        return new Measurement
        {
            Name = e.GetProperty("name").GetString()!,
            WeightBytes = e.GetProperty("weight_bytes").GetInt64(),
            Parameters = e.GetProperty("parameters").GetInt64(),
            QuickPerplexity = D("quick_ppl") ?? double.NaN,
            Perplexity = D("ppl"),
            PerplexityStandardError = D("ppl_stderr"),
            PrefillTokensPerSecond = D("prefill_tok_s"),
            DecodeMsPerToken = D("decode_ms_per_token"),
            Batch4MsPerStep = D("batch4_ms_per_step"),
            EstimatedRamBytes = L("estimated_ram_bytes"),
            PeakRssBytes = L("peak_rss_bytes"),
            Error = e.TryGetProperty("error", out var err) ? err.GetString() : null,
        };
    }
}
