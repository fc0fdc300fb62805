using System.IO.MemoryMappedFiles;

namespace Minnow.Tensors;

/// <summary>A read-only memory map of a whole file; tensors are views into it, so loading a model copies nothing.</summary>
public sealed unsafe class MappedFile : IDisposable
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
