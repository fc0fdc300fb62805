using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Minnow.Inference;
using Minnow.Sealing;
using Minnow.Serving;
using Minnow.Tensors;
using Prometheus;

namespace Minnow.Server;

/// <summary>Where a server is in its life: /health answers 200 only when <see cref="Ready"/>.</summary>
public enum ServerState
{
    Loading,
    Ready,
    Draining,
    Stopped,
    Failed,
}

/// <summary>
/// <c>minnow serve</c>: an OpenAI-compatible HTTP server on Kestrel. It listens first (so /health can say it is
/// loading), then loads the model and starts an <see cref="Engine"/>; completions run as engine sequences, streamed
/// as server-sent events. A full queue is answered 429 with Retry-After; a client that goes away cancels its
/// sequence; <see cref="StopAsync"/> stops admitting, lets running requests finish within the drain deadline, and
/// closes.
/// </summary>
public sealed class MinnowServer : IAsyncDisposable
{
    private readonly ServerOptions _options;
    private readonly WebApplication _app;
    private readonly ServerMetrics _metrics;
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    private volatile ServerState _state = ServerState.Loading;
    private WorkerPool? _pool;
    private ActiveSlot<ServedModel>? _slot;
    private ServerUpdates? _updates;
    private ServedModels? _served;
    private int _active;

    private MinnowServer(ServerOptions options, WebApplication app)
    {
        _options = options;
        _app = app;
        ModelId = options.ModelId ?? ModelName(options.ModelPath);
        _metrics = new ServerMetrics(ModelId);
    }

    /// <summary>The name clients give as <c>model</c>.</summary>
    public string ModelId { get; }

    public ServerState State => _state;

    /// <summary>The address the server listens on, e.g. <c>http://127.0.0.1:8080</c> (the real port when 0 was asked).</summary>
    public string Url { get; private set; } = "";

    /// <summary>Completes when the model is loaded and requests are served; faults when loading failed.</summary>
    public Task Ready => _ready.Task;

    /// <summary>The engine of the model in service (for reporting; null until loaded).</summary>
    public Engine? Engine => _slot?.Current.Engine;

    /// <summary>The version of the model in service: a sealed package's version, 0 for a plain model.</summary>
    public long ModelVersion => _slot?.Version ?? 0;

    /// <summary>The signed updates, when <see cref="ServerSealing.UpdateSource"/> is set (null until loaded).</summary>
    public ServerUpdates? Updates => _updates;

    /// <summary>Lines saying which adapters and rollout variants are being served, for the command line to print once ready.</summary>
    public IReadOnlyList<string> OperationsSummary() => _served?.Summary() ?? [];

