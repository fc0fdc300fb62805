using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using Minnow.Formats;

namespace Minnow.Sealing;

/// <summary>What sealing needs besides the files and keys.</summary>
public sealed record SealOptions
{
    /// <summary>The package version (devices refuse versions lower than the one they run).</summary>
    public long Version { get; init; } = 1;

    /// <summary>When the package stops being accepted (default: a year after sealing).</summary>
    public DateTimeOffset? Expires { get; init; }

    /// <summary>The model's name in the signed statement (default: the folder or file name).</summary>
    public string? ModelName { get; init; }

    public int ChunkSize { get; init; } = SealedPackage.DefaultChunkSize;
}

/// <summary>What a package must satisfy to be opened.</summary>
public sealed record PackagePolicy
{
    /// <summary>
    /// Keys whose signature is required (any one of them). Empty: the signature is checked against the public key
    /// the package carries, which proves the manifest is intact but not who sealed it.
    /// </summary>
    public IReadOnlyList<ECDsa> TrustedSigners { get; init; } = [];

    /// <summary>Versions below this are refused (rollback).</summary>
    public long MinimumVersion { get; init; }

    /// <summary>The current time (default: the clock); packages past their expiry are refused.</summary>
    public DateTimeOffset? Now { get; init; }
}

/// <summary>
/// A sealed model package: the model's files encrypted with AES-256-GCM in chunks under per-file keys derived
/// with HKDF-SHA256 from the package key, and a manifest signed with ECDSA P-256 in a DSSE envelope
/// (<see cref="PackageManifest"/>). Each chunk's nonce is its index and a final-chunk flag, and its associated
/// data binds the package id, the file name, the index, the flag and the file size: chunks cannot be reordered,
/// moved between files or packages, or cut off unnoticed. Layout: "MINNOWPK", format 1 (u32), 4 reserved bytes;
/// the files' chunks (each ciphertext then its 16-byte tag); the header (JSON: the signer's public key, the DSSE
/// envelope, a MAC of the statement under a key derived from the package key); a 16-byte trailer (header offset
/// u64, header length u32, "MNPK").
/// </summary>
public static class SealedPackage
{
    public const int TagSize = 16;
    public const int NonceSize = 12;
    public const int DefaultChunkSize = 1 << 20;
    public const int MaxHeaderBytes = 16 << 20;
    public const int TrailerSize = 16;
    public const int PrefixSize = 16;

    private static readonly byte[] Magic = "MINNOWPK"u8.ToArray();
    private static readonly byte[] TrailerMagic = "MNPK"u8.ToArray();

    /// <summary>Whether the file at <paramref name="path"/> starts as a sealed package does.</summary>
    public static bool IsPackage(string path)
    {
        if (!File.Exists(path))
        {
            return false;
        }

        Span<byte> head = stackalloc byte[8];
        using var f = File.OpenRead(path);
        return f.Read(head) == 8 && head.SequenceEqual(Magic);
    }

