using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>
/// One sequence's keys and values: a block table of pages in a <see cref="KvPagePool"/>, position p in page
/// <c>Pages[p / PageSize]</c>, row <c>p % PageSize</c>. A cache made with its own pool (the constructor that takes a
/// capacity) holds exactly the pages its capacity needs. Pages are taken as positions are filled
/// (<see cref="Reserve"/>) and given back by <see cref="Clear"/> or <see cref="Dispose"/>. Full pages of the sequence's
/// tokens can be published for other sequences to share (<see cref="AttachSharedPrefix"/>).
/// </summary>
public sealed unsafe class KvCache : IDisposable
{
    private readonly KvPagePool _pool;
    private readonly bool _ownsPool;
    private readonly NativeBuffer _table;
    private readonly ulong[] _chainKeys;
    private int _pageCount;
    private int _published;

    /// <summary>A cache of <paramref name="capacity"/> positions in a pool of its own.</summary>
    public KvCache(ModelConfig config, int capacity, DType elementType = DType.F32)
        : this(new KvPagePool(config, Math.Max(1, (capacity + KvPagePool.DefaultPageSize - 1) / KvPagePool.DefaultPageSize), elementType), capacity, ownsPool: true)
    {
    }

    /// <summary>A cache of up to <paramref name="capacity"/> positions whose pages come from a shared pool.</summary>
    public KvCache(KvPagePool pool, int capacity, string? adapterKey = null)
        : this(pool, capacity, ownsPool: false, adapterKey)
    {
    }

    private KvCache(KvPagePool pool, int capacity, bool ownsPool, string? adapterKey = null)
    {
        if (capacity <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "the context size must be positive.");
        }

        _pool = pool;
        _ownsPool = ownsPool;
        Capacity = capacity;
        int maxPages = pool.PagesFor(capacity);
        _table = new NativeBuffer((long)maxPages * sizeof(int));
        _chainKeys = new ulong[maxPages + 1];
        _chainKeys[0] = KvPagePool.RootKey(adapterKey);
    }

    public KvPagePool Pool => _pool;

    /// <summary>F32 or F16.</summary>
    public DType ElementType => _pool.ElementType;

    public int ElementBytes => _pool.ElementBytes;

    public int Layers => _pool.Layers;

    public int PageSize => _pool.PageSize;

    public int Capacity { get; }

    /// <summary>Positions filled so far.</summary>
    public int Length { get; set; }

    /// <summary>Pages this cache holds.</summary>
    public int PageCount => _pageCount;

    /// <summary>Bytes of the pages this cache holds (shared pages counted in full).</summary>
    public long ByteSize => _ownsPool ? _pool.ByteSize : _pageCount * _pool.PageBytes;

    /// <summary>The block table: <see cref="PageCount"/> page numbers.</summary>
    public int* PageTable => (int*)_table.Pointer;

    /// <summary>The width of one cached key (or value) row of a layer.</summary>
    public int KvDimOf(int layer) => _pool.KvDimOf(layer);

    /// <summary>Pages still to take for the cache to reach <paramref name="positions"/> positions.</summary>
    public int PagesNeeded(int positions) => Math.Max(0, _pool.PagesFor(positions) - _pageCount);

    /// <summary>Takes pages until <paramref name="positions"/> positions fit; false (nothing taken) when the pool has too few.</summary>
    public bool Reserve(int positions)
    {
        if (positions > Capacity)
        {
            throw new MinnowException($"{positions} tokens do not fit in the context of {Capacity} tokens.");
        }

        int need = _pool.PagesFor(positions);
        int start = _pageCount;
        while (_pageCount < need)
        {
            int page = _pool.Allocate();
            if (page < 0)
            {
                while (_pageCount > start)
                {
                    _pool.Release(PageTable[--_pageCount]);
                }

                return false;
            }

            PageTable[_pageCount++] = page;
        }

        return true;
    }

    /// <summary>
    /// Takes, from the pool's kept pages, the longest run of full pages holding a prefix of <paramref name="tokens"/>
    /// (at most <paramref name="maxPositions"/> positions), and sets <see cref="Length"/> past it. Only for an empty cache.
    /// Returns the positions found.
    /// </summary>
    public int AttachSharedPrefix(ReadOnlySpan<int> tokens, int maxPositions)
    {
        if (Length != 0 || _pageCount != 0)
        {
            throw new InvalidOperationException("a shared prefix attaches only to an empty cache.");
        }

        int ps = PageSize;
        while ((_pageCount + 1) * ps <= Math.Min(maxPositions, tokens.Length))
        {
            int page = _pool.TryShare(_chainKeys[_pageCount], tokens.Slice(_pageCount * ps, ps), out ulong key);
            if (page < 0)
            {
                break;
            }

            PageTable[_pageCount] = page;
            _chainKeys[++_pageCount] = key;
        }

        _published = _pageCount;
        Length = _pageCount * ps;
        return Length;
    }

    /// <summary>
    /// Makes this cache's full pages findable by their prefix. <paramref name="tokens"/> are the tokens at positions
    /// 0.. (at least up to <see cref="Length"/>).
    /// </summary>
    public void PublishFullPages(ReadOnlySpan<int> tokens)
    {
        int ps = PageSize;
        int full = Math.Min(Length, tokens.Length) / ps;
        while (_published < full)
        {
            var pageTokens = tokens.Slice(_published * ps, ps);
            ulong key = KvPagePool.ChainKey(_chainKeys[_published], pageTokens);
            _pool.Publish(PageTable[_published], key, pageTokens);
            _chainKeys[++_published] = key;
        }
    }

    /// <summary>Gives every page back and empties the cache.</summary>
    public void Clear()
    {
        while (_pageCount > 0)
        {
            _pool.Release(PageTable[--_pageCount]);
        }

        _published = 0;
        Length = 0;
    }

    /// <summary>Where a layer's key row of a position lives.</summary>
    public byte* KeyRow(int layer, int position) =>
        _pool.Base + (PageTable[position / PageSize] * _pool.PageBytes) + _pool.KeyOffset(layer) + ((long)(position % PageSize) * KvDimOf(layer) * ElementBytes);

    /// <summary>Where a layer's value row of a position lives.</summary>
    public byte* ValueRow(int layer, int position) =>
        _pool.Base + (PageTable[position / PageSize] * _pool.PageBytes) + _pool.ValueOffset(layer) + ((long)(position % PageSize) * KvDimOf(layer) * ElementBytes);

    /// <summary>Stores <paramref name="count"/> rows of keys and values (float32) of a layer from position <paramref name="start"/>.</summary>
    public void Store(int layer, int start, float* keys, float* values, int count)
    {
        int width = KvDimOf(layer);
        for (int t = 0; t < count; t++)
        {
            StoreRow(keys + ((long)t * width), KeyRow(layer, start + t), width);
            StoreRow(values + ((long)t * width), ValueRow(layer, start + t), width);
        }
    }

    private void StoreRow(float* source, byte* destination, int width)
    {
        if (ElementType == DType.F32)
        {
            Buffer.MemoryCopy(source, destination, (long)width * sizeof(float), (long)width * sizeof(float));
            return;
        }

        var halves = (Half*)destination;
        for (int i = 0; i < width; i++)
        {
            halves[i] = (Half)source[i];
        }
    }

    public void Dispose()
    {
        Clear();
        _table.Dispose();
        if (_ownsPool)
        {
            _pool.Dispose();
        }
    }
}
