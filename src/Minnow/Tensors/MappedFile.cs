using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace Minnow.Tensors;

/// <summary>An object whose tensors are views of a <see cref="Tensors.MappedFile"/>.</summary>
public interface IMappedFileOwner
{
    MappedFile MappedFile { get; }
}

/// <summary>A read-only memory map of a whole file; tensors are views into it, so loading a model copies nothing.</summary>
public sealed unsafe partial class MappedFile : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
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

    public string Path { get; }

    public long Length { get; }

    public byte* Pointer => _pointer;

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
        if (_pointer != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _pointer = null;
            _view.Dispose();
            _map.Dispose();
        }
    }
}
