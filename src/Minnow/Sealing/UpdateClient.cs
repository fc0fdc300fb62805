using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;

namespace Minnow.Sealing;

/// <summary>What a device has accepted so far; persisted so that a restart cannot be rolled back either.</summary>
public sealed record UpdateState
{
    /// <summary>The highest index serial accepted.</summary>
    public long IndexSerial { get; init; }

    /// <summary>The version accepted for each "kind/name".</summary>
    public IReadOnlyDictionary<string, long> Versions { get; init; } = new Dictionary<string, long>(StringComparer.Ordinal);

    public long VersionOf(string kind, string name) => Versions.TryGetValue(kind + "/" + name, out long v) ? v : 0;

    public static UpdateState Load(string path)
    {
        if (!File.Exists(path))
        {
            return new UpdateState();
        }

        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return new UpdateState
            {
                IndexSerial = doc.RootElement.GetProperty("index_serial").GetInt64(),
                Versions = doc.RootElement.GetProperty("versions").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt64(), StringComparer.Ordinal),
            };
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new MinnowException($"{path}: the update state is damaged; refusing to guess which versions were accepted.");
        }
    }

    public void Save(string path)
    {
        string temp = path + ".tmp";
        using (var stream = File.Create(temp))
        using (var w = new Utf8JsonWriter(stream))
        {
            w.WriteStartObject();
            w.WriteNumber("index_serial", IndexSerial);
            w.WriteStartObject("versions");
            foreach (var (k, v) in Versions.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                w.WriteNumber(k, v);
            }

            w.WriteEndObject();
            w.WriteEndObject();
        }

        File.Move(temp, path, overwrite: true);
    }

    internal UpdateState With(long serial, string? key = null, long version = 0)
    {
        var versions = new Dictionary<string, long>(Versions, StringComparer.Ordinal);
        if (key != null)
        {
            versions[key] = version;
        }

        return new UpdateState { IndexSerial = Math.Max(IndexSerial, serial), Versions = versions };
    }
}

/// <summary>A downloaded and verified update, ready to activate.</summary>
public sealed record DownloadedUpdate(UpdateEntry Entry, string Path, VerifiedPackage? Package);

/// <summary>
/// Polls a signed update index over HTTPS and downloads what is newer: the index must be signed by a trusted key,
/// not expired (freeze) and not older than the last one accepted (rollback); a download must match the size and
/// SHA-256 the index signed, and a package must also verify on its own (signature by a trusted key, manifest,
/// expiry) with the version the index names. Versions lower than or equal to the running one are never taken.
/// Files are downloaded to a temporary name in <see cref="DownloadFolder"/> and renamed when verified; the
/// packages stay encrypted on disk. The caller activates a download (see <see cref="ActiveSlot{T}"/>) and then
/// calls <see cref="Accept"/>, so a failed activation is retried or skipped, never half-applied.
/// </summary>
public sealed class UpdateClient
{
    /// <summary>Indexes larger than this are refused.</summary>
    public const int MaxIndexBytes = 1 << 20;

    private readonly HttpClient _http;
    private readonly IReadOnlyList<ECDsa> _trusted;
    private readonly TimeProvider _time;
    private readonly string? _statePath;

    public UpdateClient(HttpClient http, Uri indexUri, IReadOnlyList<ECDsa> trusted, string downloadFolder, string? statePath = null, TimeProvider? time = null)
    {
        if (indexUri.Scheme != Uri.UriSchemeHttps)
        {
            throw new MinnowException($"{indexUri}: updates are fetched over HTTPS only.");
        }

        if (trusted.Count == 0)
        {
            throw new MinnowException("updates need at least one trusted public key.");
        }

        _http = http;
        IndexUri = indexUri;
        _trusted = trusted;
        DownloadFolder = Directory.CreateDirectory(downloadFolder).FullName;
        _statePath = statePath;
        _time = time ?? TimeProvider.System;
        State = statePath is null ? new UpdateState() : UpdateState.Load(statePath);
    }

    public Uri IndexUri { get; }

    public string DownloadFolder { get; }

    public UpdateState State { get; private set; }

    /// <summary>Fetches and verifies the index (signature, expiry, serial); does not accept it yet.</summary>
    public async Task<UpdateIndex> FetchIndexAsync(CancellationToken cancellation = default)
    {
        using var response = await _http.GetAsync(IndexUri, HttpCompletionOption.ResponseHeadersRead, cancellation).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw new MinnowException($"{IndexUri}: the update server answered {(int)response.StatusCode} {response.ReasonPhrase}.");
        }

        byte[] body = await ReadLimitedAsync(response, MaxIndexBytes, cancellation).ConfigureAwait(false);
        var index = UpdateIndex.Verify(body, _trusted, IndexUri.ToString());
        var now = _time.GetUtcNow();
        if (now > index.Expires)
        {
            throw new MinnowException($"{IndexUri}: the update index expired on {index.Expires.UtcDateTime:yyyy-MM-dd HH:mm} UTC; refusing it (a server replaying an old index would freeze updates).");
        }

        if (index.Serial < State.IndexSerial)
        {
            throw new MinnowException($"{IndexUri}: update index {index.Serial} is older than index {State.IndexSerial} already seen; refusing a rollback.");
        }

