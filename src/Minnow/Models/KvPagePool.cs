using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>
/// The memory every sequence's keys and values live in: a fixed number of pages, allocated once under a byte budget.
/// A page holds <see cref="PageSize"/> consecutive positions of every layer (keys, then values, each layer's rows as
/// wide as its own key/value projection), so a sequence's cache is a list of pages (<see cref="KvCache"/>), as in
/// vLLM's paged attention. Pages are reference counted: sequences whose prompts begin with the same tokens share the
/// pages of that prefix (a page is shared only when it is full and every token in it and before it matches). A page
/// nobody holds any more stays findable by its prefix until its memory is needed (least recently freed first), so a
/// prompt that comes back finds its prefix computed. Thread-safe.
/// </summary>
public sealed unsafe class KvPagePool : IDisposable
{
    /// <summary>Positions in a page: a multiple of four, so attention's four-position steps never straddle pages.</summary>
    public const int DefaultPageSize = 16;

    private readonly NativeBuffer _memory;
    private readonly long[] _keyOffsets, _valueOffsets;
    private readonly int[] _widths;
    private readonly object _gate = new();
    private readonly int[] _refCounts;
    private readonly int[] _free;
    private int _freeCount;

    // Pages that nobody holds but that keep their prefix: a doubly linked list, least recently freed first.
    private readonly int[] _prev, _next;
    private int _head = -1, _tail = -1, _cachedCount;

    // The prefix index: a chained hash of the tokens up to a page's end → the page, and each page's own key.
    private readonly Dictionary<ulong, int> _byPrefix = [];
    private readonly ulong[] _pageKey;
    private readonly bool[] _indexed;
    private readonly int[] _pageTokens;

    public KvPagePool(ModelConfig config, int pageCount, DType elementType = DType.F16, int pageSize = DefaultPageSize)
    {
        if (elementType is not (DType.F32 or DType.F16))
        {
            throw new MinnowException($"the KV cache holds f32 or f16 values, not {elementType.Name()}.");
        }

        if (pageSize <= 0 || pageSize % 4 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(pageSize), pageSize, "the page size must be a positive multiple of 4.");
        }