    /// <summary>
    /// Seals <paramref name="files"/> into <paramref name="outputPath"/> (a temporary file, renamed when complete)
    /// and returns the manifest.
    /// </summary>
    public static PackageManifest Seal(IModelFiles files, string outputPath, IPackageKeyProvider key, ECDsa signer, SealOptions? options = null,
        IProgress<double>? progress = null, CancellationToken cancellation = default)
    {
        options ??= new SealOptions();
        if (options.ChunkSize is < 4096 or > (64 << 20))
        {
            throw new MinnowException($"the chunk size must be between 4 KiB and 64 MiB (got {options.ChunkSize}).");
        }

        if (options.Version < 0)
        {
            throw new MinnowException($"the package version must not be negative (got {options.Version}).");
        }

        var now = DateTimeOffset.UtcNow;
        var expires = options.Expires ?? now.AddDays(365);
        if (expires <= now)
        {
            throw new MinnowException($"the expiry {expires:u} is in the past.");
        }

        byte[] packageId = RandomNumberGenerator.GetBytes(16);
        string full = Path.GetFullPath(outputPath);
        string temp = full + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        try
        {
            var entries = new List<SealedFileEntry>();
            using (var output = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                output.Write(Magic);
                Span<byte> prefix = stackalloc byte[8];
                BinaryPrimitives.WriteUInt32LittleEndian(prefix, 1);
                output.Write(prefix);
                long total = Math.Max(1, files.Names.Sum(files.SizeOf)), done = 0;
                foreach (string name in files.Names)
                {
                    cancellation.ThrowIfCancellationRequested();
                    entries.Add(SealFile(files, name, output, key, packageId, options.ChunkSize, b => progress?.Report((double)(done += b) / total), cancellation));
                }

                var manifest = new PackageManifest
                {
                    ModelName = options.ModelName ?? Path.GetFileName(files.Location.TrimEnd('/', '\\')),
                    Version = options.Version,
                    Created = new DateTimeOffset(now.Year, now.Month, now.Day, now.Hour, now.Minute, now.Second, TimeSpan.Zero),
                    Expires = new DateTimeOffset(expires.UtcDateTime.Year, expires.UtcDateTime.Month, expires.UtcDateTime.Day, expires.UtcDateTime.Hour,
                        expires.UtcDateTime.Minute, expires.UtcDateTime.Second, TimeSpan.Zero),
                    PackageId = packageId,
                    KeyCheck = Derive(key, packageId, "key-check"),
                    ChunkSize = options.ChunkSize,
                    Files = entries,
                };
                byte[] statement = manifest.ToStatement();
                var envelope = DsseEnvelope.Sign(DsseEnvelope.InTotoPayloadType, statement, signer);
                byte[] header = WriteHeader(signer, envelope, ManifestMac(key, packageId, statement));
                long headerOffset = output.Position;
                output.Write(header);
                Span<byte> trailer = stackalloc byte[TrailerSize];
                BinaryPrimitives.WriteInt64LittleEndian(trailer, headerOffset);
                BinaryPrimitives.WriteInt32LittleEndian(trailer[8..], header.Length);
                TrailerMagic.CopyTo(trailer[12..]);
                output.Write(trailer);
                output.Flush(flushToDisk: true);
                File.Move(temp, full, overwrite: true);
                return manifest;
            }
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    private static unsafe SealedFileEntry SealFile(IModelFiles files, string name, FileStream output, IPackageKeyProvider key, byte[] packageId, int chunkSize,
        Action<long> advanced, CancellationToken cancellation)
    {
        long size = files.SizeOf(name);
        long chunks = PackageManifest.ChunkCount(size, chunkSize);
        long offset = output.Position;
        byte[] fileKey = GC.AllocateArray<byte>(32, pinned: true);
        using var plainHash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var tagHash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var chunkHashes = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var chunkHash = new byte[32];
        var ciphertext = new byte[chunkSize];
        var tag = new byte[TagSize];
        var nonce = new byte[NonceSize];
        try
        {
            DeriveFileKey(key, packageId, name, fileKey);
            using var aes = new AesGcm(fileKey, TagSize);
            using var source = size > 0 ? files.Open(name) : null;
            for (long c = 0; c < chunks; c++)
            {
                cancellation.ThrowIfCancellationRequested();
                long start = c * chunkSize;
                int length = (int)Math.Min(chunkSize, size - start);
                var plain = source is null ? ReadOnlySpan<byte>.Empty : new ReadOnlySpan<byte>(source.Pointer + start, length);
                bool final = c == chunks - 1;
                ChunkNonce(c, final, nonce);
                aes.Encrypt(nonce, plain, ciphertext.AsSpan(0, length), tag, ChunkAad(packageId, name, c, final, size));
                plainHash.AppendData(plain);
                SHA256.HashData(plain, chunkHash);
                chunkHashes.AppendData(chunkHash);
                tagHash.AppendData(tag);
                output.Write(ciphertext, 0, length);
                output.Write(tag);
                advanced(length);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(fileKey);
        }

        return new SealedFileEntry(name, size, Convert.ToHexStringLower(plainHash.GetHashAndReset()), offset, output.Position - offset, chunks,
            Convert.ToHexStringLower(tagHash.GetHashAndReset()), Convert.ToHexStringLower(chunkHashes.GetHashAndReset()));
    }

    /// <summary>
    /// Checks a package file without decrypting anything (see <see cref="Verify(PackageSource, IPackageKeyProvider?, PackagePolicy?)"/>).
    /// </summary>
    public static VerifiedPackage Verify(string path, IPackageKeyProvider? key, PackagePolicy? policy = null)
    {
        using var source = PackageSource.FromFile(path);
        return Verify(source, key, policy);
    }

    /// <summary>
    /// Checks everything that can be checked before decrypting: the layout, the signature (by a trusted key when
    /// <see cref="PackagePolicy.TrustedSigners"/> are given), the manifest, the expiry and the version, every file's
    /// chunk tags against the signed digests; and, with a key, that it is this package's key and the manifest's MAC.
    /// The chunks' contents are authenticated when decrypted (<see cref="Open(PackageSource, IPackageKeyProvider, PackagePolicy?)"/>). Anything wrong is a <see cref="MinnowException"/> with one line saying what.
    /// </summary>
    public static VerifiedPackage Verify(PackageSource source, IPackageKeyProvider? key, PackagePolicy? policy = null)
    {
        policy ??= new PackagePolicy();
        string name = source.Name;
        long length = source.Length;
        if (length < PrefixSize + TrailerSize)
        {
            throw new MinnowException($"{name}: not a sealed package (too short).");
        }

        Span<byte> prefix = stackalloc byte[PrefixSize];
        source.Read(0, prefix);
        if (!prefix[..8].SequenceEqual(Magic))
        {
            throw new MinnowException($"{name}: not a sealed package (it does not start with MINNOWPK).");
        }

        uint format = BinaryPrimitives.ReadUInt32LittleEndian(prefix[8..]);
        if (format != 1 || BinaryPrimitives.ReadUInt32LittleEndian(prefix[12..]) != 0)
        {
            throw new MinnowException($"{name}: sealed package format {format} is not supported (this Minnow reads format 1).");
        }

        Span<byte> trailer = stackalloc byte[TrailerSize];
        source.Read(length - TrailerSize, trailer);
        long headerOffset = BinaryPrimitives.ReadInt64LittleEndian(trailer);
        int headerLength = BinaryPrimitives.ReadInt32LittleEndian(trailer[8..]);
        if (!trailer[12..].SequenceEqual(TrailerMagic) || headerLength <= 0 || headerLength > MaxHeaderBytes || headerOffset < PrefixSize ||
            headerOffset != length - TrailerSize - headerLength)
        {
            throw new MinnowException($"{name}: the package is truncated or damaged (its trailer does not point at a header).");
        }

        byte[] headerBytes = new byte[headerLength];
        source.Read(headerOffset, headerBytes);
        var (publicKey, envelope, mac) = ReadHeader(headerBytes, name);
        using (publicKey)
        {
            string embeddedId = SigningKey.KeyId(publicKey);
            if (!envelope.Signatures.Any(s => s.KeyId == embeddedId))
            {
                throw new MinnowException($"{name}: the signer's public key in the package does not match the signature's key id; the package was changed.");
            }

            CheckSignature(envelope, publicKey, policy, name);
        }

        var manifest = PackageManifest.FromStatement(envelope.Payload, name);
        long expected = PrefixSize;
        foreach (var f in manifest.Files)
        {
            if (f.Offset != expected)
            {
                throw new MinnowException($"{name}: the package is damaged (file '{f.Name}' is not where the manifest puts it).");
            }

            expected += f.EncryptedSize;
        }

        if (expected != headerOffset)
        {
            throw new MinnowException($"{name}: the package is truncated or has extra bytes (the files take {expected - PrefixSize} bytes, the package holds {headerOffset - PrefixSize}).");
        }

        var now = policy.Now ?? DateTimeOffset.UtcNow;
        if (now > manifest.Expires)
        {
            throw new MinnowException($"{name}: the package expired on {manifest.Expires.UtcDateTime:yyyy-MM-dd HH:mm} UTC; refusing it.");
        }

        if (manifest.Version < policy.MinimumVersion)
        {
            throw new MinnowException($"{name}: package version {manifest.Version} is older than version {policy.MinimumVersion}; refusing a rollback.");
        }

        if (key != null)
        {
            CheckKey(key, manifest, envelope.Payload, mac, name);
        }

        CheckTags(source, manifest, name);

        return new VerifiedPackage(name, manifest, envelope, KeyIdOf(envelope));
    }

    /// <summary>
    /// Verifies the package (<see cref="Verify(PackageSource, IPackageKeyProvider?, PackagePolicy?)"/>) and only
    /// then decrypts every file into anonymous memory, checking each chunk's tag and each file's SHA-256. The
    /// derived keys are zeroed after use; on any failure the decrypted bytes are zeroed and freed.
    /// </summary>
    public static DecryptedPackage Open(string path, IPackageKeyProvider key, PackagePolicy? policy = null, bool checkFileDigests = false)
    {
        using var source = PackageSource.FromFile(path);
        return Open(source, key, policy, checkFileDigests);
    }

    /// <summary>
    /// As <see cref="Open(string, IPackageKeyProvider, PackagePolicy?, bool)"/>. Each chunk is authenticated and its
    /// SHA-256 checked against the signed chunk digests while decrypting (on every core);
    /// <paramref name="checkFileDigests"/> also recomputes every whole file's SHA-256 (one more pass, single-threaded
    /// per file), as <c>minnow seal --verify</c> does.
    /// </summary>
    public static DecryptedPackage Open(PackageSource source, IPackageKeyProvider key, PackagePolicy? policy = null, bool checkFileDigests = false)
    {
        ArgumentNullException.ThrowIfNull(key);
        var verified = Verify(source, key, policy);
        var memories = new Dictionary<string, Tensors.AnonymousMemory>(StringComparer.Ordinal);
        try
        {
            foreach (var f in verified.Manifest.Files)
            {
                var memory = new Tensors.AnonymousMemory(f.Size);
                memories.Add(f.Name, memory);
                DecryptFile(source, key, verified.Manifest, f, memory, checkFileDigests);
            }

            return new DecryptedPackage(source.Name, verified, memories);
        }
        catch
        {
            foreach (var m in memories.Values)
            {
                m.Release();
            }

            throw;
        }
    }

    private static unsafe void DecryptFile(PackageSource source, IPackageKeyProvider key, PackageManifest manifest, SealedFileEntry f, Tensors.AnonymousMemory memory, bool checkFileDigest)
    {
        byte[] fileKey = GC.AllocateArray<byte>(32, pinned: true);
        try
        {
            DeriveFileKey(key, manifest.PackageId, f.Name, fileKey);
            int chunk = manifest.ChunkSize;
            int workers = (int)Math.Clamp(f.Chunks, 1, Environment.ProcessorCount);
            long failedChunk = -1;
            var chunkHashes = new byte[f.Chunks * 32];
            Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, w =>
            {
                using var aes = new AesGcm(fileKey, TagSize);
                byte[]? buffer = null;
                var nonce = new byte[NonceSize];
                for (long c = w; c < f.Chunks && Interlocked.Read(ref failedChunk) < 0; c += workers)
                {
                    int length = (int)Math.Min(chunk, f.Size - (c * chunk));
                    long offset = f.Offset + (c * (chunk + TagSize));
                    // Straight from the mapped package file when it is one (no copy); else through a buffer.
                    if (!source.TryMapped(offset, length + TagSize, out var sealedChunk))
                    {
                        buffer ??= new byte[chunk + TagSize];
                        source.Read(offset, buffer.AsSpan(0, length + TagSize));
                        sealedChunk = buffer.AsSpan(0, length + TagSize);
                    }

                    bool final = c == f.Chunks - 1;
                    ChunkNonce(c, final, nonce);
                    var plain = length == 0 ? Span<byte>.Empty : new Span<byte>(memory.Pointer + (c * chunk), length);
                    try
                    {
                        aes.Decrypt(nonce, sealedChunk[..length], sealedChunk.Slice(length, TagSize), plain, ChunkAad(manifest.PackageId, f.Name, c, final, f.Size));
                        SHA256.HashData(plain, chunkHashes.AsSpan((int)(c * 32), 32));
                    }
                    catch (AuthenticationTagMismatchException)
                    {
                        Interlocked.CompareExchange(ref failedChunk, c, -1);
                    }
                }
            });
            if (failedChunk >= 0)
            {
                throw new MinnowException($"{source.Name}: chunk {failedChunk} of '{f.Name}' fails authentication; the package was changed.");
            }

            if (!CryptographicOperations.FixedTimeEquals(SHA256.HashData(chunkHashes), Convert.FromHexString(f.ChunksSha256)))
            {
                throw new MinnowException($"{source.Name}: the chunks of '{f.Name}' do not match their SHA-256 digests in the manifest; the package was changed.");
            }

            if (!checkFileDigest)
            {
                return;
            }

            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            for (long done = 0; done < f.Size; done += 1 << 30)
            {
                hash.AppendData(new ReadOnlySpan<byte>(memory.Pointer + done, (int)Math.Min(1 << 30, f.Size - done)));
            }

            if (!CryptographicOperations.FixedTimeEquals(hash.GetHashAndReset(), Convert.FromHexString(f.Sha256)))
            {
                throw new MinnowException($"{source.Name}: '{f.Name}' does not match its SHA-256 in the manifest; the package was changed.");
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(fileKey);
        }
    }

    private static void CheckSignature(DsseEnvelope envelope, ECDsa embedded, PackagePolicy policy, string name)
    {
        if (envelope.PayloadType != DsseEnvelope.InTotoPayloadType)
        {
            throw new MinnowException($"{name}: the signed payload is {envelope.PayloadType}, not an in-toto statement.");
        }

        if (policy.TrustedSigners.Count > 0)
        {
            if (!policy.TrustedSigners.Any(envelope.IsSignedBy))
            {
                throw new MinnowException($"{name}: the manifest is not signed by a trusted key (signed by {KeyIdOf(envelope)}); refusing it.");
            }
        }
        else if (!envelope.IsSignedBy(embedded))
        {
            throw new MinnowException($"{name}: the manifest's signature does not verify; the package was changed.");
        }
    }

    private static void CheckKey(IPackageKeyProvider key, PackageManifest manifest, byte[] statement, byte[] mac, string name)
    {
        byte[] check = Derive(key, manifest.PackageId, "key-check");
        if (!CryptographicOperations.FixedTimeEquals(check, manifest.KeyCheck))
        {
            throw new MinnowException($"{name}: the package key does not open this package (wrong key).");
        }

        if (!CryptographicOperations.FixedTimeEquals(ManifestMac(key, manifest.PackageId, statement), mac))
        {
            throw new MinnowException($"{name}: the manifest's MAC does not verify under the package key; the manifest was changed or comes from another package.");
        }
    }

    private static void CheckTags(PackageSource source, PackageManifest manifest, string name)
    {
        var tag = new byte[TagSize];
        foreach (var f in manifest.Files)
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            for (long c = 0; c < f.Chunks; c++)
            {
                long length = Math.Min(manifest.ChunkSize, f.Size - (c * manifest.ChunkSize));
                source.Read(f.Offset + (c * ((long)manifest.ChunkSize + TagSize)) + length, tag);
                hash.AppendData(tag);
            }

            if (!CryptographicOperations.FixedTimeEquals(hash.GetHashAndReset(), Convert.FromHexString(f.TagsSha256)))
            {
                throw new MinnowException($"{name}: the encrypted chunks of '{f.Name}' are not the ones the manifest signed; the package was changed.");
            }
        }
    }

    private static string KeyIdOf(DsseEnvelope envelope) => envelope.Signatures.Count > 0 ? envelope.Signatures[0].KeyId : "no key";

    private static byte[] WriteHeader(ECDsa signer, DsseEnvelope envelope, byte[] mac)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("mediaType", PackageManifest.Format);
            w.WriteStartObject("verificationMaterial");
            w.WriteBase64String("publicKey", signer.ExportSubjectPublicKeyInfo());
            w.WriteEndObject();
            w.WritePropertyName("dsseEnvelope");
            envelope.WriteTo(w);
            w.WriteBase64String("manifestMac", mac);
            w.WriteEndObject();
        }

        return buffer.ToArray();
    }

