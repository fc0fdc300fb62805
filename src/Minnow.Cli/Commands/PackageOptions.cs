using System.CommandLine;
using System.Security.Cryptography;
using Minnow.Loading;
using Minnow.Sealing;
using Minnow.Tensors;

namespace Minnow.Cli.Commands;

/// <summary>The options that open a sealed package as MODEL: its key, the signers to trust, the lowest version.</summary>
internal sealed class PackageOptions
{
    public Option<string?> KeyFile { get; } = new("--key-file")
    {
        Description = $"The key of a sealed package given as MODEL (default: ${PackageKey.EnvironmentVariable}).",
    };

    public Option<string[]> Trust { get; } = new("--trust")
    {
        Description = "A public key (PEM) a sealed package must be signed by (repeatable; default: the key it carries, which proves only that it is intact).",
    };

    public Option<long> MinVersion { get; } = new("--min-version")
    {
        Description = "Refuse a sealed package older than this version.",
    };

    public void AddTo(Command command)
    {
        command.Options.Add(KeyFile);
        command.Options.Add(Trust);
        command.Options.Add(MinVersion);
    }

    /// <summary>The key from --key-file or the environment, or null when neither gives one. The caller disposes it.</summary>
    public PackageKey? Key(ParseResult r) => r.GetValue(KeyFile) is string path ? PackageKey.FromFile(path) : PackageKey.FromEnvironment();

    public List<ECDsa> TrustedKeys(ParseResult r) => (r.GetValue(Trust) ?? []).Select(SigningKey.LoadPublic).ToList();

    /// <summary>Opens MODEL as a model path or a sealed package (verified, decrypted into memory; the key zeroed after).</summary>
    public LoadedModel Open(ParseResult r, string path, WorkerPool? pool = null)
    {
        if (!SealedPackage.IsPackage(path))
        {
            return LoadedModel.Open(path, pool);
        }

        return LoadedModel.Open(OpenPackage(r, path), pool);
    }

    /// <summary>Verifies and decrypts a sealed package with the key and policy the options give.</summary>
    public DecryptedPackage OpenPackage(ParseResult r, string path)
    {
        var trusted = TrustedKeys(r);
        try
        {
            using var key = Key(r);
            return LoadedModel.OpenPackage(path, new PackageAccess(key, new PackagePolicy { TrustedSigners = trusted, MinimumVersion = r.GetValue(MinVersion) }));
        }
        finally
        {
            trusted.ForEach(k => k.Dispose());
        }
    }
}
