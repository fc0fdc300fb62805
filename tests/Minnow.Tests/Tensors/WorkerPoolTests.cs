using Minnow.Tensors;

namespace Minnow.Tests.Tensors;

/// <summary>
/// The worker pool under calls in quick succession (workers still spinning) and after pauses (workers asleep): every
/// item of every call is done exactly once, and disposing stops the workers.
/// </summary>
public unsafe class WorkerPoolTests
{
    private struct Counts
    {
        public int* Hits;
    }

    private static void Count(void* context, int start, int end)
    {
        var counts = (Counts*)context;
        for (int i = start; i < end; i++)
        {
            Interlocked.Increment(ref counts->Hits[i]);
        }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void EveryItemIsDoneOnceWhetherTheWorkersSpinOrSleep(int threads)
    {
        using var pool = new WorkerPool(threads);
        var random = new Random(threads);
        const int Items = 97;
        var hits = new int[Items];
        fixed (int* p = hits)
        {
            var counts = new Counts { Hits = p };
            for (int call = 0; call < 600; call++)
            {
                Array.Clear(hits);
                pool.For(Items, 1 + random.Next(8), &Count, &counts);
                Assert.All(hits, h => Assert.Equal(1, h));
                if (call % 50 == 0)
                {
                    Thread.Sleep(2); // long enough for the workers to stop spinning and sleep
                }
            }
        }
    }

    [Fact]
    public void DisposeStopsSleepingAndSpinningWorkers()
    {
        for (int i = 0; i < 20; i++)
        {
            var pool = new WorkerPool(3);
            var hits = new int[10];
            fixed (int* p = hits)
            {
                var counts = new Counts { Hits = p };
                pool.For(10, 1, &Count, &counts);
            }

            if (i % 2 == 0)
            {
                Thread.Sleep(2);
            }

            var disposer = new Thread(pool.Dispose);
            disposer.Start();
            Assert.True(disposer.Join(TimeSpan.FromSeconds(10)), "Dispose did not return");
            Assert.All(hits, h => Assert.Equal(1, h));
        }
    }
}
