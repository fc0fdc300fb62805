using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Minnow.Benchmarking;
#if MINNOW_LLAMACPP
using Minnow.LlamaCpp;
#endif
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow bench MODEL --batch 1,2,4,8 [--vs llama.cpp]</c>: aggregate decode tokens/s and each sequence's
/// ms/token with N concurrent sequences through Minnow's engine — and llama.cpp's own batched decode (N sequence ids
/// in one <c>llama_decode</c> per step) on the same GGUF file — each N and engine in fresh processes, alternating,
/// medians reported.
/// </summary>
internal static class BenchBatches
{
    /// <summary>One child's measurement of N sequences.</summary>
    private sealed record Measurement(string Engine, int Sequences, double AggregateTokS, double MsPerToken, double PrefillSeconds, double PeakRssMb)
    {
        /// <summary>With --profile: milliseconds per decode step in each part (<see cref="StepProfile.Breakdown"/>).</summary>
        public IReadOnlyList<(string Part, double MsPerStep)> Profile { get; init; } = [];
    }

    public static int[] ParseList(string text)
    {
        var values = new List<int>();
        foreach (string part in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < 1 || n > 256)
            {
                throw new MinnowException($"--batch takes a list of sequence counts from 1 to 256, such as 1,2,4,8 (got '{text}').");
            }

            values.Add(n);
        }

