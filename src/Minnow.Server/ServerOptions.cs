using Minnow.Inference;

namespace Minnow.Server;

/// <summary>How <c>minnow serve</c> runs: where it listens, the model, and how the engine shares it.</summary>
public sealed record ServerOptions
{
    /// <summary>The model to load (a folder, a .gguf file or a llama2.c checkpoint).</summary>
    public required string ModelPath { get; init; }

    /// <summary>The name clients ask for in <c>model</c>; null for the model's folder or file name.</summary>
    public string? ModelId { get; init; }

    public string Host { get; init; } = "127.0.0.1";

    /// <summary>0 picks a free port (see <see cref="MinnowServer.Url"/>).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>Most sequences decoded together.</summary>
    public int MaxBatch { get; init; } = 4;

    public long KvBudgetBytes { get; init; } = 256L << 20;

    /// <summary>Most requests waiting for a place in the batch; more are answered 429.</summary>
    public int MaxQueue { get; init; } = 16;

    /// <summary>When set, every API request must carry <c>Authorization: Bearer KEY</c>.</summary>
    public string? ApiKey { get; init; }

    /// <summary>Longest sequence; 0 for the model's context length.</summary>
    public int ContextSize { get; init; }

    /// <summary>Worker threads for the model; 0 for the shared pool (one per core).</summary>
    public int Threads { get; init; }

    /// <summary>Sealed packages, signed updates and signed outputs.</summary>
    public ServerSealing Sealing { get; init; } = new();

    /// <summary>How long a shutdown lets running requests finish before it cancels them.</summary>
    public TimeSpan DrainDeadline { get; init; } = TimeSpan.FromSeconds(30);

    internal EngineOptions EngineOptions() => new()
    {
        MaxSequences = MaxBatch,
        MaxStepTokens = Math.Max(64, MaxBatch),
        KvBudgetBytes = KvBudgetBytes,
        ContextSize = ContextSize,
        MaxQueue = MaxQueue,
        PrefixCaching = true,
    };

    internal void Validate()
    {
        if (MaxBatch <= 0)
        {
            throw new MinnowException($"--max-batch must be positive (got {MaxBatch}).");
        }

        if (MaxQueue < 0)
        {
            throw new MinnowException($"--max-queue must be ≥ 0 (got {MaxQueue}).");
        }

        if (Port is < 0 or > 65535)
        {
            throw new MinnowException($"--port must be between 0 and 65535 (got {Port}).");
        }

        if (KvBudgetBytes <= 0)
        {
            throw new MinnowException($"--kv-budget must be positive (got {KvBudgetBytes} bytes).");
        }

        if (ContextSize < 0 || Threads < 0)
        {
            throw new MinnowException("--ctx and --threads must be ≥ 0.");
        }

        if (ApiKey is { Length: 0 })
        {
            throw new MinnowException("--api-key is empty.");
        }
    }
}
