using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace Minnow.Serving;

/// <summary>A bounded load: how many concurrent streaming clients, for how long or how many requests, asking what.</summary>
public sealed record LoadTestOptions
{
    /// <summary>The server's base address, e.g. <c>http://127.0.0.1:8080</c>.</summary>
    public required Uri Url { get; init; }

    public int Concurrency { get; init; } = 1;

    /// <summary>Requests to send in all; null to send until <see cref="Duration"/> is over.</summary>
    public int? Requests { get; init; }

    /// <summary>How long to start new requests (requests running then still finish); null with <see cref="Requests"/>.</summary>
    public TimeSpan? Duration { get; init; }

    public string Prompt { get; init; } = "In the beginning";

    public int MaxTokens { get; init; } = 32;

    /// <summary>The model to ask for; null for the first one the server lists.</summary>
    public string? Model { get; init; }

    public string? ApiKey { get; init; }

    /// <summary>Longest a single request may take before it counts as an error.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromMinutes(2);

    public void Validate()
    {
        if (Concurrency is < 1 or > 1024)
        {
            throw new MinnowException($"--concurrency must be between 1 and 1024 (got {Concurrency}).");
        }

        if (Requests is < 1)
        {
            throw new MinnowException($"--requests must be positive (got {Requests}).");
        }

        if (Duration is { } d && (d <= TimeSpan.Zero || d > TimeSpan.FromHours(1)))
        {
            throw new MinnowException($"--duration must be between 0 and 3600 seconds (got {d.TotalSeconds}).");
        }

        if (Requests is null && Duration is null)
        {
            throw new MinnowException("give --requests N or --duration SECONDS: the load must be bounded.");
        }

        if (MaxTokens < 1)
        {
            throw new MinnowException($"--max-tokens must be positive (got {MaxTokens}).");
        }

        if (Url.Scheme is not ("http" or "https"))
        {
            throw new MinnowException($"the URL must be http:// or https:// (got {Url}).");
        }
    }
}

/// <summary>What a load test measured (latencies in milliseconds), the figures vLLM's serving benchmark reports.</summary>
public sealed record LoadTestResult
{
    public required string Model { get; init; }

    public required int Concurrency { get; init; }

    /// <summary>Requests that streamed to their end (finish_reason and [DONE]).</summary>
    public required int Completed { get; init; }

    /// <summary>Requests answered 429 (queue full).</summary>
    public required int Rejected { get; init; }

    /// <summary>Requests that failed otherwise (another status, a broken or truncated stream, a timeout).</summary>
    public required int Errors { get; init; }

    /// <summary>The first few error messages, for the report.</summary>
    public required IReadOnlyList<string> ErrorSamples { get; init; }

    public required double Seconds { get; init; }

    public required long OutputTokens { get; init; }

    public required long PromptTokens { get; init; }

    public double RequestsPerSecond => Seconds > 0 ? Completed / Seconds : 0;

    public double OutputTokensPerSecond => Seconds > 0 ? OutputTokens / Seconds : 0;

    public required double TtftP50 { get; init; }

    public required double TtftP99 { get; init; }

    public required double InterTokenP50 { get; init; }

    public required double InterTokenP99 { get; init; }

    public required double EndToEndP50 { get; init; }

    public required double EndToEndP99 { get; init; }
}