        if (pageCount <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(pageCount), pageCount, "the KV pool needs at least one page.");
        }

        ElementType = elementType;
        PageSize = pageSize;
        Layers = config.Layers;
        PageCount = pageCount;
        _widths = new int[Layers];
        _keyOffsets = new long[Layers];
        _valueOffsets = new long[Layers];
        long offset = 0;
        for (int l = 0; l < Layers; l++)
        {
            _widths[l] = config.KvDimOf(l);
            long bytes = (long)pageSize * _widths[l] * ElementBytes;
            _keyOffsets[l] = offset;
            _valueOffsets[l] = offset + bytes;
            offset += 2 * bytes;
        }

        PageBytes = offset;
        _memory = new NativeBuffer(checked(PageBytes * pageCount));
        _refCounts = new int[pageCount];
        _free = new int[pageCount];
        for (int i = 0; i < pageCount; i++)
        {
            _free[i] = pageCount - 1 - i;
        }

        _freeCount = pageCount;
        _prev = new int[pageCount];
        _next = new int[pageCount];
        _pageKey = new ulong[pageCount];
        _indexed = new bool[pageCount];
        _pageTokens = new int[(long)pageCount * pageSize];
    }

    /// <summary>A pool of as many pages as fit in <paramref name="budgetBytes"/> (at least one).</summary>
    public static KvPagePool WithBudget(ModelConfig config, long budgetBytes, DType elementType = DType.F16, int pageSize = DefaultPageSize) =>
        new(config, (int)Math.Clamp(budgetBytes / BytesPerPage(config, elementType, pageSize), 1, int.MaxValue), elementType, pageSize);

    /// <summary>Bytes of one page of a model's cache.</summary>
    public static long BytesPerPage(ModelConfig config, DType elementType = DType.F16, int pageSize = DefaultPageSize)
    {
        long perPosition = 0;
        for (int l = 0; l < config.Layers; l++)
        {
            perPosition += 2L * config.KvDimOf(l);
        }

        return perPosition * pageSize * (elementType == DType.F16 ? 2 : 4);
    }

    /// <summary>Pages a cache of <paramref name="positions"/> positions needs.</summary>
    public int PagesFor(int positions) => (positions + PageSize - 1) / PageSize;

    public DType ElementType { get; }

    /// <summary>Bytes of one cached value.</summary>
    public int ElementBytes => ElementType == DType.F16 ? sizeof(ushort) : sizeof(float);

    public int PageSize { get; }

    public int Layers { get; }

    public int PageCount { get; }

    public long PageBytes { get; }

    public long ByteSize => _memory.Length;

    public byte* Base => _memory.Pointer;

    /// <summary>The width of one cached key (or value) row of a layer.</summary>
    public int KvDimOf(int layer) => _widths[layer];

    /// <summary>Offset of a layer's keys within a page.</summary>
    public long KeyOffset(int layer) => _keyOffsets[layer];

    /// <summary>Offset of a layer's values within a page.</summary>
    public long ValueOffset(int layer) => _valueOffsets[layer];

    /// <summary>Pages held by at least one sequence.</summary>
    public int PagesInUse
    {
        get
        {
            lock (_gate)
            {
                return PageCount - _freeCount - _cachedCount;
            }
        }
    }

    /// <summary>Pages a new sequence can take: free ones and ones kept only for their prefix.</summary>
    public int PagesAvailable
    {
        get
        {
            lock (_gate)
            {
                return _freeCount + _cachedCount;
            }
        }
    }

    /// <summary>Pages nobody holds that still keep their prefix.</summary>
    public int PagesCached
    {
        get
        {
            lock (_gate)
            {
                return _cachedCount;
            }
        }
    }

    /// <summary>Full pages looked up by prefix, and how many were found.</summary>
    public long PrefixLookups { get; private set; }

    public long PrefixHits { get; private set; }

    /// <summary>Takes a page for one holder; -1 when every page is held.</summary>
    public int Allocate()
    {
        lock (_gate)
        {
            int page;
            if (_freeCount > 0)
            {
                page = _free[--_freeCount];
            }
            else if (_head >= 0)
            {
                page = _head;
                Unlink(page);
                Unindex(page);
            }
            else
            {
                return -1;
            }

            _refCounts[page] = 1;
            return page;
        }
    }

    /// <summary>Lets go of a page; the last holder's release frees it (or keeps it findable by its prefix).</summary>
    public void Release(int page)
    {
        lock (_gate)
        {
            if (_refCounts[page] <= 0)
            {
                throw new InvalidOperationException($"KV page {page} released more often than taken.");
            }

            if (--_refCounts[page] > 0)
            {
                return;
            }

            if (_indexed[page])
            {
                Append(page);
            }
            else
            {
                _free[_freeCount++] = page;
            }
        }
    }

    /// <summary>
    /// The page that holds the keys and values of <paramref name="tokens"/> (one page's worth) after the prefix whose
    /// chained key is <paramref name="parentKey"/>, taken for one more holder; -1 if none is kept.
    /// </summary>
    public int TryShare(ulong parentKey, ReadOnlySpan<int> tokens, out ulong key)
    {
        key = ChainKey(parentKey, tokens);
        lock (_gate)
        {
            PrefixLookups++;
            if (!_byPrefix.TryGetValue(key, out int page) || !tokens.SequenceEqual(TokensOf(page)))
            {
                return -1;
            }

            if (_refCounts[page]++ == 0)
            {
                Unlink(page);
            }

            PrefixHits++;
            return page;
        }
    }

    /// <summary>Makes a full page findable by its prefix (its tokens and the chained key of everything before it).</summary>
    public void Publish(int page, ulong key, ReadOnlySpan<int> tokens)
    {
        lock (_gate)
        {
            if (_indexed[page] || _byPrefix.ContainsKey(key))
            {
                return;
            }

            tokens.CopyTo(TokensOf(page));
            _pageKey[page] = key;
            _indexed[page] = true;
            _byPrefix[key] = page;
        }
    }

    /// <summary>The key of a prefix extended by one page of tokens (FNV-style mixing of 64-bit words; in-process only).</summary>
    public static ulong ChainKey(ulong parentKey, ReadOnlySpan<int> tokens)
    {
        ulong h = (parentKey ^ 0x9E3779B97F4A7C15UL) * 0xBF58476D1CE4E5B9UL;
        foreach (int t in tokens)
        {
            h = (h ^ (uint)t) * 0x94D049BB133111EBUL;
            h ^= h >> 31;
        }

        return h;
    }

    /// <summary>The root key of a sequence's prefix chain: sequences share pages only under the same adapter.</summary>
    public static ulong RootKey(string? adapter) => adapter is null ? 0x51ED27UL : ChainKey(0x51ED27UL, [.. adapter.Select(ch => (int)ch)]);

    private Span<int> TokensOf(int page) => _pageTokens.AsSpan(page * PageSize, PageSize);

    private void Unindex(int page)
    {
        if (_indexed[page])
        {
            _byPrefix.Remove(_pageKey[page]);
            _indexed[page] = false;
        }
    }

    private void Append(int page)
    {
        _prev[page] = _tail;
        _next[page] = -1;
        if (_tail >= 0)
        {
            _next[_tail] = page;
        }
        else
        {
            _head = page;
        }

        _tail = page;
        _cachedCount++;
    }

    private void Unlink(int page)
    {
        int p = _prev[page], n = _next[page];
        if (p >= 0)
        {
            _next[p] = n;
        }
        else
        {
            _head = n;
        }

        if (n >= 0)
        {
            _prev[n] = p;
        }
        else
        {
            _tail = p;
        }

        _cachedCount--;
    }

    public void Dispose() => _memory.Dispose();
}