    private static (ECDsa PublicKey, DsseEnvelope Envelope, byte[] Mac) ReadHeader(byte[] header, string name)
    {
        try
        {
            using var doc = JsonDocument.Parse(header);
            var root = doc.RootElement;
            Json.RequireMembers(root, "mediaType", "verificationMaterial", "dsseEnvelope", "manifestMac");
            Json.RequireMembers(root.GetProperty("verificationMaterial"), "publicKey");
            if (root.GetProperty("mediaType").GetString() != PackageManifest.Format)
            {
                throw new MinnowException($"{name}: the package header is not a {PackageManifest.Format} header.");
            }

            byte[] spki = Base64.Strict(root.GetProperty("verificationMaterial").GetProperty("publicKey"));
            var envelope = DsseEnvelope.Parse(root.GetProperty("dsseEnvelope"), name);
            byte[] mac = Base64.Strict(root.GetProperty("manifestMac"));
            return (SigningKey.FromSubjectPublicKeyInfo(spki, name), envelope, mac);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new MinnowException($"{name}: the package header is damaged (not the JSON minnow seal writes).");
        }
    }

    private static byte[] Derive(IPackageKeyProvider key, byte[] packageId, string purpose)
    {
        var output = new byte[32];
        key.DeriveKey(packageId, PackageManifest.Utf8("minnow-seal/v1 " + purpose), output);
        return output;
    }

