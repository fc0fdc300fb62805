using System.CommandLine;
using Minnow.Sealing;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary>
/// <c>minnow verify-output FILE --trust PUB [--package-digest D] [--request FILE]</c>: checks a signed output (the
/// JSON a server returns, or its <c>signature</c> object) against the device's public key.
/// </summary>
internal static class VerifyOutputCommand
{
    public static Command Create()
    {
        var file = new Argument<string>("file") { Description = "The signed output: a JSON file (a response body with a \"signature\" object, or that object); - for stdin." };
        var trust = new Option<string>("--trust") { Description = "The public key (PEM) of the device that signed it.", Required = true };
        var digest = new Option<string?>("--package-digest") { Description = "Also require this package digest (sha256:…)." };
        var request = new Option<string?>("--request") { Description = "Also require that it answers this request body (a file)." };
        var json = JsonOption();
        var command = new Command("verify-output", "Verify a signed model output: the signature over the request hash, the text, the package digest and the time.")
        {
            file, trust, digest, request, json,
        };

        command.SetSyncAction((r, ct) =>
        {
            string path = r.GetValue(file)!;
            string text = path == "-" ? Console.In.ReadToEnd() : File.Exists(path) ? File.ReadAllText(path) : throw new MinnowException($"{path}: no such file.");
            var output = SignedOutput.Parse(text, path);
            using var key = SigningKey.LoadPublic(r.GetValue(trust)!);
            string? problem = !output.Verify(key) ? "the signature does not verify (the output, request hash, package digest or time was changed, or another key signed it)"
                : r.GetValue(digest) is string d && d != output.PackageDigest ? $"it was made by package {output.PackageDigest}, not {d}"
                : r.GetValue(request) is string q && !output.Answers(File.ReadAllBytes(q)) ? $"it does not answer the request in {q}"
                : null;
            if (problem != null)
            {
                throw new MinnowException($"{path}: {problem}.");
            }

            var o = Out(r);
            if (r.GetValue(json))
            {
                WriteJson(o, w =>
                {
                    w.WriteBoolean("ok", true);
                    w.WriteString("keyid", SigningKey.KeyId(key));
                    w.WriteString("package_digest", output.PackageDigest);
                    w.WriteString("request_sha256", output.RequestSha256);
                    w.WriteString("timestamp", output.Timestamp.UtcDateTime.ToString("O"));
                });
            }
            else
            {
                o.WriteLine($"OK: signed by {SigningKey.KeyId(key)} at {output.Timestamp.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC; package {output.PackageDigest}; {output.Output.Length} characters of output");
            }

            return 0;
        });
        return command;
    }
}
