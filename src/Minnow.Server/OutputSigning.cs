using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Minnow.Sealing;

namespace Minnow.Server;

/// <summary>
/// <c>--sign-outputs</c> for one request: signs the completion's text with the request body's SHA-256, the digest of
/// the model that ran and the time (<see cref="SignedOutput"/>). A whole response carries it as the
/// <see cref="SignedOutput.HeaderName"/> header and a <c>signature</c> field; a stream, whose headers are gone
/// before the text exists, as one last event <c>{"signature":{…}}</c> before <c>[DONE]</c>.
/// </summary>
internal sealed class OutputSigning(ECDsa key, byte[] request, string packageDigest)
{
    public SignedOutput Sign(string output) => SignedOutput.Sign(key, request, output, packageDigest, DateTimeOffset.UtcNow);

    public static void WriteField(Utf8JsonWriter w, SignedOutput signed)
    {
        w.WritePropertyName("signature");
        signed.WriteTo(w);
    }

    /// <summary>Reads the request body as sent (Kestrel caps its size).</summary>
    public static async Task<byte[]> ReadBodyAsync(HttpContext context)
    {
        using var buffer = new MemoryStream();
        await context.Request.Body.CopyToAsync(buffer, context.RequestAborted);
        return buffer.ToArray();
    }
}
