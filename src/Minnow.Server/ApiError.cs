namespace Minnow.Server;

/// <summary>An error answered in OpenAI's shape: <c>{"error":{"message","type","param","code"}}</c> with an HTTP status.</summary>
public sealed class ApiError(int status, string message, string type, string? param = null, string? code = null) : Exception(message)
{
    public int Status { get; } = status;

    public string Type { get; } = type;

    public string? Param { get; } = param;

    public string? Code { get; } = code;

    public static ApiError BadRequest(string message, string? param = null, string? code = null) =>
        new(400, message, "invalid_request_error", param, code);

    public static ApiError NotFound(string message, string? param = null, string code = "model_not_found") =>
        new(404, message, "invalid_request_error", param, code);

    public static ApiError Unavailable(string message) => new(503, message, "unavailable_error", null, "server_unavailable");
}