        return index;
    }

    /// <summary>
    /// Checks for a newer version of <paramref name="kind"/>/<paramref name="name"/> than the accepted one (or
    /// <paramref name="runningVersion"/>, whichever is higher) and downloads and verifies it; null when there is none.
    /// </summary>
    public async Task<DownloadedUpdate?> CheckAsync(string kind, string name, long runningVersion = 0, CancellationToken cancellation = default)
    {
        var index = await FetchIndexAsync(cancellation).ConfigureAwait(false);
        long current = Math.Max(runningVersion, State.VersionOf(kind, name));
        var offered = index.Entries.Where(e => e.Kind == kind && e.Name == name).OrderByDescending(e => e.Version).FirstOrDefault();
        SetState(State.With(index.Serial));
        if (offered is null || offered.Version <= current)
        {
            return null;
        }

        return await DownloadAsync(offered, cancellation).ConfigureAwait(false);
    }

    /// <summary>Records that <paramref name="update"/> was activated: lower or equal versions are refused from now on.</summary>
    public void Accept(DownloadedUpdate update) =>
        SetState(State.With(0, update.Entry.Kind + "/" + update.Entry.Name, Math.Max(update.Entry.Version, State.VersionOf(update.Entry.Kind, update.Entry.Name))));

    private async Task<DownloadedUpdate> DownloadAsync(UpdateEntry entry, CancellationToken cancellation)
    {
        if (!Formats.FolderModelFiles.IsPlainName(entry.Name) || entry.Size < 0 || entry.Sha256.Length != 64)
        {
            throw new MinnowException($"{IndexUri}: the index entry '{entry.Name}' is invalid.");
        }

        var uri = new Uri(IndexUri, entry.Url);
        if (uri.Scheme != Uri.UriSchemeHttps)
        {
            throw new MinnowException($"{uri}: updates are fetched over HTTPS only.");
        }

        string extension = entry.Kind == "package" ? ".mpkg" : ".bin";
        string final = Path.Combine(DownloadFolder, $"{entry.Kind}-{entry.Name}-v{entry.Version.ToString(CultureInfo.InvariantCulture)}{extension}");
        string temp = final + "." + Guid.NewGuid().ToString("N")[..8] + ".part";
        try
        {
            using (var response = await _http.GetAsync(uri, HttpCompletionOption.ResponseHeadersRead, cancellation).ConfigureAwait(false))
            {
                if (!response.IsSuccessStatusCode)
                {
                    throw new MinnowException($"{uri}: the update server answered {(int)response.StatusCode} {response.ReasonPhrase}.");
                }

                using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                long total = 0;
                await using (var source = await response.Content.ReadAsStreamAsync(cancellation).ConfigureAwait(false))
                await using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true))
                {
                    var buffer = new byte[1 << 16];
                    int n;
                    while ((n = await source.ReadAsync(buffer, cancellation).ConfigureAwait(false)) > 0)
                    {
                        total += n;
                        if (total > entry.Size)
                        {
                            throw new MinnowException($"{uri}: the download is larger than the {entry.Size} bytes the index signed; refusing it.");
                        }

                        hash.AppendData(buffer, 0, n);
                        await file.WriteAsync(buffer.AsMemory(0, n), cancellation).ConfigureAwait(false);
                    }
                }

                if (total != entry.Size || !CryptographicOperations.FixedTimeEquals(hash.GetHashAndReset(), Convert.FromHexString(entry.Sha256)))
                {
                    throw new MinnowException($"{uri}: the download does not match the size and SHA-256 the index signed; refusing it.");
                }
            }

            VerifiedPackage? package = null;
            if (entry.Kind == "package" || SealedPackage.IsPackage(temp))
            {
                using var source = PackageSource.FromFile(temp);
                package = SealedPackage.Verify(source, key: null, new PackagePolicy { TrustedSigners = _trusted, Now = _time.GetUtcNow() });
                if (entry.Kind == "package" && package.Manifest.Version != entry.Version)
                {
                    throw new MinnowException($"{uri}: the package is version {package.Manifest.Version}, but the index says {entry.Version}; refusing it.");
                }
            }

            File.Move(temp, final, overwrite: true);
            return new DownloadedUpdate(entry, final, package);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    private void SetState(UpdateState state)
    {
        State = state;
        if (_statePath != null)
        {
            state.Save(_statePath);
        }
    }

    private static async Task<byte[]> ReadLimitedAsync(HttpResponseMessage response, int limit, CancellationToken cancellation)
    {
        if (response.Content.Headers.ContentLength is long declared && declared > limit)
        {
            throw new MinnowException($"{response.RequestMessage?.RequestUri}: the update index is {declared} bytes, over the limit of {limit}.");
        }

        await using var stream = await response.Content.ReadAsStreamAsync(cancellation).ConfigureAwait(false);
        using var buffer = new MemoryStream();
        var chunk = new byte[1 << 14];
        int n;
        while ((n = await stream.ReadAsync(chunk, cancellation).ConfigureAwait(false)) > 0)
        {
            buffer.Write(chunk, 0, n);
            if (buffer.Length > limit)
            {
                throw new MinnowException($"{response.RequestMessage?.RequestUri}: the update index is over the limit of {limit} bytes.");
            }
        }

        return buffer.ToArray();
    }
}