    private static void DeriveFileKey(IPackageKeyProvider key, byte[] packageId, string name, Span<byte> output) =>
        key.DeriveKey(packageId, PackageManifest.Utf8("minnow-seal/v1 file-key\0" + name), output);

    private static byte[] ManifestMac(IPackageKeyProvider key, byte[] packageId, byte[] statement)
    {
        byte[] macKey = Derive(key, packageId, "manifest-mac");
        try
        {
            return HMACSHA256.HashData(macKey, statement);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(macKey);
        }
    }

    /// <summary>The chunk's nonce: its index (big-endian, 8 bytes), 3 zero bytes, then 1 for the final chunk.</summary>
    private static void ChunkNonce(long index, bool final, Span<byte> nonce)
    {
        nonce.Clear();
        BinaryPrimitives.WriteInt64BigEndian(nonce, index);
        nonce[NonceSize - 1] = final ? (byte)1 : (byte)0;
    }

    /// <summary>The chunk's associated data: format, package id, file name, index, final flag and file size.</summary>
    private static byte[] ChunkAad(byte[] packageId, string name, long index, bool final, long size)
    {
        byte[] nameBytes = Encoding.UTF8.GetBytes(name);
        var aad = new byte[14 + 16 + 4 + nameBytes.Length + 8 + 1 + 8];
        "minnow-seal/v1"u8.CopyTo(aad);
        packageId.CopyTo(aad, 14);
        BinaryPrimitives.WriteInt32BigEndian(aad.AsSpan(30), nameBytes.Length);
        nameBytes.CopyTo(aad, 34);
        int at = 34 + nameBytes.Length;
        BinaryPrimitives.WriteInt64BigEndian(aad.AsSpan(at), index);
        aad[at + 8] = final ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteInt64BigEndian(aad.AsSpan(at + 9), size);
        return aad;
    }
}

