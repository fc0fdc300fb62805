using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace Minnow.Tensors;

/// <summary>An object whose tensors are views of a <see cref="Tensors.MappedFile"/>.</summary>
public interface IMappedFileOwner
{
    MappedFile MappedFile { get; }
}

/// <summary>
/// A read-only view of a whole file's bytes; tensors are views into it, so loading a model copies nothing. Usually a
/// memory map of the file; for a sealed package, the file's decrypted bytes in <see cref="AnonymousMemory"/>
/// (<see cref="IsFileBacked"/> false), which no file backs.
/// </summary>
public sealed unsafe partial class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly AnonymousMemory? _memory;
    private byte* _pointer;

    private MappedFile(string path, long length, MemoryMappedFile map, MemoryMappedViewAccessor view)
    {
        Path = path;
        Length = length;
        _map = map;
        _view = view;
        byte* p = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _pointer = p + view.PointerOffset;
    }

    private MappedFile(string path, AnonymousMemory memory)
    {
        memory.AddReference();
        Path = path;
        Length = memory.Length;
        _memory = memory;
        _pointer = memory.Pointer;
    }

    /// <summary>
    /// A view of <paramref name="memory"/> standing for the file <paramref name="path"/> (a name for messages, not a
    /// file on disk). The view holds a reference to the memory until disposed.
    /// </summary>
    public static MappedFile FromMemory(string path, AnonymousMemory memory)
    {
        ArgumentNullException.ThrowIfNull(memory);
        if (memory.Length == 0)
        {
            throw new MinnowException($"{path}: the file is empty.");
        }

        return new MappedFile(path, memory);
    }

    public string Path { get; }

    public long Length { get; }

    public byte* Pointer => _pointer;

    /// <summary>
    /// Whether a file backs these bytes (a memory map), so that <see cref="ReleasePages"/> may drop them; false for
    /// anonymous memory, where dropping pages would lose the bytes.
    /// </summary>
    public bool IsFileBacked => _map != null;

    public ReadOnlySpan<byte> Span(long offset, int length) => new(_pointer + offset, length);

    /// <summary>
    /// Drops the whole pages of [start, start + length), which must lie in a read-only file mapping (a
    /// <see cref="Tensor.IsMapped"/> tensor's bytes), from this process's resident set (Linux <c>madvise</c> with
    /// <c>MADV_DONTNEED</c>: the mapping is backed by the file, so a later read brings the bytes back unchanged).
    /// Does nothing on other systems.
    /// </summary>
    public static void ReleasePages(byte* start, long length)
    {
        if (!OperatingSystem.IsLinux() || length <= 0)
        {
            return;
        }

        long page = Environment.SystemPageSize;
        long first = ((long)start + page - 1) / page * page;
        long end = ((long)start + length) / page * page;
        if (end > first)
        {
            _ = Madvise((void*)first, (nuint)(end - first), DontNeed);
        }
    }

    private const int DontNeed = 4;

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);

    public static MappedFile Open(string path)
    {
        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: file not found.");
        }

        long length = new FileInfo(path).Length;
        if (length == 0)
        {
            throw new MinnowException($"{path}: the file is empty.");
        }

        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        return new MappedFile(path, length, map, view);
    }

    public void Dispose()
    {
        if (_pointer == null)
        {
            return;
        }

        _pointer = null;
        if (_memory != null)
        {
            _memory.Release();
            return;
        }

        _view!.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map!.Dispose();
    }
}
