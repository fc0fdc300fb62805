using System.Security.Cryptography;
using System.Text;

namespace Minnow.Sealing;

/// <summary>
/// ECDSA P-256 keys for signing packages, update indexes and outputs: private keys as PKCS#8 PEM, public keys as
/// SubjectPublicKeyInfo PEM (what OpenSSL and sigstore's model signing read). A key's id is the lowercase hex
/// SHA-256 of its SubjectPublicKeyInfo DER.
/// </summary>
public static class SigningKey
{
    public static ECDsa Generate() => ECDsa.Create(ECCurve.NamedCurves.nistP256);

    /// <summary>Reads a PEM private key (PKCS#8 or SEC1 "EC PRIVATE KEY") that must be on P-256.</summary>
    public static ECDsa LoadPrivate(string path) => Load(path, wantPrivate: true);

    /// <summary>Reads a PEM public key; a private key file is accepted too (its public half is used).</summary>
    public static ECDsa LoadPublic(string path) => Load(path, wantPrivate: false);

    /// <summary>A public key from SubjectPublicKeyInfo DER bytes.</summary>
    public static ECDsa FromSubjectPublicKeyInfo(ReadOnlySpan<byte> der, string source)
    {
        var key = ECDsa.Create();
        try
        {
            key.ImportSubjectPublicKeyInfo(der, out int read);
            if (read != der.Length)
            {
                throw new CryptographicException("trailing bytes after the key");
            }
        }
        catch (Exception e) when (e is CryptographicException or PlatformNotSupportedException or ArgumentException)
        {
            key.Dispose();
            throw new MinnowException($"{source}: the public key is not an ECDSA P-256 key.");
        }

        CheckCurve(key, source);
        return key;
    }

    public static string KeyId(ECDsa key) => Convert.ToHexStringLower(SHA256.HashData(key.ExportSubjectPublicKeyInfo()));

    public static void WritePrivate(ECDsa key, string path) => SecretFile.Write(path, Encoding.ASCII.GetBytes(key.ExportPkcs8PrivateKeyPem() + "\n"));

    public static void WritePublic(ECDsa key, string path)
    {
        string full = Path.GetFullPath(path);
        string temp = full + ".tmp";
        File.WriteAllText(temp, key.ExportSubjectPublicKeyInfoPem() + "\n");
        File.Move(temp, full, overwrite: true);
    }

    private static ECDsa Load(string path, bool wantPrivate)
    {
        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: key file not found.");
        }

        string pem = File.ReadAllText(path);
        var key = ECDsa.Create();
        try
        {
            key.ImportFromPem(pem);
        }
        catch (Exception e) when (e is ArgumentException or CryptographicException or PlatformNotSupportedException)
        {
            key.Dispose();
            throw new MinnowException($"{path}: not an ECDSA key in PEM form ({(wantPrivate ? "a private key, as minnow keygen writes" : "a public key")}).");
        }

        CheckCurve(key, path);
        if (wantPrivate)
        {
            try
            {
                _ = key.ExportParameters(includePrivateParameters: true);
            }
            catch (CryptographicException)
            {
                key.Dispose();
                throw new MinnowException($"{path}: holds a public key; signing needs the private key.");
            }
        }

        return key;
    }

    private static void CheckCurve(ECDsa key, string source)
    {
        var curve = key.ExportParameters(false).Curve;
        bool p256 = curve.IsNamed && (curve.Oid.Value == "1.2.840.10045.3.1.7" || curve.Oid.FriendlyName is "nistP256" or "ECDSA_P256");
        if (key.KeySize != 256 || !p256)
        {
            key.Dispose();
            throw new MinnowException($"{source}: the key is not on the P-256 curve.");
        }
    }
}