/// <summary>A package whose signature, manifest (and, when a key was given, key and chunk tags) verified.</summary>
public sealed record VerifiedPackage(string Name, PackageManifest Manifest, DsseEnvelope Envelope, string SignerKeyId)
{
    /// <summary>"sha256:…" of the signed statement: names this exact package (its files, version and ciphertext).</summary>
    public string Digest => "sha256:" + Convert.ToHexStringLower(SHA256.HashData(Envelope.Payload));
}

/// <summary>Where a package's bytes are read from: a file, or memory (tests mutate packages in memory).</summary>
public abstract class PackageSource : IDisposable
{
    protected PackageSource(string name, long length)
    {
        Name = name;
        Length = length;
    }

    public string Name { get; }

    public long Length { get; }

    public static PackageSource FromFile(string path) => new FileSource(path);

    public static PackageSource FromMemory(ReadOnlyMemory<byte> bytes, string name) => new MemorySource(bytes, name);

    /// <summary>Fills <paramref name="destination"/> from <paramref name="offset"/>; reading past the end is a damaged package.</summary>
    public void Read(long offset, Span<byte> destination)
    {
        if (offset < 0 || offset > Length - destination.Length)
        {
            throw new MinnowException($"{Name}: the package is truncated (a read at byte {offset} of {destination.Length} bytes passes its end, {Length}).");
        }

        ReadCore(offset, destination);
    }

