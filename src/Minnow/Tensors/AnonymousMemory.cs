using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Minnow.Tensors;

/// <summary>
/// Bytes in anonymous memory (on Linux a private anonymous <c>mmap</c>, kept out of core dumps): backed by no
/// file, so what is written here (a sealed package's decrypted files) never reaches the filesystem. Shared by
/// reference count: each <see cref="MappedFile"/> view holds one reference; when the last is released the bytes
/// are zeroed and the memory returned.
/// </summary>
public sealed unsafe partial class AnonymousMemory
{
    private byte* _pointer;
    private readonly nuint _mappedLength;
    private readonly bool _mapped;
    private int _references = 1;

    /// <summary>Allocates <paramref name="length"/> zeroed bytes; the caller holds the first reference.</summary>
    public AnonymousMemory(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Length = length;
        nuint size = (nuint)Math.Max(length, 1);
        if (OperatingSystem.IsLinux())
        {
            long page = Environment.SystemPageSize;
            _mappedLength = (nuint)((((long)size + page - 1) / page) * page);
            // MAP_POPULATE faults every page in at once: the bytes are about to be written anyway.
            void* p = Mmap(null, _mappedLength, ProtRead | ProtWrite, MapPrivate | MapAnonymous | MapPopulate, -1, 0);
            if (p == (void*)-1)
            {
                throw new MinnowException($"could not reserve {length} bytes of memory for the decrypted model.");
            }

            _ = Madvise(p, _mappedLength, DontDump);
            _pointer = (byte*)p;
            _mapped = true;
        }
        else
        {
            _pointer = (byte*)NativeMemory.AlignedAlloc(size, NativeBuffer.Alignment);
            NativeMemory.Clear(_pointer, size);
        }

        GC.AddMemoryPressure((long)size);
    }

    public long Length { get; }

    public byte* Pointer => _pointer != null ? _pointer : throw new ObjectDisposedException(nameof(AnonymousMemory));

    /// <summary>A writable span over [offset, offset + length); both are checked against <see cref="Length"/>.</summary>
    public Span<byte> Span(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset > Length - length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, +{length}) is outside a buffer of {Length} bytes.");
        }

        return new Span<byte>(Pointer + offset, length);
    }

    public void AddReference()
    {
        if (Interlocked.Increment(ref _references) <= 1)
        {
            throw new ObjectDisposedException(nameof(AnonymousMemory));
        }
    }

    /// <summary>Drops one reference; the last one zeroes the bytes and frees them.</summary>
    public void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0)
        {
            return;
        }

        byte* p = _pointer;
        _pointer = null;
        for (long done = 0; done < Length; done += int.MaxValue)
        {
            CryptographicOperations.ZeroMemory(new Span<byte>(p + done, (int)Math.Min(int.MaxValue, Length - done)));
        }

        if (_mapped)
        {
            _ = Munmap(p, _mappedLength);
        }
        else
        {
            NativeMemory.AlignedFree(p);
        }

        GC.RemoveMemoryPressure(Math.Max(Length, 1));
    }

    private const int ProtRead = 1;
    private const int ProtWrite = 2;
    private const int MapPrivate = 0x02;
    private const int MapAnonymous = 0x20;
    private const int MapPopulate = 0x8000;
    private const int DontDump = 16;

    [LibraryImport("libc", EntryPoint = "mmap")]
    private static partial void* Mmap(void* address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "munmap")]
    private static partial int Munmap(void* address, nuint length);

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);
}
