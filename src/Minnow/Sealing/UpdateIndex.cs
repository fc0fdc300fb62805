using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;

namespace Minnow.Sealing;

/// <summary>One item an update index offers: a sealed model package or an adapter, by name and version.</summary>
public sealed record UpdateEntry
{
    /// <summary>"package" (a sealed model package) or "adapter".</summary>
    public required string Kind { get; init; }

    public required string Name { get; init; }

    public required long Version { get; init; }

    /// <summary>Where to download it, relative to the index's address or absolute (https only).</summary>
    public required string Url { get; init; }

    public required string Sha256 { get; init; }

    public required long Size { get; init; }
}

/// <summary>
/// What an update server offers, signed (a DSSE envelope of payload type <see cref="PayloadType"/>): a serial
/// number that only grows (an older index is a rollback), an expiry (an expired index is a freeze: a server
/// replaying an old index to keep devices on old versions), and the entries with their SHA-256.
/// </summary>
public sealed record UpdateIndex
{
    public const string PayloadType = "application/vnd.minnow.update-index.v1+json";

    public required long Serial { get; init; }

    public required DateTimeOffset Expires { get; init; }

    public required IReadOnlyList<UpdateEntry> Entries { get; init; }

    public byte[] ToPayload()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteNumber("serial", Serial);
            w.WriteString("expires", Expires.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture));
            w.WriteStartArray("entries");
            foreach (var e in Entries)
            {
                w.WriteStartObject();
                w.WriteString("kind", e.Kind);
                w.WriteString("name", e.Name);
                w.WriteNumber("version", e.Version);
                w.WriteString("url", e.Url);
                w.WriteString("sha256", e.Sha256);
                w.WriteNumber("size", e.Size);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        return buffer.ToArray();
    }

    /// <summary>The signed index, as the update server serves it (DSSE envelope JSON).</summary>
    public byte[] Sign(ECDsa key) => DsseEnvelope.Sign(PayloadType, ToPayload(), key).ToJson();

    /// <summary>An entry for a file: its SHA-256 and size computed from the file.</summary>
    public static UpdateEntry EntryFor(string kind, string name, long version, string url, string path)
    {
        using var stream = File.OpenRead(path);
        return new UpdateEntry { Kind = kind, Name = name, Version = version, Url = url, Sha256 = Convert.ToHexStringLower(SHA256.HashData(stream)), Size = stream.Length };
    }

    /// <summary>
    /// Reads a signed index: the envelope must be signed by one of <paramref name="trusted"/>; anything else is a
    /// <see cref="MinnowException"/> naming <paramref name="source"/>.
    /// </summary>
    public static UpdateIndex Verify(ReadOnlySpan<byte> envelopeJson, IReadOnlyList<ECDsa> trusted, string source)
    {
        var envelope = DsseEnvelope.Parse(envelopeJson, source);
        if (envelope.PayloadType != PayloadType)
        {
            throw new MinnowException($"{source}: not an update index (payload type {envelope.PayloadType}).");
        }

        if (trusted.Count == 0 || !trusted.Any(envelope.IsSignedBy))
        {
            throw new MinnowException($"{source}: the update index is not signed by a trusted key; refusing it.");
        }

        try
        {
            using var doc = JsonDocument.Parse(envelope.Payload);
            var root = doc.RootElement;
            var entries = root.GetProperty("entries").EnumerateArray().Select(e => new UpdateEntry
            {
                Kind = e.GetProperty("kind").GetString() ?? "",
                Name = e.GetProperty("name").GetString() ?? "",
                Version = e.GetProperty("version").GetInt64(),
                Url = e.GetProperty("url").GetString() ?? "",
                Sha256 = e.GetProperty("sha256").GetString() ?? "",
                Size = e.GetProperty("size").GetInt64(),
            }).ToList();
            string expires = root.GetProperty("expires").GetString() ?? "";
            return new UpdateIndex
            {
                Serial = root.GetProperty("serial").GetInt64(),
                Expires = DateTimeOffset.TryParse(expires, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t)
                    ? t
                    : throw new FormatException("expires"),
                Entries = entries,
            };
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new MinnowException($"{source}: the update index is malformed.");
        }
    }
}