/// <summary>
/// A load generator for an OpenAI-compatible server: N clients each stream <c>/v1/completions</c> requests one after
/// another (temperature 0, <c>ignore_eos</c> so every request generates the same number of tokens) until the request
/// count or the duration is reached, timing the first token and the gaps between tokens.
/// </summary>
public static class LoadTester
{
    public static async Task<LoadTestResult> RunAsync(LoadTestOptions options, IProgress<int>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = options.Concurrency + 1, PooledConnectionLifetime = TimeSpan.FromMinutes(5) };
        using var http = new HttpClient(handler) { BaseAddress = options.Url, Timeout = Timeout.InfiniteTimeSpan };
        if (options.ApiKey is not null)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", options.ApiKey);
        }

        string model = options.Model ?? await FirstModel(http, cancellation).ConfigureAwait(false);
        byte[] body = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, object>
        {
            ["model"] = model,
            ["prompt"] = options.Prompt,
            ["max_tokens"] = options.MaxTokens,
            ["temperature"] = 0,
            ["ignore_eos"] = true,
            ["stream"] = true,
            ["stream_options"] = new Dictionary<string, object> { ["include_usage"] = true },
        }, LoadTestJson.Default.DictionaryStringObject);

        var ttft = new List<double>();
        var itl = new List<double>();
        var e2e = new List<double>();
        var errors = new List<string>();
        int completed = 0, rejected = 0, errorCount = 0, claimed = 0;
        long outputTokens = 0, promptTokens = 0;
        var clock = Stopwatch.StartNew();
        object gate = new();

        bool Claim()
        {
            if (cancellation.IsCancellationRequested || options.Duration is { } d && clock.Elapsed >= d)
            {
                return false;
            }

            return options.Requests is not { } r || Interlocked.Increment(ref claimed) <= r;
        }

        async Task Client()
        {
            var gaps = new List<double>();
            while (Claim())
            {
                gaps.Clear();
                var one = await OneRequest(http, body, gaps, options.RequestTimeout, cancellation).ConfigureAwait(false);
                lock (gate)
                {
                    switch (one.Outcome)
                    {
                        case Outcome.Completed:
                            completed++;
                            ttft.Add(one.TtftMs);
                            e2e.Add(one.TotalMs);
                            itl.AddRange(gaps);
                            outputTokens += one.OutputTokens;
                            promptTokens += one.PromptTokens;
                            break;
                        case Outcome.Rejected:
                            rejected++;
                            break;
                        default:
                            errorCount++;
                            if (errors.Count < 5)
                            {
                                errors.Add(one.Error ?? "error");
                            }

                            break;
                    }

                    progress?.Report(completed + rejected + errorCount);
                }

                if (one.Outcome == Outcome.Rejected)
                {
                    // The server asked to come back later (Retry-After); a short pause keeps the client from spinning.
                    await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
                }
            }
        }

        await Task.WhenAll(Enumerable.Range(0, options.Concurrency).Select(_ => Task.Run(Client, CancellationToken.None))).ConfigureAwait(false);
        double seconds = clock.Elapsed.TotalSeconds;
        return new LoadTestResult
        {
            Model = model,
            Concurrency = options.Concurrency,
            Completed = completed,
            Rejected = rejected,
            Errors = errorCount,
            ErrorSamples = errors,
            Seconds = seconds,
            OutputTokens = outputTokens,
            PromptTokens = promptTokens,
            TtftP50 = Percentile(ttft, 50),
            TtftP99 = Percentile(ttft, 99),
            InterTokenP50 = Percentile(itl, 50),
            InterTokenP99 = Percentile(itl, 99),
            EndToEndP50 = Percentile(e2e, 50),
            EndToEndP99 = Percentile(e2e, 99),
        };
    }

    private enum Outcome
    {
        Completed,
        Rejected,
        Failed,
    }

    private readonly record struct RequestOutcome(Outcome Outcome, double TtftMs, double TotalMs, int OutputTokens, int PromptTokens, string? Error);

    private static async Task<RequestOutcome> OneRequest(HttpClient http, byte[] body, List<double> gaps, TimeSpan timeout, CancellationToken cancellation)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        limit.CancelAfter(timeout);
        long start = Stopwatch.GetTimestamp();
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = new ByteArrayContent(body) };
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, limit.Token).ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.TooManyRequests)
            {
                return new RequestOutcome(Outcome.Rejected, 0, 0, 0, 0, null);
            }

            if (!response.IsSuccessStatusCode)
            {
                string text = await response.Content.ReadAsStringAsync(limit.Token).ConfigureAwait(false);
                return Failed($"HTTP {(int)response.StatusCode}: {text[..Math.Min(200, text.Length)]}");
            }

            using var stream = await response.Content.ReadAsStreamAsync(limit.Token).ConfigureAwait(false);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            long first = 0, last = 0;
            int tokens = 0, usageOut = -1, usagePrompt = 0;
            bool finished = false, done = false;
            while (await reader.ReadLineAsync(limit.Token).ConfigureAwait(false) is { } line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal))
                {
                    continue;
                }

                string data = line[6..];
                if (data == "[DONE]")
                {
                    done = true;
                    break;
                }

                using var json = JsonDocument.Parse(data);
                var root = json.RootElement;
                if (root.TryGetProperty("error", out var error))
                {
                    return Failed($"stream error: {error.GetRawText()}");
                }

                if (root.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                {
                    usageOut = usage.GetProperty("completion_tokens").GetInt32();
                    usagePrompt = usage.GetProperty("prompt_tokens").GetInt32();
                }

                if (root.GetProperty("choices") is { ValueKind: JsonValueKind.Array } choices && choices.GetArrayLength() > 0)
                {
                    var choice = choices[0];
                    if (choice.TryGetProperty("finish_reason", out var finish) && finish.ValueKind == JsonValueKind.String)
                    {
                        finished = true;
                        continue;
                    }

                    long now = Stopwatch.GetTimestamp();
                    tokens++;
                    if (first == 0)
                    {
                        first = now;
                    }
                    else
                    {
                        gaps.Add(Stopwatch.GetElapsedTime(last, now).TotalMilliseconds);
                    }

                    last = now;
                }
            }

            if (!done || !finished)
            {
                return Failed("the stream ended before its finish_reason and [DONE] (truncated).");
            }

            double total = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            double ttft = first == 0 ? total : Stopwatch.GetElapsedTime(start, first).TotalMilliseconds;
            return new RequestOutcome(Outcome.Completed, ttft, total, usageOut >= 0 ? usageOut : tokens, usagePrompt, null);
        }
        catch (OperationCanceledException) when (!cancellation.IsCancellationRequested)
        {
            return Failed($"no answer within {timeout.TotalSeconds:0} s.");
        }
        catch (HttpRequestException e)
        {
            return Failed(e.Message);
        }
        catch (IOException e)
        {
            return Failed(e.Message);
        }
        catch (JsonException e)
        {
            return Failed($"a garbled event: {e.Message}");
        }

        static RequestOutcome Failed(string message) => new(Outcome.Failed, 0, 0, 0, 0, message);
    }

    private static async Task<string> FirstModel(HttpClient http, CancellationToken cancellation)
    {
        try
        {
            using var response = await http.GetAsync("v1/models", cancellation).ConfigureAwait(false);
            string text = await response.Content.ReadAsStringAsync(cancellation).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
            {
                throw new MinnowException($"{http.BaseAddress}v1/models answered {(int)response.StatusCode}: {text[..Math.Min(200, text.Length)]}");
            }

            using var json = JsonDocument.Parse(text);
            var data = json.RootElement.GetProperty("data");
            return data.GetArrayLength() > 0 ? data[0].GetProperty("id").GetString()! : throw new MinnowException($"{http.BaseAddress} serves no model.");
        }
        catch (HttpRequestException e)
        {
            throw new MinnowException($"cannot reach {http.BaseAddress}: {e.Message}");
        }
        catch (JsonException)
        {
            throw new MinnowException($"{http.BaseAddress}v1/models did not answer OpenAI's model list.");
        }
    }

    /// <summary>The nearest-rank percentile (0 for no samples).</summary>
    public static double Percentile(List<double> values, double p)
    {
        if (values.Count == 0)
        {
            return 0;
        }

        values.Sort();
        int rank = (int)Math.Ceiling(p / 100 * values.Count);
        return values[Math.Clamp(rank - 1, 0, values.Count - 1)];
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(Dictionary<string, object>))]
[System.Text.Json.Serialization.JsonSerializable(typeof(int))]
[System.Text.Json.Serialization.JsonSerializable(typeof(bool))]
[System.Text.Json.Serialization.JsonSerializable(typeof(string))]
internal sealed partial class LoadTestJson : System.Text.Json.Serialization.JsonSerializerContext;
