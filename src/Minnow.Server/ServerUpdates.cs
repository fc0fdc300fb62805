using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Minnow.Sealing;
using Minnow.Tensors;

namespace Minnow.Server;

/// <summary>
/// <c>serve --update-source URL</c>: polls the signed index over HTTPS and puts newer sealed packages of the served
/// model in service (<see cref="UpdateLoop{T}"/>): the new model is loaded beside the running one, swapped in
/// atomically, and the old one finishes its requests before it is freed. A refused update (tampered, older,
/// expired or unsigned index, a package that fails to open) keeps the running model and is reported.
/// </summary>
public sealed class ServerUpdates
{
    private readonly HttpClient _http;
    private readonly UpdateLoop<ServedModel> _loop;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _running;
    private readonly object _gate = new();
    private readonly List<UpdateReport> _reports = [];

    private ServerUpdates(HttpClient http, UpdateLoop<ServedModel> loop, TimeSpan interval, ServerMetrics metrics)
    {
        _http = http;
        _loop = loop;
        _running = loop.RunAsync(interval, report =>
        {
            lock (_gate)
            {
                _reports.Add(report);
            }

            metrics.Update(report.Outcome.ToString().ToLowerInvariant());
            Reported?.Invoke(report);
        }, _stop.Token);
    }

    /// <summary>Raised after each poll that activated or refused something (on a background thread).</summary>
    public event Action<UpdateReport>? Reported;

    /// <summary>The polls so far that activated or refused something, oldest first.</summary>
    public IReadOnlyList<UpdateReport> Reports
    {
        get
        {
            lock (_gate)
            {
                return [.. _reports];
            }
        }
    }

    /// <summary>Polls once now (besides the timer), as a test or an operator's nudge would.</summary>
    public Task<UpdateReport> PollAsync(CancellationToken cancellation = default) => _loop.PollAsync(cancellation);

    internal static ServerUpdates Start(MinnowServer server, ServerOptions options, ActiveSlot<ServedModel> slot, WorkerPool? pool, ServerMetrics metrics)
    {
        var sealing = options.Sealing;
        var http = new HttpClient(Handler(sealing.UpdateAuthority)) { Timeout = TimeSpan.FromMinutes(10) };
        string folder = sealing.UpdateFolder ?? Path.Combine(Path.GetTempPath(), "minnow-updates", server.ModelId);
        var client = new UpdateClient(http, sealing.UpdateSource!, sealing.TrustedSigners, folder, Path.Combine(Directory.CreateDirectory(folder).FullName, "state.json"));
        var loop = new UpdateLoop<ServedModel>(client, slot, "package", server.ModelId, update =>
        {
            var next = ServedModel.Load(update.Path, options, pool, minimumVersion: update.Entry.Version);
            if (next.Version != update.Entry.Version)
            {
                next.Dispose();
                throw new MinnowException($"{update.Path}: the package is version {next.Version}, not the {update.Entry.Version} the index offered.");
            }

            // The old engine's gauges stop here; the new one's are read from now on.
            metrics.Attach(next.Engine);
            return next;
        });
        return new ServerUpdates(http, loop, sealing.UpdateInterval, metrics);
    }

    internal async Task StopAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _running.ConfigureAwait(false);
        _http.Dispose();
    }

    /// <summary>The system's certificate authorities, or with <paramref name="authority"/> that one only (a private CA).</summary>
    private static SocketsHttpHandler Handler(X509Certificate2? authority)
    {
        var handler = new SocketsHttpHandler();
        if (authority is null)
        {
            return handler;
        }

        handler.SslOptions = new SslClientAuthenticationOptions
        {
            RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
            {
                if (certificate is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None)
                {
                    return false;
                }

                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(authority);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                using var leaf = new X509Certificate2(certificate);
                return chain.Build(leaf);
            },
        };
        return handler;
    }
}
