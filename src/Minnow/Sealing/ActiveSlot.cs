namespace Minnow.Sealing;

/// <summary>
/// Holds the item in service (a loaded model, an adapter) and swaps in a new one atomically: requests lease the
/// current item; <see cref="Activate"/> builds the new one while the old keeps serving, swaps only when it is
/// ready, and disposes the old one when its last lease ends. A failed build leaves the current item in place.
/// </summary>
public sealed class ActiveSlot<T> : IDisposable
    where T : class, IDisposable
{
    private readonly object _swap = new();
    private Holder _current;
    private int _disposed;

    public ActiveSlot(T initial, long version)
    {
        _current = new Holder(initial, version);
    }

    /// <summary>The version in service.</summary>
    public long Version => Volatile.Read(ref _current).Version;

    /// <summary>The item in service, for reporting only: take a lease (<see cref="Acquire"/>) to use it.</summary>
    public T Current => Volatile.Read(ref _current).Item;

    /// <summary>Leases the current item; dispose the lease when the request is done.</summary>
    public Lease Acquire()
    {
        while (true)
        {
            var holder = Volatile.Read(ref _current);
            if (holder.TryAddLease())
            {
                return new Lease(holder);
            }
        }
    }

    /// <summary>
    /// Builds the new item with <paramref name="load"/> and puts it in service. Returns false (and keeps the current
    /// item) when <paramref name="version"/> is not newer or the build throws; <paramref name="error"/> says why.
    /// </summary>
    public bool Activate(Func<T> load, long version, out string? error)
    {
        lock (_swap)
        {
            if (version <= _current.Version)
            {
                error = $"version {version} is not newer than version {_current.Version} in service; kept it.";
                return false;
            }

            T next;
            try
            {
                next = load();
            }
            catch (MinnowException e)
            {
                error = e.Message;
                return false;
            }

            var old = Interlocked.Exchange(ref _current, new Holder(next, version));
            old.Retire();
            error = null;
            return true;
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _current.Retire();
        }
    }

    /// <summary>A request's hold on the item in service.</summary>
    public readonly struct Lease : IDisposable
    {
        private readonly Holder _holder;

        internal Lease(Holder holder)
        {
            _holder = holder;
        }

        public T Item => _holder.Item;

        public long Version => _holder.Version;

        public void Dispose() => _holder.ReleaseLease();
    }

    internal sealed class Holder(T item, long version)
    {
        // One count for being in service plus one per lease; the item is disposed when it reaches zero.
        private int _count = 1;

        public T Item { get; } = item;

        public long Version { get; } = version;

        public bool TryAddLease()
        {
            int seen = Volatile.Read(ref _count);
            while (seen > 0)
            {
                int previous = Interlocked.CompareExchange(ref _count, seen + 1, seen);
                if (previous == seen)
                {
                    return true;
                }

                seen = previous;
            }

            return false;
        }

        public void ReleaseLease()
        {
            if (Interlocked.Decrement(ref _count) == 0)
            {
                Item.Dispose();
            }
        }

        public void Retire() => ReleaseLease();
    }
}