        return values.Count > 0 ? [.. values.Distinct()] : throw new MinnowException($"--batch takes a list of sequence counts such as 1,2,4,8 (got '{text}').");
    }

    public static int Compare(ParseResult r, string benchFile, string idsPath, int[] batches, bool withLlamaCpp, int threads, int prompt, int gen, int runs, DType kvType,
        bool asJson, bool profile, CancellationToken ct)
    {
        var err = Err(r);
        var results = new List<(int N, Measurement Minnow, Measurement? Llama)>();
        foreach (int n in batches)
        {
            var minnowRuns = new List<Measurement>();
            var llamaRuns = new List<Measurement>();
            for (int run = 0; run < runs; run++)
            {
                ct.ThrowIfCancellationRequested();
                minnowRuns.Add(RunChild("minnow", n, benchFile, idsPath, threads, prompt, gen, kvType, profile, ct));
                err.WriteLine($"batch {n}, run {run + 1}/{runs} minnow: {Describe(minnowRuns[^1])}");
                if (withLlamaCpp)
                {
                    llamaRuns.Add(RunChild("llama.cpp", n, benchFile, idsPath, threads, prompt, gen, kvType, false, ct));
                    err.WriteLine($"batch {n}, run {run + 1}/{runs} llama.cpp: {Describe(llamaRuns[^1])}");
                }
            }

            results.Add((n, Median(minnowRuns), withLlamaCpp ? Median(llamaRuns) : null));
        }

        double single = results.FirstOrDefault(x => x.N == 1).Minnow?.AggregateTokS ?? double.NaN;
        var output = Out(r);
        if (asJson)
        {
            WriteJson(output, w =>
            {
                w.WriteString("file", benchFile);
                w.WriteNumber("threads", threads);
                w.WriteNumber("prompt_tokens", prompt);
                w.WriteNumber("gen_tokens", gen);
                w.WriteNumber("runs", runs);
                w.WriteString("kv_cache", kvType == DType.F16 ? "f16" : "f32");
                w.WriteStartArray("batches");
                foreach (var (n, m, l) in results)
                {
                    w.WriteStartObject();
                    w.WriteNumber("sequences", n);
                    w.Number("aggregate_decode_tok_s", m.AggregateTokS);
                    w.Number("ms_per_token_per_sequence", m.MsPerToken);
                    w.Number("peak_rss_mb", m.PeakRssMb);
                    w.Number("scaling_vs_one", m.AggregateTokS / single);
                    if (m.Profile.Count > 0)
                    {
                        w.WriteStartObject("profile_ms_per_step");
                        foreach (var (part, ms) in m.Profile)
                        {
                            w.Number(part, ms);
                        }

                        w.WriteEndObject();
                    }

                    if (l is not null)
                    {
                        w.Number("llama_cpp_aggregate_decode_tok_s", l.AggregateTokS);
                        w.Number("llama_cpp_ms_per_token_per_sequence", l.MsPerToken);
                        w.Number("llama_cpp_peak_rss_mb", l.PeakRssMb);
                        w.Number("ratio_aggregate_decode", m.AggregateTokS / l.AggregateTokS);
                    }

                    w.WriteEndObject();
                }

                w.WriteEndArray();
            });
            return 0;
        }

        output.WriteLine(benchFile);
        output.WriteLine($"{threads} threads, {prompt}-token prompts, then {gen} tokens decoded per sequence, {(kvType == DType.F16 ? "f16" : "f32")} KV cache; " +
            $"median of {runs} runs, each in its own process");
        output.WriteLine($"{"sequences",9} {"minnow tok/s",13} {"ms/token",9} {"× one",6}" + (withLlamaCpp ? $" {"llama.cpp tok/s",16} {"ms/token",9} {"minnow/llama.cpp",17}" : ""));
        foreach (var (n, m, l) in results)
        {
            output.WriteLine($"{n,9} {F(m.AggregateTokS, "0.0"),13} {F(m.MsPerToken, "0.00"),9} {F(m.AggregateTokS / single, "0.00"),6}" +
                (l is null ? "" : $" {F(l.AggregateTokS, "0.0"),16} {F(l.MsPerToken, "0.00"),9} {F(m.AggregateTokS / l.AggregateTokS, "0.00") + "×",17}"));
        }

        if (profile)
        {
            // Where a decode step's time goes, per batch size (medians of the runs, part by part).
            output.WriteLine();
            output.WriteLine($"decode step profile, ms per step (and per token), median of {runs} runs");
            output.WriteLine($"{"part",-30}" + string.Concat(results.Select(x => $" {"batch " + x.N.ToString(CultureInfo.InvariantCulture),18}")));
            var parts = results[0].Minnow.Profile.Select(p => p.Part).ToList();
            foreach (string part in parts.Append("total"))
            {
                output.WriteLine($"{part,-30}" + string.Concat(results.Select(x =>
                {
                    double ms = part == "total" ? x.Minnow.Profile.Sum(p => p.MsPerStep) : x.Minnow.Profile.First(p => p.Part == part).MsPerStep;
                    return $" {F(ms, "0.000") + " (" + F(ms / x.N, "0.000") + ")",18}";
                })));
            }
        }

        return 0;
    }

    /// <summary>The child process: one engine, N sequences, one measured run after a short warm-up; one JSON object.</summary>
    public static int SingleRun(ParseResult r, string engine, int sequences, string modelPath, int[] ids, int threads, int prompt, int gen, DType kvType,
        bool profile, CancellationToken ct)
    {
        var prompts = BatchedDecode.Prompts(ids, sequences, prompt);
        Measurement m;
        switch (engine)
        {
            case "minnow":
                {
                    using var pool = new WorkerPool(threads);
                    using var model = ModelLoader.LoadModel(modelPath, pool);
                    BatchedDecode.Run(model, sequences, ids, Math.Min(prompt, 16), Math.Min(gen, 8), kvType, ct);
                    var steps = profile ? new StepProfile() : null;
                    var result = BatchedDecode.Run(model, sequences, ids, prompt, gen, kvType, ct, steps);
                    m = new Measurement("minnow", sequences, result.AggregateDecodeTokensPerSecond, result.MsPerTokenPerSequence, result.PrefillSeconds, 0)
                    {
                        Profile = steps?.Breakdown() ?? [],
                    };
                    break;
                }

            case "llama.cpp":
                {
#if MINNOW_LLAMACPP
                    using var model = LlamaCppModel.Load(modelPath, new LlamaCppOptions
                    {
                        Threads = threads,
                        Sequences = sequences,
                        ContextSize = sequences * (prompt + gen),
                        BatchSize = sequences * prompt,
                    });
                    model.RunBatched(prompts.Select(p => p[..Math.Min(prompt, 16)]).ToArray(), Math.Min(gen, 8));
                    var result = model.RunBatched(prompts, gen - 1);
                    m = new Measurement("llama.cpp", sequences, result.AggregateDecodeTokensPerSecond, result.MsPerTokenPerSequence, result.PrefillSeconds, 0);
                    break;
#else
                    throw LlamaCppSupport.Unavailable("bench --batch --vs llama.cpp");
#endif
                }

            default:
                throw new MinnowException($"--engine must be minnow or llama.cpp (got '{engine}').");
        }

        double peakMb = ProcessMemory.PeakResidentBytes() / (1024.0 * 1024.0);
        WriteJson(Out(r), w =>
        {
            w.WriteString("engine", m.Engine);
            w.WriteNumber("sequences", sequences);
            w.Number("aggregate_decode_tok_s", m.AggregateTokS);
            w.Number("ms_per_token_per_sequence", m.MsPerToken);
            w.Number("prefill_seconds", m.PrefillSeconds);
            w.Number("peak_rss_mb", peakMb);
            if (m.Profile.Count > 0)
            {
                w.WriteStartArray("profile");
                foreach (var (part, ms) in m.Profile)
                {
                    w.WriteStartObject();
                    w.WriteString("part", part);
                    w.Number("ms_per_step", ms);
                    w.WriteEndObject();
                }

                w.WriteEndArray();
            }
        });
        return 0;
    }

    private static Measurement RunChild(string engine, int n, string model, string idsPath, int threads, int prompt, int gen, DType kvType, bool profile,
        CancellationToken ct)
    {
        string[] arguments =
        [
            "bench", model, "--engine", engine, "--single-run", "--ids-file", idsPath, "--batch", n.ToString(CultureInfo.InvariantCulture),
            "--threads", threads.ToString(CultureInfo.InvariantCulture),
            "--prompt", prompt.ToString(CultureInfo.InvariantCulture),
            "--gen", gen.ToString(CultureInfo.InvariantCulture),
            "--kv-cache", kvType == DType.F16 ? "f16" : "f32",
        ];
        string output = BenchCommand.RunSelf(profile ? [.. arguments, "--profile"] : arguments, engine, ct);
        try
        {
            using var doc = JsonDocument.Parse(output);
            var e = doc.RootElement;
            double Num(string key) => e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : double.NaN;
            var parts = e.TryGetProperty("profile", out var p) && p.ValueKind == JsonValueKind.Array
                ? p.EnumerateArray().Select(x => (x.GetProperty("part").GetString() ?? "", x.GetProperty("ms_per_step").GetDouble())).ToList()
                : [];
            return new Measurement(engine, n, Num("aggregate_decode_tok_s"), Num("ms_per_token_per_sequence"), Num("prefill_seconds"), Num("peak_rss_mb"))
            {
                Profile = parts,
            };
        }
        catch (JsonException)
        {
            throw new MinnowException($"the {engine} run printed no JSON: {output.Trim()}");
        }
    }

    private static Measurement Median(List<Measurement> runs) => new(
        runs[0].Engine,
        runs[0].Sequences,
        Statistics.Median(runs.Select(m => m.AggregateTokS)),
        Statistics.Median(runs.Select(m => m.MsPerToken)),
        Statistics.Median(runs.Select(m => m.PrefillSeconds)),
        Statistics.Median(runs.Select(m => m.PeakRssMb)))
    {
        Profile = runs[0].Profile.Select((part, k) => (part.Part, Statistics.Median(runs.Select(m => m.Profile.Count > k ? m.Profile[k].MsPerStep : double.NaN)))).ToList(),
    };

    private static string Describe(Measurement m) =>
        $"{F(m.AggregateTokS, "0.0")} tok/s in all, {F(m.MsPerToken, "0.00")} ms/token per sequence, peak RSS {F(m.PeakRssMb, "0")} MiB";
}
