using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Minnow.Sealing;

/// <summary>
/// One sealed file: its name and plaintext size and SHA-256, and where its encrypted chunks lie in the package
/// (offset, encrypted size, chunk count) with the SHA-256 of their authentication tags in order (checked before
/// anything is decrypted) and the SHA-256 of their plaintext chunks' SHA-256 digests in order (checked while
/// decrypting, chunk by chunk on every core: a holder of the package key who forges chunks still cannot match it).
/// </summary>
public sealed record SealedFileEntry(string Name, long Size, string Sha256, long Offset, long EncryptedSize, long Chunks, string TagsSha256, string ChunksSha256);

/// <summary>
/// What a sealed package holds, signed: an in-toto statement (https://in-toto.io/Statement/v1) in OpenSSF model
/// signing's shape — predicate type <c>https://model_signing/signature/v1.0</c>, one resource per file with its
/// SHA-256, the subject digest the SHA-256 of the resource digests in name order — so a model-signing verifier can
/// check the decrypted files; the package's own facts (version, expiry, package id, key check, chunk layout) are
/// in the predicate's <c>minnow_sealed_package</c> member.
/// </summary>
public sealed class PackageManifest
{
    public const string StatementType = "https://in-toto.io/Statement/v1";
    public const string PredicateType = "https://model_signing/signature/v1.0";
    public const string Format = "minnow-sealed-package/v1";
    public const string Cipher = "AES-256-GCM";
    public const string Kdf = "HKDF-SHA256";

    public required string ModelName { get; init; }

    /// <summary>The package version; a device never accepts a lower one than it has.</summary>
    public required long Version { get; init; }

    public required DateTimeOffset Created { get; init; }

    /// <summary>After this instant the package is refused.</summary>
    public required DateTimeOffset Expires { get; init; }

    /// <summary>16 random bytes: the HKDF salt, so every package has its own file keys.</summary>
    public required byte[] PackageId { get; init; }

    /// <summary>HKDF(package key, package id, "key-check"): tells a wrong key from a damaged package.</summary>
    public required byte[] KeyCheck { get; init; }

    public required int ChunkSize { get; init; }

    public required IReadOnlyList<SealedFileEntry> Files { get; init; }