    protected abstract void ReadCore(long offset, Span<byte> destination);

    /// <summary>
    /// The bytes [offset, offset + length) in place, when the source is mapped into memory (a package file); false
    /// when it must be read with <see cref="Read"/>. The range is checked against <see cref="Length"/> first.
    /// </summary>
    public bool TryMapped(long offset, int length, out ReadOnlySpan<byte> bytes)
    {
        if (offset < 0 || length < 0 || offset > Length - length)
        {
            throw new MinnowException($"{Name}: the package is truncated (a read at byte {offset} of {length} bytes passes its end, {Length}).");
        }

        return TryMappedCore(offset, length, out bytes);
    }

    protected virtual bool TryMappedCore(long offset, int length, out ReadOnlySpan<byte> bytes)
    {
        bytes = default;
        return false;
    }

    public virtual void Dispose()
    {
    }

    private sealed unsafe class FileSource : PackageSource
    {
        private readonly SafeFileHandle _handle;
        private readonly Lock _mapping = new();
        private System.IO.MemoryMappedFiles.MemoryMappedFile? _map;
        private System.IO.MemoryMappedFiles.MemoryMappedViewAccessor? _view;
        private byte* _pointer;

        public FileSource(string path)
            : base(Path.GetFileName(path), File.Exists(path) ? new FileInfo(path).Length : throw new MinnowException($"{path}: no such file."))
        {
            _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        }

