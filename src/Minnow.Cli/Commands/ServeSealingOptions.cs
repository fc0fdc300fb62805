using System.CommandLine;
using System.Security.Cryptography.X509Certificates;
using Minnow.Sealing;
using Minnow.Server;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>serve</c>'s options for sealed packages (<c>--key-file</c>, <c>--trust</c>, <c>--min-version</c>), signed updates
/// (<c>--update-source</c> and friends) and signed outputs (<c>--sign-outputs</c>).
/// </summary>
internal sealed class ServeSealingOptions
{
    private readonly PackageOptions _package = new();

    /// <summary>--key-file, --trust and --min-version: for the model, its updates, and adapters or variants from packages.</summary>
    public PackageOptions Package => _package;

    private readonly Option<string?> _updateSource = new("--update-source")
    {
        Description = "Poll this signed update index (https://) and put newer sealed packages of the model in service without a restart (needs --trust).",
    };

    private readonly Option<string?> _updateCa = new("--update-ca")
    {
        Description = "A certificate authority (PEM) to trust for the update server instead of the system's (a private CA).",
    };

    private readonly Option<double> _updateInterval = new("--update-interval")
    {
        Description = "Seconds between polls of --update-source.",
        DefaultValueFactory = _ => 300,
    };

    private readonly Option<string?> _updateDir = new("--update-dir")
    {
        Description = "Where downloaded packages (still encrypted) and the accepted versions are kept (default: under the temp folder).",
    };

    private readonly Option<string?> _signOutputs = new("--sign-outputs")
    {
        Description = "Sign every completion with this ECDSA P-256 private key (PEM, from minnow keygen); check one with minnow verify-output.",
    };

    public void AddTo(Command command)
    {
        _package.AddTo(command);
        command.Options.Add(_updateSource);
        command.Options.Add(_updateCa);
        command.Options.Add(_updateInterval);
        command.Options.Add(_updateDir);
        command.Options.Add(_signOutputs);
    }

    /// <summary>The options as the server takes them; the keys read here live as long as the server.</summary>
    public ServerSealing Read(ParseResult r)
    {
        Uri? source = null;
        if (r.GetValue(_updateSource) is string text && !Uri.TryCreate(text, UriKind.Absolute, out source))
        {
            throw new MinnowException($"--update-source: '{text}' is not an address.");
        }

        double interval = r.GetValue(_updateInterval);
        if (interval is <= 0 or > 86_400)
        {
            throw new MinnowException($"--update-interval must be between 0 and 86400 seconds (got {interval}).");
        }

        X509Certificate2? authority = null;
        if (r.GetValue(_updateCa) is string ca)
        {
            try
            {
                authority = X509CertificateLoader.LoadCertificateFromFile(ca);
            }
            catch (Exception e) when (e is System.Security.Cryptography.CryptographicException or IOException or UnauthorizedAccessException)
            {
                throw new MinnowException($"--update-ca: {ca} is not a readable certificate ({e.Message}).");
            }
        }

        string? keyFile = r.GetValue(_package.KeyFile);
        if (keyFile is not null && !File.Exists(keyFile))
        {
            throw new MinnowException($"--key-file: {keyFile}: no such file.");
        }

        return new ServerSealing
        {
            KeyFile = keyFile,
            TrustedSigners = _package.TrustedKeys(r),
            MinimumVersion = r.GetValue(_package.MinVersion),
            UpdateSource = source,
            UpdateAuthority = authority,
            UpdateInterval = TimeSpan.FromSeconds(interval),
            UpdateFolder = r.GetValue(_updateDir),
            OutputSigner = r.GetValue(_signOutputs) is string signKey ? SigningKey.LoadPrivate(signKey) : null,
        };
    }
}
