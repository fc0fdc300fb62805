using System.Buffers;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Minnow.Sealing;

/// <summary>
/// Holds a sealed package's 256-bit key and derives keys from it. Minnow never asks for the key itself: it asks
/// for HKDF-SHA256 outputs (RFC 5869), so a trusted execution environment or a hardware key store can implement
/// this interface and keep the package key inside it; only the derived per-file keys (zeroed after use) reach
/// Minnow's memory.
/// </summary>
public interface IPackageKeyProvider
{
    /// <summary>Fills <paramref name="output"/> with HKDF-SHA256(package key, <paramref name="salt"/>, <paramref name="info"/>).</summary>
    void DeriveKey(ReadOnlySpan<byte> salt, ReadOnlySpan<byte> info, Span<byte> output);
}

/// <summary>
/// A package key held in this process (from a key file or an environment variable), in a pinned array that is
/// zeroed on <see cref="Dispose"/>. The key file is text: 64 hex digits (what <c>minnow keygen</c> writes).
/// </summary>
public sealed class PackageKey : IPackageKeyProvider, IDisposable
{
    public const int Size = 32;

    /// <summary>The environment variable that may hold the package key (64 hex digits).</summary>
    public const string EnvironmentVariable = "MINNOW_PACKAGE_KEY";

    private readonly byte[] _key = GC.AllocateArray<byte>(Size, pinned: true);
    private bool _disposed;

    private PackageKey()
    {
    }

    /// <summary>A new random key.</summary>
    public static PackageKey Generate()
    {
        var key = new PackageKey();
        RandomNumberGenerator.Fill(key._key);
        return key;
    }

    /// <summary>A copy of <paramref name="key"/> (32 bytes).</summary>
    public static PackageKey FromBytes(ReadOnlySpan<byte> key)
    {
        if (key.Length != Size)
        {
            throw new MinnowException($"a package key is {Size} bytes (got {key.Length}).");
        }

        var k = new PackageKey();
        key.CopyTo(k._key);
        return k;
    }

    /// <summary>Parses 64 hex digits (surrounding whitespace allowed); <paramref name="source"/> names where they came from.</summary>
    public static PackageKey FromText(ReadOnlySpan<char> text, string source)
    {
        var trimmed = text.Trim();
        var k = new PackageKey();
        if (trimmed.Length != Size * 2 || Convert.FromHexString(trimmed, k._key, out _, out int written) != OperationStatus.Done || written != Size)
        {
            k.Dispose();
            throw new MinnowException($"{source}: not a package key (expected {Size * 2} hex digits, as minnow keygen writes).");
        }

        return k;
    }

    public static PackageKey FromFile(string path)
    {
        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: key file not found.");
        }

        byte[] bytes = File.ReadAllBytes(path);
        char[] chars = GC.AllocateArray<char>(bytes.Length, pinned: true);
        try
        {
            if (bytes.Length > 1024)
            {
                throw new MinnowException($"{path}: not a package key (the file is {bytes.Length} bytes; a key file is 64 hex digits).");
            }

            for (int i = 0; i < bytes.Length; i++)
            {
                chars[i] = (char)bytes[i];
            }

            return FromText(chars, path);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(bytes);
            CryptographicOperations.ZeroMemory(MemoryMarshal.AsBytes(chars.AsSpan()));
        }
    }

    /// <summary>The key in <see cref="EnvironmentVariable"/>, or null when it is not set.</summary>
    public static PackageKey? FromEnvironment()
    {
        string? text = Environment.GetEnvironmentVariable(EnvironmentVariable);
        return string.IsNullOrWhiteSpace(text) ? null : FromText(text, "$" + EnvironmentVariable);
    }

    /// <summary>Writes the key as 64 hex digits to <paramref name="path"/> (readable by the owner only; temporary file, then renamed).</summary>
    public void WriteFile(string path)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        char[] hex = GC.AllocateArray<char>((Size * 2) + 1, pinned: true);
        byte[] bytes = GC.AllocateArray<byte>(hex.Length, pinned: true);
        try
        {
            Convert.TryToHexStringLower(_key, hex, out _);
            hex[^1] = '\n';
            for (int i = 0; i < hex.Length; i++)
            {
                bytes[i] = (byte)hex[i];
            }

            SecretFile.Write(path, bytes);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(MemoryMarshal.AsBytes(hex.AsSpan()));
            CryptographicOperations.ZeroMemory(bytes);
        }
    }

    public void DeriveKey(ReadOnlySpan<byte> salt, ReadOnlySpan<byte> info, Span<byte> output)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        HKDF.DeriveKey(HashAlgorithmName.SHA256, _key, output, salt, info);
    }

    public void Dispose()
    {
        CryptographicOperations.ZeroMemory(_key);
        _disposed = true;
    }
}

/// <summary>Writes secrets: a temporary file readable by the owner only, then renamed into place.</summary>
internal static class SecretFile
{
    public static void Write(string path, ReadOnlySpan<byte> content)
    {
        string full = Path.GetFullPath(path);
        string temp = full + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        try
        {
            using (var stream = new FileStream(temp, options))
            {
                stream.Write(content);
            }

            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }
}
