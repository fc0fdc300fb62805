using System.Diagnostics;
using Minnow.Inference;
using Minnow.Serving;
using Prometheus;

namespace Minnow.Server;

/// <summary>
/// The server's Prometheus metrics (prometheus-net, one registry per server so several can share a process), named
/// as vLLM's are but in the <c>minnow_</c> namespace, each labelled with the model. Engine gauges are read at scrape
/// time.
/// </summary>
internal sealed class ServerMetrics
{
    private static readonly double[] LatencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40, 80];

    private readonly Histogram.Child _ttft, _interToken, _endToEnd, _queue;
    private readonly Counter.Child _promptTokens, _generatedTokens, _prefixHits, _prefixLookups;
    private readonly Gauge.Child _running, _waiting, _pagesUsed, _pagesTotal, _pagesCached;
    private readonly Counter _finished, _http, _updates;
    private readonly string _model;
    private Engine? _engine;

    public ServerMetrics(string model)
    {
        _model = model;
        Registry = Metrics.NewCustomRegistry();
        var factory = Metrics.WithCustomRegistry(Registry);
        string[] labels = ["model"];
        Histogram.Child Latency(string name, string help) => factory.CreateHistogram(name, help,
            new HistogramConfiguration { LabelNames = labels, Buckets = LatencyBuckets }).WithLabels(model);
        Counter.Child Count(string name, string help) => factory.CreateCounter(name, help, labels).WithLabels(model);
        Gauge.Child Level(string name, string help) => factory.CreateGauge(name, help, labels).WithLabels(model);

        _ttft = Latency("minnow_time_to_first_token_seconds", "Time from a request's arrival to its first generated token.");
        _interToken = Latency("minnow_inter_token_latency_seconds", "Time between consecutive generated tokens of a request.");
        _endToEnd = Latency("minnow_e2e_request_latency_seconds", "Time from a request's arrival to its last token.");
        _queue = Latency("minnow_request_queue_time_seconds", "Time a request waited before it joined the batch.");
        _promptTokens = Count("minnow_prompt_tokens_total", "Prompt tokens of finished requests.");
        _generatedTokens = Count("minnow_generation_tokens_total", "Tokens generated for finished requests.");
        _prefixHits = Count("minnow_prefix_cache_hits_total", "KV pages found already computed (a shared prompt prefix).");
        _prefixLookups = Count("minnow_prefix_cache_queries_total", "KV pages looked up in the prefix cache.");
        _running = Level("minnow_requests_running", "Sequences in the running batch.");
        _waiting = Level("minnow_requests_waiting", "Sequences waiting to join the batch.");
        _pagesUsed = Level("minnow_kv_pages_used", "KV cache pages held by sequences.");
        _pagesTotal = Level("minnow_kv_pages_total", "KV cache pages in the pool.");
        _pagesCached = Level("minnow_kv_pages_cached", "Free KV pages that still hold a reusable prompt prefix.");
        _finished = factory.CreateCounter("minnow_requests_finished_total", "Finished requests by finish reason (stop, length, cancelled, error).", ["model", "finish_reason"]);
        _http = factory.CreateCounter("minnow_http_requests_total", "HTTP responses by status code.", ["model", "status"]);
        _updates = factory.CreateCounter("minnow_updates_total", "Signed-update polls that activated a new version or refused one.", ["model", "outcome"]);
        Registry.AddBeforeCollectCallback(Refresh);
    }

    public CollectorRegistry Registry { get; }

    public void Attach(Engine engine) => _engine = engine;

    public void Update(string outcome) => _updates.WithLabels(_model, outcome).Inc();

    private void Refresh()
    {
        if (_engine is not { } engine)
        {
            return;
        }

        _running.Set(engine.Running);
        _waiting.Set(engine.Waiting);
        var pages = engine.Pages;
        _pagesUsed.Set(pages.PagesInUse);
        _pagesTotal.Set(pages.PageCount);
        _pagesCached.Set(pages.PagesCached);
        _prefixHits.IncTo(pages.PrefixHits);
        _prefixLookups.IncTo(pages.PrefixLookups);
    }

    public void HttpStatus(int status) => _http.WithLabels(_model, status.ToString(System.Globalization.CultureInfo.InvariantCulture)).Inc();

    public void InterToken(long from, long to) => _interToken.Observe(Stopwatch.GetElapsedTime(from, to).TotalSeconds);

    /// <summary>Records a finished completion's latencies and tokens.</summary>
    public void Finished(TextCompletion completion)
    {
        var s = completion.Sequence;
        if (s.AdmittedAt != 0)
        {
            _queue.Observe(Stopwatch.GetElapsedTime(s.SubmittedAt, s.AdmittedAt).TotalSeconds);
        }

        if (s.FirstTokenAt != 0)
        {
            _ttft.Observe(Stopwatch.GetElapsedTime(s.SubmittedAt, s.FirstTokenAt).TotalSeconds);
        }

        _endToEnd.Observe(Stopwatch.GetElapsedTime(s.SubmittedAt, s.FinishedAt != 0 ? s.FinishedAt : Stopwatch.GetTimestamp()).TotalSeconds);
        _promptTokens.Inc(completion.PromptTokens);
        _generatedTokens.Inc(completion.CompletionTokens);
        string reason = s.FinishReason == FinishReason.Error ? "error" : completion.Finish switch
        {
            CompletionFinish.Stop => "stop",
            CompletionFinish.Length => "length",
            CompletionFinish.Error => "error",
            _ => "cancelled",
        };
        _finished.WithLabels(_model, reason).Inc();
    }
}
