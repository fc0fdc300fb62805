using Minnow.Formats;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Sealing;

namespace Minnow.Serving;

/// <summary>One adapter resident in an <see cref="AdapterRegistry"/>.</summary>
public sealed record AdapterInfo(string Name, string Source, long Bytes, int Rank, IReadOnlyList<LoraTarget> Targets, DateTimeOffset LoadedAt, DateTimeOffset LastUsed);

/// <summary>
/// Named LoRA adapters resident beside one base model, loaded and unloaded while the model serves. The adapters'
/// memory is kept within a budget: loading one past it unloads the least recently used others first.
/// </summary>
/// <remarks>
/// Unloading only drops the registry's reference: a request that already holds the adapter keeps it (the engine's
/// sequence references it) and finishes exactly as it began; the memory is reclaimed when the last such request ends.
/// </remarks>
public sealed class AdapterRegistry
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Entry> _byName = new(StringComparer.Ordinal);
    private readonly ModelConfig _model;
    private readonly TimeProvider _time;
    private long _clock;

    public AdapterRegistry(ModelConfig model, long budgetBytes, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (budgetBytes <= 0)
        {
            throw new MinnowException($"the adapter memory budget must be positive (got {budgetBytes} bytes).");
        }

        _model = model;
        BudgetBytes = budgetBytes;
        _time = time ?? TimeProvider.System;
    }

    public long BudgetBytes { get; }

    /// <summary>Bytes held by the resident adapters.</summary>
    public long ResidentBytes
    {
        get
        {
            lock (_lock)
            {
                return _byName.Values.Sum(e => e.Adapter.MemoryBytes);
            }
        }
    }

    /// <summary>A name clients can put after the base model's (<c>BASE:NAME</c>): letters, digits, '.', '_' and '-'.</summary>
    public static void ValidateName(string name)
    {
        if (name.Length is 0 or > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
        {
            throw new MinnowException($"adapter name '{SafeText.Of(name)}' must be 1 to 64 letters, digits, '.', '_' or '-'.");
        }
    }

    /// <summary>
    /// Loads the PEFT folder, or the sealed package of one (<c>minnow seal ADAPTER_FOLDER</c>), at
    /// <paramref name="path"/> as <paramref name="name"/> (replacing an adapter of that name) and returns the names
    /// unloaded to make room. A package is verified with <paramref name="packages"/>' key and policy and decrypted in
    /// memory only. An adapter larger than the whole budget is refused.
    /// </summary>
    public (AdapterInfo Loaded, IReadOnlyList<string> Evicted) Load(string name, string path, PackageAccess? packages = null)
    {
        ValidateName(name);
        // Read and checked outside the lock: requests keep resolving adapters while a large one loads.
        var adapter = ReadAdapter(path, packages);
        long bytes = adapter.MemoryBytes;
        if (bytes > BudgetBytes)
        {
            throw new MinnowException($"{path}: the adapter takes {bytes:N0} bytes, more than the adapter budget of {BudgetBytes:N0} bytes.");
        }

        lock (_lock)
        {
            var evicted = new List<string>();
            _byName.Remove(name);
            long resident = _byName.Values.Sum(e => e.Adapter.MemoryBytes);
            while (resident + bytes > BudgetBytes)
            {
                var oldest = _byName.Values.MinBy(e => e.Tick)!;
                _byName.Remove(oldest.Name);
                resident -= oldest.Adapter.MemoryBytes;
                evicted.Add(oldest.Name);
            }

            var now = _time.GetUtcNow();
            var entry = new Entry(name, adapter, now) { Tick = ++_clock, LastUsed = now };
            _byName[name] = entry;
            return (entry.Info, evicted);
        }
    }

    private LoraAdapter ReadAdapter(string path, PackageAccess? packages)
    {
        if (!SealedPackage.IsPackage(path))
        {
            return LoraAdapter.Load(path, _model);
        }

        // Decrypted into anonymous memory, read into the adapter's matrices, then zeroed and freed with the package.
        using var files = LoadedModel.OpenPackage(path, packages);
        return LoraAdapter.Load(files, _model, Path.GetFullPath(path));
    }

    /// <summary>Unloads <paramref name="name"/>; false when no adapter has that name.</summary>
    public bool Unload(string name)
    {
        lock (_lock)
        {
            return _byName.Remove(name);
        }
    }

    /// <summary>The adapter named <paramref name="name"/> (marked as just used), or null.</summary>
    public LoraAdapter? Get(string name)
    {
        lock (_lock)
        {
            if (!_byName.TryGetValue(name, out var entry))
            {
                return null;
            }

            entry.Tick = ++_clock;
            entry.LastUsed = _time.GetUtcNow();
            return entry.Adapter;
        }
    }

    /// <summary>The resident adapters, most recently used first.</summary>
    public IReadOnlyList<AdapterInfo> List()
    {
        lock (_lock)
        {
            return _byName.Values.OrderByDescending(e => e.Tick).Select(e => e.Info).ToList();
        }
    }

    private sealed class Entry(string name, LoraAdapter adapter, DateTimeOffset loadedAt)
    {
        public string Name { get; } = name;

        public LoraAdapter Adapter { get; } = adapter;

        public long Tick { get; set; }

        public DateTimeOffset LastUsed { get; set; }

        public AdapterInfo Info => new(Name, Adapter.Source, Adapter.MemoryBytes, Adapter.Config.Rank, Adapter.Config.Targets, loadedAt, LastUsed);
    }
}
