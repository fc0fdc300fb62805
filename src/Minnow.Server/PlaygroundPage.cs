using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Minnow.Server;

/// <summary>
/// The playground at <c>/</c>: one self-contained page (no external scripts or styles) that chats with the served
/// model through the server's own OpenAI-compatible API, streaming, with the model picker, the sampling parameters
/// and the live metrics. It needs no API key to load; its requests send the key typed into it.
/// </summary>
internal static class PlaygroundPage
{
    private static readonly Lazy<byte[]> Html = new(() =>
    {
        using var stream = typeof(PlaygroundPage).Assembly.GetManifestResourceStream("Minnow.Server.playground.html")
            ?? throw new InvalidOperationException("the playground page is missing from the assembly.");
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        return buffer.ToArray();
    });

    public const string Path = "/";

    public static void Map(IEndpointRouteBuilder app) => app.MapGet(Path, async context =>
    {
        context.Response.ContentType = "text/html; charset=utf-8";
        context.Response.Headers.CacheControl = "no-cache";
        context.Response.Headers.ContentSecurityPolicy = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'";
        await context.Response.Body.WriteAsync(Html.Value, context.RequestAborted);
    });
}
