namespace Minnow.Sealing;

/// <summary>What one poll of an update source did.</summary>
public enum UpdateOutcome
{
    /// <summary>The index offers nothing newer than the version in service.</summary>
    UpToDate,

    /// <summary>A newer version was downloaded, verified and put in service.</summary>
    Activated,

    /// <summary>The index, the download or the activation was refused; the version in service keeps serving.</summary>
    Refused,
}

/// <summary>One poll's result: what happened, the version in service afterwards, and (when refused) why in one line.</summary>
public sealed record UpdateReport(UpdateOutcome Outcome, long VersionInService, string? Message);

/// <summary>
/// Keeps an <see cref="ActiveSlot{T}"/> up to date from an <see cref="UpdateClient"/>: each poll fetches the signed
/// index, downloads and verifies a newer version of <see cref="Kind"/>/<see cref="Name"/> when one is offered, builds
/// it with the caller's loader while the old one keeps serving, swaps it in, and only then records the version as
/// accepted. Anything refused (an index that is expired, older, or not signed by a trusted key; a download that
/// does not match what the index signed; a package that fails to open) leaves the version in service untouched.
/// </summary>
public sealed class UpdateLoop<T>(UpdateClient client, ActiveSlot<T> slot, string kind, string name, Func<DownloadedUpdate, T> load)
    where T : class, IDisposable
{
    public string Kind { get; } = kind;

    public string Name { get; } = name;

    /// <summary>Polls once.</summary>
    public async Task<UpdateReport> PollAsync(CancellationToken cancellation = default)
    {
        DownloadedUpdate? update;
        try
        {
            update = await client.CheckAsync(Kind, Name, slot.Version, cancellation).ConfigureAwait(false);
        }
        catch (MinnowException e)
        {
            return new UpdateReport(UpdateOutcome.Refused, slot.Version, e.Message);
        }
        catch (HttpRequestException e)
        {
            return new UpdateReport(UpdateOutcome.Refused, slot.Version, $"{client.IndexUri}: {e.Message}");
        }

        if (update is null)
        {
            return new UpdateReport(UpdateOutcome.UpToDate, slot.Version, null);
        }

        // Build on a worker thread: loading a model is long, blocking work.
        var (activated, error) = await Task.Run(() => (slot.Activate(() => load(update), update.Entry.Version, out string? why), why), cancellation).ConfigureAwait(false);
        if (!activated)
        {
            return new UpdateReport(UpdateOutcome.Refused, slot.Version, $"{Kind} '{Name}' version {update.Entry.Version}: {error}");
        }

        client.Accept(update);
        return new UpdateReport(UpdateOutcome.Activated, slot.Version, null);
    }

    /// <summary>Polls every <paramref name="interval"/> until cancelled, reporting each poll that changed or refused something.</summary>
    public async Task RunAsync(TimeSpan interval, Action<UpdateReport> report, CancellationToken cancellation)
    {
        ArgumentNullException.ThrowIfNull(report);
        while (!cancellation.IsCancellationRequested)
        {
            try
            {
                var result = await PollAsync(cancellation).ConfigureAwait(false);
                if (result.Outcome != UpdateOutcome.UpToDate)
                {
                    report(result);
                }

                await Task.Delay(interval, cancellation).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
            {
                return;
            }
        }
    }
}