    /// <summary>Starts listening, then loads the model in the background (see <see cref="Ready"/>).</summary>
    public static async Task<MinnowServer> StartAsync(ServerOptions options, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        options.Sealing.Validate();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        // The command line owns Ctrl+C and SIGTERM (it drains first); the host must not stop on them by itself.
        builder.Services.AddSingleton<IHostLifetime, HostLifetimeOwnedByCaller>();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = 4 << 20;
            k.AddServerHeader = false;
            if (options.Host is "localhost")
            {
                k.ListenLocalhost(options.Port);
            }
            else if (IPAddress.TryParse(options.Host, out var address))
            {
                k.Listen(address, options.Port);
            }
            else
            {
                throw new MinnowException($"--host must be an IP address or localhost (got '{options.Host}').");
            }
        });
        var app = builder.Build();
        var server = new MinnowServer(options, app);
        server.Map();
        try
        {
            await app.StartAsync(cancellation).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or System.Net.Sockets.SocketException)
        {
            // Kestrel's AddressInUseException is an InvalidOperationException: a user's mistake, said in one line.
            await app.DisposeAsync().ConfigureAwait(false);
            throw new MinnowException($"cannot listen on {options.Host}:{options.Port}: {e.Message}");
        }

        server.Url = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
            .Features.Get<IServerAddressesFeature>()!.Addresses.First().Replace("[::]", "127.0.0.1", StringComparison.Ordinal);
        _ = Task.Run(server.Load, CancellationToken.None);
        return server;
    }

    private void Load()
    {
        try
        {
            _pool = _options.Threads > 0 ? new WorkerPool(_options.Threads) : null;
            var served = ServedModel.Load(_options.ModelPath, _options, _pool);
            _slot = new ActiveSlot<ServedModel>(served, served.Version);
            _metrics.Attach(served.Engine);
            if (_options.Sealing.UpdateSource is not null)
            {
                _updates = ServerUpdates.Start(this, _options, _slot, _pool, _metrics);
            }

            // The base model's slot for routing: requests it serves take the model in service from _slot (which
            // signed updates may swap); variants and adapters are resolved against it.
            _served = new ServedModels(_options, ModelId, new ModelSlot(_options.ModelPath, served.Model, served.Engine, served.Completer, owned: false), _metrics.Registry);
            _state = ServerState.Ready;
            _ready.TrySetResult();
        }
        catch (Exception e)
        {
            _state = ServerState.Failed;
            _ready.TrySetException(e);
        }
    }

    /// <summary>
    /// Stops admitting (new requests get 503), lets running and queued requests finish within
    /// <paramref name="deadline"/> (then cancels what is left), waits for their responses, and stops listening.
    /// </summary>
    public async Task StopAsync(TimeSpan? deadline = null)
    {
        if (_state is ServerState.Stopped)
        {
            return;
        }

        _state = ServerState.Draining;
        if (_served is not null)
        {
            await _served.StopAsync().ConfigureAwait(false);
            var baseEngine = _served.Base.Engine;
            await Task.WhenAll(_served.Variants.Values.Select(v => v.Slot.Engine).Where(e => e != baseEngine).Distinct()
                .Select(e => e.DrainAsync(deadline ?? _options.DrainDeadline))).ConfigureAwait(false);
        }

        if (_updates is not null)
        {
            await _updates.StopAsync().ConfigureAwait(false);
        }

        if (_slot is not null)
        {
            await _slot.Current.Engine.DrainAsync(deadline ?? _options.DrainDeadline).ConfigureAwait(false);
        }

        // The last tokens are being written: give the handlers a moment to send them and [DONE].
        var wait = System.Diagnostics.Stopwatch.StartNew();
        while (Volatile.Read(ref _active) > 0 && wait.Elapsed < TimeSpan.FromSeconds(5))
        {
            await Task.Delay(10).ConfigureAwait(false);
        }

        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        await _app.StopAsync(stop.Token).ConfigureAwait(false);
        _state = ServerState.Stopped;
    }

    public async ValueTask DisposeAsync()
    {
        if (_state is not ServerState.Stopped)
        {
            await StopAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
        }

        await _app.DisposeAsync().ConfigureAwait(false);
        try
        {
            await Ready.ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Loading failed: there is nothing more to release than what was made.
        }

        _served?.Dispose();
        _slot?.Dispose();
        _pool?.Dispose();
    }

    /// <summary>A model's default name: its folder or file name without extension (models/default → "default").</summary>
    public static string ModelName(string path)
    {
        string trimmed = path.TrimEnd('/', '\\');
        return Directory.Exists(trimmed) ? Path.GetFileName(trimmed) : Path.GetFileNameWithoutExtension(trimmed);
    }

    private void Map()
    {
        _app.Use(async (context, next) =>
        {
            context.Response.OnStarting(() =>
            {
                _metrics.HttpStatus(context.Response.StatusCode);
                return Task.CompletedTask;
            });
            if (_options.ApiKey is { } key && NeedsKey(context.Request.Path) && !HasKey(context.Request, key))
            {
                await OpenAiWriter.WriteError(context, new ApiError(401, "a valid API key is required: send 'Authorization: Bearer KEY'.", "invalid_request_error", null, "invalid_api_key"));
                return;
            }

            await next(context);
        });

        PlaygroundPage.Map(_app);
        _app.MapGet("/health", Health);
        _app.MapGet("/metrics", ExportMetrics);
        _app.MapGet("/v1/models", context => Guard(context, ListModels));
        _app.MapGet("/v1/models/{id}", context => Guard(context, GetModel));
        _app.MapPost("/v1/chat/completions", context => Guard(context, c => Complete(c, chat: true)));
        _app.MapPost("/v1/completions", context => Guard(context, c => Complete(c, chat: false)));
        _app.MapPost("/tokenize", context => Guard(context, Tokenize));
        _app.MapPost("/detokenize", context => Guard(context, Detokenize));
        OperationsEndpoints.Map(_app, Guard, () => _served!);
        _app.MapFallback(context => OpenAiWriter.WriteError(context,
            new ApiError(404, $"no route {context.Request.Method} {context.Request.Path}.", "invalid_request_error", null, "not_found")));
    }

    private static bool NeedsKey(PathString path) =>
        !path.Equals("/health") && !path.Equals("/metrics") && !path.Equals(PlaygroundPage.Path) && !OperationsEndpoints.IsPublicPage(path);

    private static bool HasKey(HttpRequest request, string key)
    {
        string header = request.Headers.Authorization.ToString();
        const string bearer = "Bearer ";
        if (!header.StartsWith(bearer, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        return CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header[bearer.Length..].Trim()), Encoding.UTF8.GetBytes(key));
    }

    private Task Health(HttpContext context)
    {
        var state = _state;
        string name = state switch
        {
            ServerState.Ready => "ok",
            ServerState.Loading => "loading",
            ServerState.Failed => "failed",
            _ => "draining",
        };
        return OpenAiWriter.WriteJson(context, state == ServerState.Ready ? 200 : 503, w =>
        {
            w.WriteString("status", name);
            if (_slot is { } slot)
            {
                ServerHealth.Write(w, slot.Current, _options);
            }
        });
    }

    private async Task ExportMetrics(HttpContext context)
    {
        context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        await _metrics.Registry.CollectAndExportAsTextAsync(context.Response.Body, context.RequestAborted);
    }

    /// <summary>Runs a handler: errors become OpenAI's error shape, and nothing a client sends is a 500.</summary>
    private async Task Guard(HttpContext context, Func<HttpContext, Task> handler)
    {
        Interlocked.Increment(ref _active);
        try
        {
            if (_state != ServerState.Ready)
            {
                throw ApiError.Unavailable(_state == ServerState.Loading ? "the model is still loading; try again shortly." : "the server is shutting down.");
            }

            await handler(context);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; its sequence was cancelled with the request.
        }
        catch (Exception e) when (!context.Response.HasStarted)
        {
            var error = e switch
            {
                ApiError api => api,
                EngineBusyException => new ApiError(429, e.Message, "rate_limit_error", null, "queue_full"),
                EngineStoppingException => ApiError.Unavailable(e.Message),
                MinnowException when _state != ServerState.Ready => ApiError.Unavailable(e.Message),
                MinnowException => ApiError.BadRequest(e.Message),
                JsonException => ApiError.BadRequest($"the body is not valid JSON: {e.Message}"),
                BadHttpRequestException bad => new ApiError(bad.StatusCode, bad.Message, "invalid_request_error"),
                _ => new ApiError(500, $"internal error: {e.Message}", "server_error"),
            };
            await OpenAiWriter.WriteError(context, error);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The connection broke while streaming.
        }
        finally
        {
            Interlocked.Decrement(ref _active);
        }
    }

    private Task ListModels(HttpContext context) => OpenAiWriter.WriteJson(context, 200, w =>
    {
        w.WriteString("object", "list");
        w.WriteStartArray("data");
        w.WriteStartObject();
        ModelFields(w);
        w.WriteEndObject();
        OperationsEndpoints.WriteAdapterModels(w, _served!, _created, _slot!.Current.Engine.ContextSize);
        w.WriteEndArray();
    });

    private Task GetModel(HttpContext context)
    {
        string? id = context.Request.RouteValues["id"] as string;
        return id != ModelId
            ? OperationsEndpoints.WriteAdapterModel(context, _served!, id, _created, _slot!.Current.Engine.ContextSize)
            : OpenAiWriter.WriteJson(context, 200, ModelFields);
    }

    private void ModelFields(Utf8JsonWriter w)
    {
        w.WriteString("id", ModelId);
        w.WriteString("object", "model");
        w.WriteNumber("created", _created);
        w.WriteString("owned_by", "minnow");
        w.WriteNumber("max_model_len", _slot!.Current.Engine.ContextSize);
    }

    private static async Task<JsonElement> ReadBody(HttpContext context)
    {
        using var doc = await JsonDocument.ParseAsync(context.Request.Body, default, context.RequestAborted);
        return doc.RootElement.Clone();
    }

    private async Task Complete(HttpContext context, bool chat)
    {
        long arrived = System.Diagnostics.Stopwatch.GetTimestamp();

        // The body exactly as sent: a signed output names its SHA-256.
        byte[] raw = await OutputSigning.ReadBodyAsync(context);
        JsonElement body;
        using (var doc = JsonDocument.Parse(raw))
        {
            body = doc.RootElement.Clone();
        }

        var route = _served!.Resolve(context, body);
        context.Response.Headers[ServedModels.VariantHeader] = route.Served;

        // The base model is whichever version is in service now (a signed update may have swapped it); the lease
        // keeps it alive until this response is done. Whole-model variants are their own.
        using var lease = _slot!.Acquire();
        bool onBase = route.Slot == _served.Base;
        var completer = onBase ? lease.Item.Completer : route.Slot.Completer;
        var prompts = completer.Prompts;
        var parsed = OpenAiRequests.Parse(body, chat, prompts, route.ModelName);
        var signing = _options.Sealing.OutputSigner is { } signer ? new OutputSigning(signer, raw, onBase ? lease.Item.Digest : ServedModel.DigestOf(route.Slot.Model)) : null;
        if (route.Delay > TimeSpan.Zero)
        {
            await Task.Delay(route.Delay, context.RequestAborted); // test-only injected latency (ServerOptions.TestOnlyInjectedLatency)
        }

        TextCompletion completion;
        try
        {
            completion = completer.Start(parsed.Completion with { Adapter = route.Adapter }, context.RequestAborted);
        }
        catch (Exception e) when (e is not (EngineBusyException or EngineStoppingException or OperationCanceledException or MinnowException or ApiError))
        {
            _served.Record(route, failed: true, arrived, null);
            throw;
        }

        bool failed = false;
        try
        {
            if (parsed.Stream)
            {
                await CompletionStreams.Stream(context, completion, parsed, route.ModelName, prompts, _metrics, signing);
            }
            else
            {
                await CompletionStreams.Whole(context, completion, parsed, route.ModelName, prompts, _metrics, signing);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException || !context.RequestAborted.IsCancellationRequested)
        {
            failed = true;
            throw;
        }
        finally
        {
            completion.Sequence.Cancel();
            if (completion.Finish == CompletionFinish.None)
            {
                await completion.Sequence.Completion.ConfigureAwait(false);
            }

            _metrics.Finished(completion);
            if (!context.RequestAborted.IsCancellationRequested)
            {
                _served.Record(route, failed || completion.Finish is CompletionFinish.Error or CompletionFinish.Cancelled || completion.Sequence.FinishReason == FinishReason.Error, arrived, completion);
            }
        }
    }

    private async Task Tokenize(HttpContext context)
    {
        var body = await ReadBody(context);
        using var lease = _slot!.Acquire();
        var prompts = lease.Item.Completer.Prompts;
        int[] tokens;
        if (body.ValueKind == JsonValueKind.Object && body.TryGetProperty("messages", out _))
        {
            tokens = OpenAiRequests.Parse(body, chat: true, prompts, ModelId).Completion.Prompt.ToArray();
        }
        else
        {
            var fields = new OpenAiRequests.Fields(body.ValueKind == JsonValueKind.Object ? body : throw ApiError.BadRequest("the request body must be a JSON object."));
            string text = fields.String("content") ?? fields.String("prompt") ?? throw ApiError.BadRequest("content (the text to tokenize) is required.", "content");
            bool special = fields.Bool("add_special") ?? false;
            tokens = special ? prompts.EncodeText(text) : [.. prompts.Tokenizer.Encode(text, addSpecial: false, parseSpecial: false)];
        }

        await OpenAiWriter.WriteJson(context, 200, w =>
        {
            w.WriteStartArray("tokens");
            foreach (int t in tokens)
            {
                w.WriteNumberValue(t);
            }

            w.WriteEndArray();
            w.WriteNumber("count", tokens.Length);
            w.WriteNumber("max_model_len", lease.Item.Engine.ContextSize);
        });
    }

    private async Task Detokenize(HttpContext context)
    {
        var body = await ReadBody(context);
        using var lease = _slot!.Acquire();
        var tokenizer = lease.Item.Completer.Tokenizer;
        if (body.ValueKind != JsonValueKind.Object || !body.TryGetProperty("tokens", out var array) || array.ValueKind != JsonValueKind.Array)
        {
            throw ApiError.BadRequest("tokens (an array of token ids) is required.", "tokens");
        }

        var ids = array.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int id) && id >= 0 && id < tokenizer.VocabSize
            ? id
            : throw ApiError.BadRequest($"tokens must be integers in [0, {tokenizer.VocabSize}).", "tokens")).ToList();
        string text = tokenizer.Decode(ids, skipSpecialTokens: false);
        await OpenAiWriter.WriteJson(context, 200, w => w.WriteString("content", text));
    }

    /// <summary>The host's lifetime belongs to whoever started the server: it neither waits for nor reacts to signals.</summary>
    private sealed class HostLifetimeOwnedByCaller : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