    /// <summary>The subject digest: SHA-256 over the files' SHA-256 digests, in name order (as model signing computes it).</summary>
    public string SubjectDigest
    {
        get
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            foreach (var f in Files.OrderBy(f => f.Name, StringComparer.Ordinal))
            {
                hash.AppendData(Convert.FromHexString(f.Sha256));
            }

            return Convert.ToHexStringLower(hash.GetHashAndReset());
        }
    }

    public byte[] ToStatement()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("_type", StatementType);
            w.WriteStartArray("subject");
            w.WriteStartObject();
            w.WriteString("name", ModelName);
            w.WriteStartObject("digest");
            w.WriteString("sha256", SubjectDigest);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteString("predicateType", PredicateType);
            w.WriteStartObject("predicate");
            w.WriteStartObject("serialization");
            w.WriteString("method", "files");
            w.WriteString("hash_type", "sha256");
            w.WriteBoolean("allow_symlinks", false);
            w.WriteStartArray("ignore_paths");
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteStartArray("resources");
            foreach (var f in Files.OrderBy(f => f.Name, StringComparer.Ordinal))
            {
                w.WriteStartObject();
                w.WriteString("name", f.Name);
                w.WriteString("algorithm", "sha256");
                w.WriteString("digest", f.Sha256);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteStartObject("minnow_sealed_package");
            w.WriteString("format", Format);
            w.WriteNumber("version", Version);
            w.WriteString("created", Created.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture));
            w.WriteString("expires", Expires.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture));
            w.WriteString("cipher", Cipher);
            w.WriteString("kdf", Kdf);
            w.WriteBase64String("package_id", PackageId);
            w.WriteString("key_check", Convert.ToHexStringLower(KeyCheck));
            w.WriteNumber("chunk_size", ChunkSize);
            w.WriteStartArray("files");
            foreach (var f in Files)
            {
                w.WriteStartObject();
                w.WriteString("name", f.Name);
                w.WriteNumber("size", f.Size);
                w.WriteNumber("offset", f.Offset);
                w.WriteNumber("encrypted_size", f.EncryptedSize);
                w.WriteNumber("chunks", f.Chunks);
                w.WriteString("tags_sha256", f.TagsSha256);
                w.WriteString("chunks_sha256", f.ChunksSha256);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndObject();
        }

        return buffer.ToArray();
    }

    /// <summary>
    /// Reads and checks a statement: the types, every field, the file layout, and that the subject digest and
    /// the resources agree with the files. Anything wrong is a <see cref="MinnowException"/> naming <paramref name="source"/>.
    /// </summary>
    public static PackageManifest FromStatement(byte[] payload, string source)
    {
        try
        {
            using var doc = JsonDocument.Parse(payload);
            var root = doc.RootElement;
            if (root.GetProperty("_type").GetString() != StatementType || root.GetProperty("predicateType").GetString() != PredicateType)
            {
                throw Bad(source, $"the signed statement is not an in-toto statement of type {PredicateType}");
            }

            var predicate = root.GetProperty("predicate");
            var package = predicate.GetProperty("minnow_sealed_package");
            if (package.GetProperty("format").GetString() != Format || package.GetProperty("cipher").GetString() != Cipher || package.GetProperty("kdf").GetString() != Kdf)
            {
                throw Bad(source, $"the manifest is not a {Format} manifest ({Cipher}, {Kdf})");
            }

            var files = new List<SealedFileEntry>();
            var resources = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var r in predicate.GetProperty("resources").EnumerateArray())
            {
                if (!resources.TryAdd(r.GetProperty("name").GetString() ?? "", r.GetProperty("digest").GetString() ?? ""))
                {
                    throw Bad(source, "the manifest lists a file twice");
                }
            }

            foreach (var f in package.GetProperty("files").EnumerateArray())
            {
                string name = f.GetProperty("name").GetString() ?? "";
                if (!resources.TryGetValue(name, out string? sha))
                {
                    throw Bad(source, $"file '{name}' has no SHA-256 in the manifest's resources");
                }

                files.Add(new SealedFileEntry(name, f.GetProperty("size").GetInt64(), sha, f.GetProperty("offset").GetInt64(),
                    f.GetProperty("encrypted_size").GetInt64(), f.GetProperty("chunks").GetInt64(), f.GetProperty("tags_sha256").GetString() ?? "",
                    f.GetProperty("chunks_sha256").GetString() ?? ""));
            }

            var manifest = new PackageManifest
            {
                ModelName = root.GetProperty("subject")[0].GetProperty("name").GetString() ?? "",
                Version = package.GetProperty("version").GetInt64(),
                Created = ParseTime(package.GetProperty("created").GetString(), source),
                Expires = ParseTime(package.GetProperty("expires").GetString(), source),
                PackageId = Base64.Strict(package.GetProperty("package_id")),
                KeyCheck = Convert.FromHexString(package.GetProperty("key_check").GetString() ?? ""),
                ChunkSize = package.GetProperty("chunk_size").GetInt32(),
                Files = files,
            };
            if (files.Count != resources.Count)
            {
                throw Bad(source, "the manifest's resources and files disagree");
            }

            if (root.GetProperty("subject")[0].GetProperty("digest").GetProperty("sha256").GetString() != manifest.SubjectDigest)
            {
                throw Bad(source, "the manifest's subject digest does not match its files");
            }

            manifest.CheckShape(source);
            return manifest;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or IndexOutOfRangeException)
        {
            throw Bad(source, "the manifest is malformed");
        }
    }

    /// <summary>Checks the facts that need no file: sizes, ids, names, and that each file's chunk count fits its size.</summary>
    private void CheckShape(string source)
    {
        if (PackageId.Length != 16 || KeyCheck.Length != 32 || ChunkSize < 4096 || ChunkSize > (64 << 20) || Version < 0)
        {
            throw Bad(source, "the manifest has an invalid package id, key check, chunk size or version");
        }

        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var f in Files)
        {
            if (!Formats.FolderModelFiles.IsPlainName(f.Name) || !names.Add(f.Name) || f.Size < 0 || f.Sha256.Length != 64 || f.TagsSha256.Length != 64 || f.ChunksSha256.Length != 64 ||
                f.Chunks != ChunkCount(f.Size, ChunkSize) || f.EncryptedSize != f.Size + (f.Chunks * SealedPackage.TagSize))
            {
                throw Bad(source, $"the manifest's entry for '{f.Name}' is invalid");
            }
        }
    }

    public static long ChunkCount(long size, int chunkSize) => Math.Max(1, (size + chunkSize - 1) / chunkSize);

    private static DateTimeOffset ParseTime(string? text, string source) =>
        DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t)
            ? t
            : throw Bad(source, $"the manifest has an invalid time '{text}'");

    private static MinnowException Bad(string source, string what) => new($"{source}: {what}; the package is damaged or was not made by minnow seal.");

    internal static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);
}
