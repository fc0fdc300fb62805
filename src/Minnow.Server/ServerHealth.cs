using System.Text.Json;

namespace Minnow.Server;

/// <summary>
/// What /health says about the model in service besides its state: its version (a sealed package's; 0 for a plain
/// model), and the memory it was given — the weights' bytes and the KV cache's fixed budget (pages × page bytes),
/// which with the runtime's own overhead bound the server's resident memory however many clients come.
/// </summary>
internal static class ServerHealth
{
    public static void Write(Utf8JsonWriter w, ServedModel served, ServerOptions options)
    {
        var pages = served.Engine.Pages;
        w.WriteNumber("model_version", served.Version);
        w.WriteNumber("weights_bytes", served.Model.Model.Weights.ByteSize);
        w.WriteNumber("kv_budget_bytes", options.KvBudgetBytes);
        w.WriteNumber("kv_cache_bytes", (long)pages.PageCount * pages.PageBytes);
        w.WriteNumber("kv_pages", pages.PageCount);
        w.WriteNumber("max_batch", options.MaxBatch);
        w.WriteNumber("max_queue", options.MaxQueue);
    }
}
