using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Minnow.Sealing;

namespace Minnow.Server;

/// <summary>
/// How <c>minnow serve</c> treats sealed packages, signed updates and signed outputs: the package key (read from its
/// file or the environment each time a package is opened, and zeroed after), the signers a package and an update
/// index must come from, where updates are polled, and the key that signs every response.
/// </summary>
public sealed record ServerSealing
{
    /// <summary>The package key's file; null for <see cref="PackageKey.EnvironmentVariable"/>.</summary>
    public string? KeyFile { get; init; }

    /// <summary>Public keys a package (and an update index) must be signed by; empty accepts the key a package carries.</summary>
    public IReadOnlyList<ECDsa> TrustedSigners { get; init; } = [];

    /// <summary>Packages older than this are refused.</summary>
    public long MinimumVersion { get; init; }

    /// <summary>The signed update index to poll (HTTPS only); null for no updates.</summary>
    public Uri? UpdateSource { get; init; }

    /// <summary>A certificate authority trusted for the update server besides the system's (a private CA).</summary>
    public X509Certificate2? UpdateAuthority { get; init; }

    public TimeSpan UpdateInterval { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Where downloads (still encrypted) and the accepted versions are kept; null for a folder under the temp folder.</summary>
    public string? UpdateFolder { get; init; }

    /// <summary>When set, every completion is signed with this key (see <see cref="SignedOutput"/>).</summary>
    public ECDsa? OutputSigner { get; init; }

    internal void Validate()
    {
        if (UpdateSource is { } uri && uri.Scheme != Uri.UriSchemeHttps)
        {
            throw new MinnowException($"--update-source must be an https:// address (got {uri}).");
        }

        if (UpdateSource is not null && TrustedSigners.Count == 0)
        {
            throw new MinnowException("--update-source needs --trust PUBLIC_KEY: updates are accepted only from a signer the server trusts.");
        }

        if (UpdateInterval <= TimeSpan.Zero)
        {
            throw new MinnowException("--update-interval must be positive.");
        }
    }

    /// <summary>The policy a package must meet; <paramref name="minimumVersion"/> raises the floor (an update is never older than what runs).</summary>
    internal PackagePolicy Policy(long minimumVersion = 0) =>
        new() { TrustedSigners = TrustedSigners, MinimumVersion = Math.Max(MinimumVersion, minimumVersion) };

    /// <summary>The package key, read now; the caller disposes (zeroes) it as soon as the package is open.</summary>
    internal PackageKey? ReadKey() => KeyFile is { } path ? PackageKey.FromFile(path) : PackageKey.FromEnvironment();
}
