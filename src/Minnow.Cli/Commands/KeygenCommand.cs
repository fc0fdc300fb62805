using System.CommandLine;
using Minnow.Sealing;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow keygen --out PREFIX</c>: a package key (PREFIX.key, 256 bits as hex) and an ECDSA P-256 signing key
/// pair (PREFIX.sign.pem private, PREFIX.pub.pem public). Secret files are readable by the owner only.
/// </summary>
internal static class KeygenCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out", "-o") { Description = "Path prefix of the files to write: PREFIX.key, PREFIX.sign.pem, PREFIX.pub.pem.", Required = true };
        var force = new Option<bool>("--force") { Description = "Overwrite existing key files." };
        var json = JsonOption();
        var command = new Command("keygen", "Make a package key (AES-256) and an ECDSA P-256 signing key pair for minnow seal.")
        {
            output, force, json,
        };

        command.SetSyncAction((r, ct) =>
        {
            string prefix = Path.GetFullPath(r.GetValue(output)!);
            string keyPath = prefix + ".key", signPath = prefix + ".sign.pem", publicPath = prefix + ".pub.pem";
            string? folder = Path.GetDirectoryName(prefix);
            if (folder != null && !Directory.Exists(folder))
            {
                throw new MinnowException($"{folder}: no such folder.");
            }

            foreach (string p in new[] { keyPath, signPath, publicPath })
            {
                if (File.Exists(p) && !r.GetValue(force))
                {
                    throw new MinnowException($"{p} exists; pass --force to overwrite it.");
                }
            }

            using (var key = PackageKey.Generate())
            {
                key.WriteFile(keyPath);
            }

            using var signer = SigningKey.Generate();
            SigningKey.WritePrivate(signer, signPath);
            SigningKey.WritePublic(signer, publicPath);
            string id = SigningKey.KeyId(signer);
            var o = Out(r);
            if (r.GetValue(json))
            {
                WriteJson(o, w =>
                {
                    w.WriteString("package_key", keyPath);
                    w.WriteString("signing_key", signPath);
                    w.WriteString("public_key", publicPath);
                    w.WriteString("keyid", id);
                });
            }
            else
            {
                o.WriteLine($"package key {keyPath} (keep it secret; devices need it to load packages)");
                o.WriteLine($"signing key {signPath} (keep it secret), public key {publicPath} (give it to devices: --trust)");
                o.WriteLine($"key id {id}");
            }

            return 0;
        });
        return command;
    }
}
