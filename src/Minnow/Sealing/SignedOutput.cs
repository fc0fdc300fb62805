using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Minnow.Sealing;

/// <summary>
/// A model output signed by the device that produced it: the SHA-256 of the request, the output text, the digest
/// of the package that ran (<see cref="VerifiedPackage.Digest"/>) and the time, signed with ECDSA P-256 over the
/// DSSE pre-authentication encoding of a canonical JSON of those four fields (payload type
/// <see cref="PayloadType"/>). A server sends it as the JSON body's <c>signature</c> field and, compactly, as the
/// <see cref="HeaderName"/> header; <c>minnow verify-output</c> checks one.
/// </summary>
public sealed record SignedOutput
{
    public const string PayloadType = "application/vnd.minnow.signed-output.v1+json";
    public const string HeaderName = "Minnow-Output-Signature";

    public required string RequestSha256 { get; init; }

    public required string Output { get; init; }

    public required string PackageDigest { get; init; }

    public required DateTimeOffset Timestamp { get; init; }

    public required string KeyId { get; init; }

    /// <summary>The ECDSA signature, DER-encoded.</summary>
    public required byte[] Signature { get; init; }

    /// <summary>Signs an output; <paramref name="request"/> is the request body exactly as received.</summary>
    public static SignedOutput Sign(ECDsa key, ReadOnlySpan<byte> request, string output, string packageDigest, DateTimeOffset timestamp)
    {
        var time = DateTimeOffset.FromUnixTimeMilliseconds(timestamp.ToUnixTimeMilliseconds());
        string requestSha = Convert.ToHexStringLower(SHA256.HashData(request));
        byte[] pae = DsseEnvelope.PreAuthenticationEncoding(PayloadType, Canonical(requestSha, output, packageDigest, time));
        return new SignedOutput
        {
            RequestSha256 = requestSha,
            Output = output,
            PackageDigest = packageDigest,
            Timestamp = time,
            KeyId = SigningKey.KeyId(key),
            Signature = key.SignData(pae, HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence),
        };
    }

    /// <summary>Whether the signature verifies under <paramref name="publicKey"/> for exactly these fields.</summary>
    public bool Verify(ECDsa publicKey)
    {
        byte[] pae = DsseEnvelope.PreAuthenticationEncoding(PayloadType, Canonical(RequestSha256, Output, PackageDigest, Timestamp));
        try
        {
            return publicKey.VerifyData(pae, Signature, HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence);
        }
        catch (CryptographicException)
        {
            return false;
        }
    }

    /// <summary>Whether this output answers <paramref name="request"/> (the body sent).</summary>
    public bool Answers(ReadOnlySpan<byte> request) => Convert.ToHexStringLower(SHA256.HashData(request)) == RequestSha256;

    public void WriteTo(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteString("request_sha256", RequestSha256);
        w.WriteString("output", Output);
        w.WriteString("package_digest", PackageDigest);
        w.WriteString("timestamp", FormatTime(Timestamp));
        w.WriteString("keyid", KeyId);
        w.WriteBase64String("sig", Signature);
        w.WriteEndObject();
    }

    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            WriteTo(w);
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>
    /// The header form: "keyid=…, ts=…, request=…, package=…, sig=…" (the output itself is the response body's
    /// text; <see cref="FromHeader"/> takes it back).
    /// </summary>
    public string ToHeader() =>
        $"keyid={KeyId}, ts={FormatTime(Timestamp)}, request={RequestSha256}, package={PackageDigest}, sig={Convert.ToBase64String(Signature)}";

    public static SignedOutput FromHeader(string header, string output)
    {
        var fields = header.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Select(p => p.Split('=', 2))
            .Where(p => p.Length == 2)
            .ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
        string Get(string name) => fields.TryGetValue(name, out var v) ? v : throw new MinnowException($"{HeaderName}: no {name}= in the header.");
        try
        {
            return new SignedOutput
            {
                KeyId = Get("keyid"),
                Timestamp = ParseTime(Get("ts"), HeaderName),
                RequestSha256 = Get("request"),
                PackageDigest = Get("package"),
                Signature = Convert.FromBase64String(Get("sig")),
                Output = output,
            };
        }
        catch (FormatException)
        {
            throw new MinnowException($"{HeaderName}: the signature is not base64.");
        }
    }

    /// <summary>Reads a signed output: the object <see cref="WriteTo"/> writes, or a response body holding it as "signature".</summary>
    public static SignedOutput Parse(string json, string source)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            var e = doc.RootElement.TryGetProperty("signature", out var inner) && inner.ValueKind == JsonValueKind.Object ? inner : doc.RootElement;
            return new SignedOutput
            {
                RequestSha256 = e.GetProperty("request_sha256").GetString() ?? "",
                Output = e.GetProperty("output").GetString() ?? "",
                PackageDigest = e.GetProperty("package_digest").GetString() ?? "",
                Timestamp = ParseTime(e.GetProperty("timestamp").GetString(), source),
                KeyId = e.TryGetProperty("keyid", out var k) ? k.GetString() ?? "" : "",
                Signature = e.GetProperty("sig").GetBytesFromBase64(),
            };
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new MinnowException($"{source}: not a signed output (needs request_sha256, output, package_digest, timestamp and sig).");
        }
    }

    private static byte[] Canonical(string requestSha, string output, string packageDigest, DateTimeOffset time)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("request_sha256", requestSha);
            w.WriteString("output", output);
            w.WriteString("package_digest", packageDigest);
            w.WriteString("timestamp", FormatTime(time));
            w.WriteEndObject();
        }

        return buffer.ToArray();
    }

    private static string FormatTime(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture);

    private static DateTimeOffset ParseTime(string? text, string source) =>
        DateTimeOffset.TryParseExact(text, "yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t)
            ? t
            : throw new MinnowException($"{source}: invalid timestamp '{text}'.");
}
