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

    /// <summary>
    /// The key and policy that open sealed packages (<c>--key-file</c>, <c>--trust</c>, <c>--min-version</c>): a sealed
    /// model, or a sealed adapter given to <c>--adapter</c> or <c>POST /v1/adapters</c>, decrypted in memory only.
    /// </summary>
    public Minnow.Loading.PackageAccess? Packages { get; init; }

    /// <summary>Adapters loaded at start (<c>--adapter NAME=PATH</c>): name → PEFT folder; requests pick one with <c>model: "BASE:NAME"</c>.</summary>
    public IReadOnlyDictionary<string, string> Adapters { get; init; } = new Dictionary<string, string>();

    /// <summary>Memory the run-time adapters may take together; loading past it unloads the least recently used.</summary>
    public long AdapterBudgetBytes { get; init; } = 64L << 20;

    /// <summary>
    /// Rollout variants (<c>--variant NAME=SPEC</c>): SPEC is a model (a folder or file, served by its own engine) or
    /// <c>adapter:FOLDER</c> (a PEFT adapter on the base model).
    /// </summary>
    public IReadOnlyDictionary<string, string> Variants { get; init; } = new Dictionary<string, string>();

    /// <summary>A canary rollout plan (<c>--rollout PLAN.json</c>) between the variants it names.</summary>
    public string? RolloutPlanPath { get; init; }

    /// <summary>A fixed canary share in percent with no schedule (<c>--canary 5%</c>), between variants 'stable' and 'canary'.</summary>
    public double? CanaryPercent { get; init; }

    /// <summary>Where the rollout's state is saved (default: PLAN.json.state.json); its audit log is this path + ".log".</summary>
    public string? RolloutStatePath { get; init; }

    /// <summary>
    /// TEST ONLY: a delay added before each request a variant serves, to simulate a slow build in rollout tests. It
    /// exists on this API only (there is no command-line option) and must never be set in production.
    /// </summary>
    public IReadOnlyDictionary<string, TimeSpan> TestOnlyInjectedLatency { get; init; } = new Dictionary<string, TimeSpan>();

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

        if (RolloutPlanPath is not null && CanaryPercent is not null)
        {
            throw new MinnowException("--rollout and --canary are two ways to split traffic: give one.");
        }

        if ((RolloutPlanPath is not null || CanaryPercent is not null) && Variants.Count < 2)
        {
            throw new MinnowException("a rollout needs two variants: --variant stable=MODEL --variant canary=MODEL.");
        }

        // A signed update swaps the base model under the server; rollout variants (and their probes) hold on to
        // the model they started with, so the two do not mix yet.
        if (Sealing.UpdateSource is not null && Variants.Count > 0)
        {
            throw new MinnowException("--update-source cannot be combined with --variant, --canary or --rollout yet: roll out one, or update the other.");
        }

        if (AdapterBudgetBytes <= 0)
        {
            throw new MinnowException($"--adapter-budget must be positive (got {AdapterBudgetBytes} bytes).");
        }

        foreach (string name in Adapters.Keys)
        {
            Serving.AdapterRegistry.ValidateName(name);
        }

        if (ApiKey is { Length: 0 })
        {
            throw new MinnowException("--api-key is empty.");
        }
    }
}