        /// <summary>
        /// Decryption reads the package through a read-only mapping (of ciphertext only; the plaintext goes to
        /// anonymous memory), made on first use: it spares copying every chunk into a buffer first.
        /// </summary>
        protected override bool TryMappedCore(long offset, int length, out ReadOnlySpan<byte> bytes)
        {
            if (_pointer == null)
            {
                lock (_mapping)
                {
                    if (_pointer == null && Length > 0 && RandomAccess.GetLength(_handle) == Length)
                    {
                        _map = System.IO.MemoryMappedFiles.MemoryMappedFile.CreateFromFile(_handle, null, 0, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
                        _view = _map.CreateViewAccessor(0, 0, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read);
                        byte* p = null;
                        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
                        _pointer = p + _view.PointerOffset;
                    }
                }
            }

            bytes = _pointer == null ? default : new ReadOnlySpan<byte>(_pointer + offset, length);
            return _pointer != null;
        }

        protected override void ReadCore(long offset, Span<byte> destination)
        {
            while (destination.Length > 0)
            {
                int n = RandomAccess.Read(_handle, destination, offset);
                if (n <= 0)
                {
                    throw new MinnowException($"{Name}: the package is truncated (it ended while being read).");
                }

                destination = destination[n..];
                offset += n;
            }
        }

        public override void Dispose()
        {
            if (_view is not null)
            {
                _view.SafeMemoryMappedViewHandle.ReleasePointer();
                _view.Dispose();
                _map!.Dispose();
                _pointer = null;
            }

            _handle.Dispose();
        }
    }

    private sealed class MemorySource(ReadOnlyMemory<byte> bytes, string name) : PackageSource(name, bytes.Length)
    {
        protected override void ReadCore(long offset, Span<byte> destination) => bytes.Span.Slice((int)offset, destination.Length).CopyTo(destination);
    }
}

/// <summary>
/// A sealed package's files, decrypted into anonymous memory (never a file): the <see cref="IModelFiles"/> the
/// loaders read. Dispose zeroes and frees the bytes once no tensor views them any more.
/// </summary>
public sealed class DecryptedPackage : IModelFiles
{
    private readonly Dictionary<string, Tensors.AnonymousMemory> _files;
    private readonly string[] _names;

    internal DecryptedPackage(string location, VerifiedPackage verified, Dictionary<string, Tensors.AnonymousMemory> files)
    {
        Location = location;
        Verified = verified;
        _files = files;
        _names = files.Keys.Order(StringComparer.Ordinal).ToArray();
    }

    public string Location { get; }

    public VerifiedPackage Verified { get; }

    public PackageManifest Manifest => Verified.Manifest;

    /// <summary>The package digest (see <see cref="VerifiedPackage.Digest"/>).</summary>
    public string Digest => Verified.Digest;

    public IReadOnlyList<string> Names => _names;

    public bool Contains(string name) => _files.ContainsKey(name);

    public long SizeOf(string name) => Memory(name).Length;

    public Tensors.MappedFile Open(string name) => Tensors.MappedFile.FromMemory(DisplayName(name), Memory(name));

    public unsafe byte[] ReadAllBytes(string name)
    {
        var memory = Memory(name);
        return new ReadOnlySpan<byte>(memory.Pointer, checked((int)memory.Length)).ToArray();
    }

    public string DisplayName(string name) => Location + "!" + name;

    public void Dispose()
    {
        foreach (var m in _files.Values)
        {
            m.Release();
        }

        _files.Clear();
    }

    private Tensors.AnonymousMemory Memory(string name) => _files.TryGetValue(name, out var m)
        ? m
        : throw new MinnowException($"{Location}: the package holds no file '{name}'.");
}
