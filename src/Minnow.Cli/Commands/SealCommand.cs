using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Minnow.Loading;
using Minnow.Sealing;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow seal MODEL --out PKG --key-file K [--sign-key S] [--version N] [--expires DATE]</c> writes a sealed
/// package; <c>minnow seal --verify PKG [--key-file K] [--trust PUB]</c> checks one without running it.
/// </summary>
internal static class SealCommand
{
    public static Command Create()
    {
        var model = ModelArgument();
        var output = new Option<string?>("--out", "-o") { Description = "The package file to write." };
        var signKey = new Option<string?>("--sign-key")
        {
            Description = "The ECDSA P-256 private key (PEM, from minnow keygen) that signs the manifest (default: a one-time key, which proves only that the package is intact).",
        };
        var version = new Option<long>("--version") { Description = "The package version; devices refuse lower versions than they run.", DefaultValueFactory = _ => 1 };
        var expires = new Option<string?>("--expires") { Description = "When the package stops being accepted: a date (2027-06-30) or a time in UTC (default: a year from now)." };
        var verify = new Option<string?>("--verify") { Description = "Check this package (signature, manifest, expiry; with a key also the key and every chunk) instead of sealing." };
        var json = JsonOption();
        var command = new Command("seal", "Seal a model into a signed, encrypted package (AES-256-GCM, ECDSA P-256), or --verify one.")
        {
            model, output, signKey, version, expires, verify, json,
        };
        var package = new PackageOptions();
        package.AddTo(command);

        command.SetSyncAction((r, ct) =>
        {
            var o = Out(r);
            if (r.GetValue(verify) is string pkg)
            {
                return Verify(r, package, pkg, o, r.GetValue(json));
            }

            string path = DefaultModel.Resolve(r.GetValue(model));
            string outPath = r.GetValue(output) ?? throw new MinnowException("seal needs --out PKG (the package file to write).");
            using var key = package.Key(r) ?? throw new MinnowException($"seal needs --key-file K (a package key from minnow keygen) or ${PackageKey.EnvironmentVariable}.");
            bool oneTime = r.GetValue(signKey) is null;
            using var signer = r.GetValue(signKey) is string s ? SigningKey.LoadPrivate(s) : SigningKey.Generate();
            var options = new SealOptions { Version = r.GetValue(version), Expires = r.GetValue(expires) is string e ? ParseExpiry(e) : null };
            var watch = Stopwatch.StartNew();
            using var files = LoadedModel.FilesToSeal(path);
            var manifest = SealedPackage.Seal(files, outPath, key, signer, options, cancellation: ct);
            var verified = SealedPackage.Verify(outPath, key);
            if (oneTime)
            {
                Err(r).WriteLine("warning: signed with a one-time key; pass --sign-key (from minnow keygen) so devices can check who sealed it.");
            }

            long bytes = new FileInfo(outPath).Length;
            if (r.GetValue(json))
            {
                WriteJson(o, w =>
                {
                    w.WriteString("package", Path.GetFullPath(outPath));
                    WriteFacts(w, verified);
                    w.WriteNumber("size_bytes", bytes);
                    w.Number("seconds", watch.Elapsed.TotalSeconds);
                });
            }
            else
            {
                o.WriteLine($"sealed {manifest.Files.Count} files ({Bytes(manifest.Files.Sum(f => f.Size))}) into {Path.GetFullPath(outPath)} ({Bytes(bytes)}) in {F(watch.Elapsed.TotalSeconds, "0.0")} s");
                o.WriteLine($"version {manifest.Version}, expires {manifest.Expires.UtcDateTime:yyyy-MM-dd HH:mm} UTC, signed by {verified.SignerKeyId}, digest {verified.Digest}");
            }

            return 0;
        });
        return command;
    }

    private static int Verify(ParseResult r, PackageOptions package, string path, TextWriter o, bool json)
    {
        var trusted = package.TrustedKeys(r);
        try
        {
            using var key = package.Key(r);
            var policy = new PackagePolicy { TrustedSigners = trusted, MinimumVersion = r.GetValue(package.MinVersion) };
            VerifiedPackage verified;
            if (key is null)
            {
                verified = SealedPackage.Verify(path, key, policy);
            }
            else
            {
                // With the key, decrypt every chunk (into memory, then zeroed) and check every file's SHA-256.
                using var opened = SealedPackage.Open(path, key, policy, checkFileDigests: true);
                verified = opened.Verified;
            }

            string checkedWhat = (trusted.Count > 0 ? "signature by a trusted key" : "signature (by the key it carries)") +
                ", manifest, expiry, version" + (key != null ? ", package key, every chunk decrypted and authenticated, every file's SHA-256" : " (pass --key-file to check the key and every chunk)");
            if (json)
            {
                WriteJson(o, w =>
                {
                    w.WriteString("package", Path.GetFullPath(path));
                    w.WriteBoolean("ok", true);
                    w.WriteString("checked", checkedWhat);
                    WriteFacts(w, verified);
                });
            }
            else
            {
                var m = verified.Manifest;
                o.WriteLine($"OK {Path.GetFullPath(path)}: {m.ModelName}, version {m.Version}, {m.Files.Count} files ({Bytes(m.Files.Sum(f => f.Size))}), expires {m.Expires.UtcDateTime:yyyy-MM-dd HH:mm} UTC");
                o.WriteLine($"signed by {verified.SignerKeyId}; digest {verified.Digest}");
                o.WriteLine($"checked: {checkedWhat}");
            }

            return 0;
        }
        finally
        {
            trusted.ForEach(k => k.Dispose());
        }
    }

    private static void WriteFacts(System.Text.Json.Utf8JsonWriter w, VerifiedPackage verified)
    {
        var m = verified.Manifest;
        w.WriteString("model", m.ModelName);
        w.WriteNumber("version", m.Version);
        w.WriteString("expires", m.Expires.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture));
        w.WriteString("keyid", verified.SignerKeyId);
        w.WriteString("digest", verified.Digest);
        w.WriteStartArray("files");
        foreach (var f in m.Files)
        {
            w.WriteStartObject();
            w.WriteString("name", f.Name);
            w.WriteNumber("size", f.Size);
            w.WriteString("sha256", f.Sha256);
            w.WriteEndObject();
        }

        w.WriteEndArray();
    }

    internal static DateTimeOffset ParseExpiry(string text) =>
        DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t)
            ? t
            : throw new MinnowException($"--expires: '{text}' is not a date (e.g. 2027-06-30 or 2027-06-30T12:00:00Z).");
}
