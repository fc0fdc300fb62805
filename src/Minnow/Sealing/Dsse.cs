using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Minnow.Sealing;

/// <summary>One signature in a DSSE envelope: the signer's key id and the ECDSA signature (DER, base64).</summary>
public sealed record DsseSignature(string KeyId, byte[] Signature);

/// <summary>
/// A DSSE envelope (https://github.com/secure-systems-lab/dsse): a payload, its type, and signatures over the
/// pre-authentication encoding PAE(type, payload) — the envelope OpenSSF model signing and in-toto use. Signatures
/// are ECDSA P-256 with SHA-256, DER-encoded (as OpenSSL and sigstore produce them).
/// </summary>
public sealed class DsseEnvelope
{
    public const string InTotoPayloadType = "application/vnd.in-toto+json";

    public DsseEnvelope(string payloadType, byte[] payload, IReadOnlyList<DsseSignature> signatures)
    {
        PayloadType = payloadType;
        Payload = payload;
        Signatures = signatures;
    }

    public string PayloadType { get; }

    public byte[] Payload { get; }

    public IReadOnlyList<DsseSignature> Signatures { get; }

    /// <summary>DSSE v1's pre-authentication encoding: "DSSEv1 len(type) type len(payload) payload".</summary>
    public static byte[] PreAuthenticationEncoding(string payloadType, ReadOnlySpan<byte> payload)
    {
        byte[] type = Encoding.UTF8.GetBytes(payloadType);
        byte[] head = Encoding.ASCII.GetBytes($"DSSEv1 {type.Length} ");
        byte[] middle = Encoding.ASCII.GetBytes($" {payload.Length} ");
        var pae = new byte[head.Length + type.Length + middle.Length + payload.Length];
        head.CopyTo(pae, 0);
        type.CopyTo(pae, head.Length);
        middle.CopyTo(pae, head.Length + type.Length);
        payload.CopyTo(pae.AsSpan(head.Length + type.Length + middle.Length));
        return pae;
    }

    public static DsseEnvelope Sign(string payloadType, byte[] payload, ECDsa key)
    {
        byte[] signature = key.SignData(PreAuthenticationEncoding(payloadType, payload), HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence);
        return new DsseEnvelope(payloadType, payload, [new DsseSignature(SigningKey.KeyId(key), signature)]);
    }

    /// <summary>Whether a signature by <paramref name="key"/> verifies (only signatures naming its key id are tried).</summary>
    public bool IsSignedBy(ECDsa key)
    {
        string id = SigningKey.KeyId(key);
        byte[] pae = PreAuthenticationEncoding(PayloadType, Payload);
        foreach (var s in Signatures)
        {
            if (s.KeyId == id &&
                key.VerifyData(pae, s.Signature, HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence))
            {
                return true;
            }
        }

        return false;
    }

    public void WriteTo(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteString("payloadType", PayloadType);
        w.WriteBase64String("payload", Payload);
        w.WriteStartArray("signatures");
        foreach (var s in Signatures)
        {
            w.WriteStartObject();
            w.WriteString("keyid", s.KeyId);
            w.WriteBase64String("sig", s.Signature);
            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteEndObject();
    }

    public byte[] ToJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            WriteTo(w);
        }

        return buffer.ToArray();
    }

    /// <summary>Reads an envelope; anything malformed is a <see cref="MinnowException"/> naming <paramref name="source"/>.</summary>
    public static DsseEnvelope Parse(JsonElement e, string source)
    {
        try
        {
            // Strict: exactly the envelope's members, so no byte of it can change unnoticed (DSSE's keyid is a hint
            // the signature does not cover; here it must also name the verifying key).
            Json.RequireMembers(e, "payloadType", "payload", "signatures");
            string type = e.GetProperty("payloadType").GetString() ?? "";
            byte[] payload = Base64.Strict(e.GetProperty("payload"));
            var signatures = new List<DsseSignature>();
            foreach (var s in e.GetProperty("signatures").EnumerateArray())
            {
                Json.RequireMembers(s, "keyid", "sig");
                string id = s.GetProperty("keyid").GetString() ?? "";
                signatures.Add(new DsseSignature(id, Base64.Strict(s.GetProperty("sig"))));
            }

            return new DsseEnvelope(type, payload, signatures);
        }
        catch (Exception ex) when (ex is KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new MinnowException($"{source}: the signature envelope is malformed (a DSSE envelope needs payloadType, a base64 payload and signatures).");
        }
    }

    public static DsseEnvelope Parse(ReadOnlySpan<byte> json, string source)
    {
        try
        {
            using var doc = JsonDocument.Parse(json.ToArray());
            return Parse(doc.RootElement, source);
        }
        catch (JsonException)
        {
            throw new MinnowException($"{source}: the signature envelope is not valid JSON.");
        }
    }
}

/// <summary>Strict base64: only the canonical encoding of the bytes is accepted, so no two texts decode alike.</summary>
internal static class Base64
{
    public static byte[] Strict(JsonElement e)
    {
        string text = e.GetString() ?? throw new FormatException("expected a base64 string");
        byte[] bytes = Convert.FromBase64String(text);
        return Convert.ToBase64String(bytes) == text ? bytes : throw new FormatException("non-canonical base64");
    }
}

/// <summary>Strict JSON reading for signed containers.</summary>
internal static class Json
{
    /// <summary>Throws <see cref="FormatException"/> unless <paramref name="e"/> is an object with exactly these members, once each.</summary>
    public static void RequireMembers(JsonElement e, params string[] names)
    {
        if (e.ValueKind != JsonValueKind.Object)
        {
            throw new FormatException("expected an object");
        }

        var seen = e.EnumerateObject().Select(p => p.Name).ToList();
        if (seen.Count != names.Length || !names.All(seen.Contains))
        {
            throw new FormatException("unexpected members: " + string.Join(", ", seen));
        }
    }
}
