using System.Security.Cryptography;
using Minnow.Inference;
using Minnow.Loading;
using Minnow.Sealing;
using Minnow.Serving;
using Minnow.Tensors;

namespace Minnow.Server;

/// <summary>
/// One model in service: its weights, the engine that runs its sequences and the completer over them, with what
/// identifies it — the package version (0 for a plain model) and digest. Requests lease it from the server's
/// <see cref="ActiveSlot{T}"/>, so an update swaps in a new one while the old one finishes its requests; disposing
/// stops its engine and frees its weights (a sealed package's decrypted bytes are zeroed).
/// </summary>
internal sealed class ServedModel : IDisposable
{
    private readonly Lazy<string> _digest;

    private ServedModel(LoadedModel model, Engine engine, long version, string? packageDigest)
    {
        Model = model;
        Engine = engine;
        Completer = new TextCompleter(engine, model.Tokenizer!);
        Version = version;
        _digest = new Lazy<string>(() => packageDigest ?? PlainDigest(model), LazyThreadSafetyMode.ExecutionAndPublication);
    }

    public LoadedModel Model { get; }

    public Engine Engine { get; }

    public TextCompleter Completer { get; }

    /// <summary>The sealed package's version; 0 for a plain model.</summary>
    public long Version { get; }

    /// <summary>
    /// What signed outputs name as the model that ran: a sealed package's digest (its signed manifest), or for a
    /// plain model the SHA-256 of its weight files (computed the first time it is asked for).
    /// </summary>
    public string Digest => _digest.Value;

    /// <summary>
    /// Opens <paramref name="path"/> (a model or a sealed package, verified and decrypted into memory with
    /// <paramref name="sealing"/>'s key and signers, no older than <paramref name="minimumVersion"/>) and starts its
    /// engine. Every failure is a <see cref="MinnowException"/>.
    /// </summary>
    public static ServedModel Load(string path, ServerOptions options, WorkerPool? pool, long minimumVersion = 0)
    {
        var sealing = options.Sealing;
        LoadedModel model;
        long version = 0;
        string? digest = null;
        try
        {
            if (SealedPackage.IsPackage(path))
            {
                DecryptedPackage package;
                using (var key = sealing.ReadKey())
                {
                    package = LoadedModel.OpenPackage(path, new PackageAccess(key, sealing.Policy(minimumVersion)));
                }

                version = package.Manifest.Version;
                digest = package.Digest;
                model = LoadedModel.Open(package, pool);
            }
            else
            {
                model = LoadedModel.Open(path, pool);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new MinnowException($"{path}: {e.Message}");
        }

        try
        {
            if (model.Tokenizer is null)
            {
                throw new MinnowException($"{model.Path}: the model has no tokenizer, so it cannot serve text.");
            }

            if (options.ContextSize > model.Config.MaxPositions)
            {
                throw new MinnowException($"--ctx {options.ContextSize} is larger than the context length of {model.Path} ({model.Config.MaxPositions} tokens).");
            }

            return new ServedModel(model, new Engine(model.Model, options.EngineOptions()), version, digest);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        Engine.Dispose();
        Model.Dispose();
    }

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<LoadedModel, Lazy<string>> s_variantDigests = [];

    /// <summary>The digest a signed output names for a plain model served beside this one (a rollout variant), computed once.</summary>
    public static string DigestOf(LoadedModel model) =>
        s_variantDigests.GetValue(model, m => new Lazy<string>(() => PlainDigest(m), LazyThreadSafetyMode.ExecutionAndPublication)).Value;

    private static string PlainDigest(LoadedModel model)
    {
        var files = model.Facts.WeightFiles;
        if (files.Count == 1)
        {
            using var stream = File.OpenRead(files[0]);
            return "sha256:" + Convert.ToHexStringLower(SHA256.HashData(stream));
        }

        // Several files: the SHA-256 of their names and digests, one "name sha256" line each, in name order.
        using var all = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (string f in files.OrderBy(Path.GetFileName, StringComparer.Ordinal))
        {
            using var stream = File.OpenRead(f);
            all.AppendData(System.Text.Encoding.UTF8.GetBytes($"{Path.GetFileName(f)} {Convert.ToHexStringLower(SHA256.HashData(stream))}\n"));
        }

        return "sha256:" + Convert.ToHexStringLower(all.GetHashAndReset());
    }
}
