namespace Minnow.Tensors;

/// <summary>
/// A persistent pool of worker threads that spreads blocks of independent items (matrix rows, heads) over the
/// cores. The caller's thread takes part. Each item is always computed by the same code in the same order, so
/// results do not depend on the thread count. Nothing is allocated per call: the work is a function pointer and
/// a pointer to the caller's (stack) context, which stays alive because <see cref="For"/> blocks until done.
/// </summary>
public sealed unsafe class WorkerPool : IDisposable
{
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim _wake;
    private readonly object _gate = new();
    private delegate*<void*, int, int, void> _body;
    private void* _context;
    private int _count;
    private int _grain;
    private int _next;
    private int _pending;
    private long _generation;
    private volatile bool _stopping;

    public WorkerPool(int threads)
    {
        ThreadCount = Math.Max(1, threads);
        _wake = new SemaphoreSlim(0);
        _threads = new Thread[ThreadCount - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            _threads[i] = new Thread(WorkerLoop) { IsBackground = true, Name = $"minnow-worker-{i + 1}" };
            _threads[i].Start();
        }
    }

    /// <summary>The shared pool, sized to the machine's cores (or <c>MINNOW_THREADS</c>).</summary>
    public static WorkerPool Shared => Volatile.Read(ref s_shared) ?? CreateShared();

    private static WorkerPool? s_shared;

    // Two first callers must not each start a pool of threads: one wins, the other's is stopped again.
    private static WorkerPool CreateShared()
    {
        var created = new WorkerPool(DefaultThreadCount);
        var existing = Interlocked.CompareExchange(ref s_shared, created, null);
        if (existing is null)
        {
            return created;
        }

        created.Dispose();
        return existing;
    }

    public static int DefaultThreadCount =>
        int.TryParse(Environment.GetEnvironmentVariable("MINNOW_THREADS"), out int t) && t > 0 ? t : Environment.ProcessorCount;

    public int ThreadCount { get; }

    /// <summary>
    /// Runs <paramref name="body"/>(context, start, end) over [0, count) in blocks of <paramref name="grain"/> items.
    /// When another caller has the workers (two sessions on two threads), this one runs its items on its own thread
    /// rather than waiting: the items give the same results whoever computes them.
    /// </summary>
    public void For(int count, int grain, delegate*<void*, int, int, void> body, void* context)
    {
        if (count <= 0)
        {
            return;
        }

        grain = Math.Max(1, grain);
        if (_threads.Length == 0 || count <= grain || !Monitor.TryEnter(_gate))
        {
            body(context, 0, count);
            return;
        }

        try
        {
            _body = body;
            _context = context;
            _count = count;
            _grain = grain;
            _next = 0;
            _pending = _threads.Length;
            Interlocked.Increment(ref _generation);
            _wake.Release(_threads.Length);
            RunBlocks();
            var spin = new SpinWait();
            while (Volatile.Read(ref _pending) != 0)
            {
                spin.SpinOnce(-1);
            }

            _body = null;
            _context = null;
        }
        finally
        {
            Monitor.Exit(_gate);
        }
    }

    private void RunBlocks()
    {
        while (true)
        {
            int start = Interlocked.Add(ref _next, _grain) - _grain;
            if (start >= _count)
            {
                return;
            }

            _body(_context, start, Math.Min(_count, start + _grain));
        }
    }

    private void WorkerLoop()
    {
        while (true)
        {
            _wake.Wait();
            if (_stopping)
            {
                return;
            }

            RunBlocks();
            Interlocked.Decrement(ref _pending);
        }
    }

    public void Dispose()
    {
        _stopping = true;
        if (_threads.Length > 0)
        {
            _wake.Release(_threads.Length);
        }

        foreach (var t in _threads)
        {
            t.Join();
        }

        _wake.Dispose();
    }
}
