using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// Single-precision matrix product for training: C (+)= op(A) · op(B), all row-major, where op(A) is [m, k]
/// (A stored [m, k], or [k, m] when <c>transA</c>) and op(B) is [k, n] (B stored [k, n], or [n, k] when
/// <c>transB</c>). Both operands are packed into panels (6 rows of A, 16 columns of B, zero-padded), and a 6×16
/// register-tiled AVX kernel runs over them. Tiles are spread over the worker pool; each element of C is
/// computed by one thread summing over k in a fixed order, so results are bit-identical for any thread count.
/// </summary>
/// <remarks>
/// The three products of a linear layer y = x·Wᵀ map to it as: forward y = x·Wᵀ (transB), input gradient
/// dx = dy·W, weight gradient dW += dyᵀ·x (transA, accumulate).
/// </remarks>
public static unsafe class Gemm
{
    private const int MR = 6;
    private const int NR = 16;

    /// <summary>Panels of B handled by one work item (keeps a slice of packed B hot across row blocks).</summary>
    private const int PanelsPerChunk = 8;

    [ThreadStatic]
    private static NativeBuffer? t_packedA;

    [ThreadStatic]
    private static NativeBuffer? t_packedB;

    private struct Job
    {
        public float* A;
        public int Lda;
        public bool TransA;
        public float* B;
        public int Ldb;
        public bool TransB;
        public float* C;
        public int Ldc;
        public int M;
        public int N;
        public int K;
        public float* PackedA;
        public float* PackedB;
        public int MBlocks;
        public int NPanels;
        public bool Accumulate;
    }

    /// <summary>C[m, n] = op(A)·op(B), or C += op(A)·op(B) when <paramref name="accumulate"/>.</summary>
    public static void Multiply(int m, int n, int k, float* a, int lda, bool transA, float* b, int ldb, bool transB,
        float* c, int ldc, bool accumulate, WorkerPool? pool = null)
    {
        if (m <= 0 || n <= 0)
        {
            return;
        }

        if (k <= 0)
        {
            if (!accumulate)
            {
                for (int i = 0; i < m; i++)
                {
                    new Span<float>(c + ((long)i * ldc), n).Clear();
                }
            }

            return;
        }

        pool ??= WorkerPool.Shared;
        int mBlocks = (m + MR - 1) / MR;
        int nPanels = (n + NR - 1) / NR;
        var job = new Job
        {
            A = a,
            Lda = lda,
            TransA = transA,
            B = b,
            Ldb = ldb,
            TransB = transB,
            C = c,
            Ldc = ldc,
            M = m,
            N = n,
            K = k,
            MBlocks = mBlocks,
            NPanels = nPanels,
            Accumulate = accumulate,
            PackedA = Scratch(ref t_packedA, (long)mBlocks * MR * k),
            PackedB = Scratch(ref t_packedB, (long)nPanels * NR * k),
        };

        pool.For(mBlocks, Math.Max(1, 4096 / k), &PackA, &job);
        pool.For(nPanels, Math.Max(1, 2048 / k), &PackB, &job);
        int chunks = (nPanels + PanelsPerChunk - 1) / PanelsPerChunk;
        pool.For(chunks * mBlocks, 2, &RunTiles, &job);
    }

    private static float* Scratch(ref NativeBuffer? buffer, long floats)
    {
        if (buffer == null || buffer.Length < floats * sizeof(float))
        {
            buffer?.Dispose();
            buffer = NativeBuffer.Floats(Math.Max(floats, 1024));
        }

        return buffer.FloatPointer;
    }

    /// <summary>Packs rows [6·blk, 6·blk + 6) of op(A) as [k][6], zero-padding past m.</summary>
    private static void PackA(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int k = job.K;
        for (int blk = start; blk < end; blk++)
        {
            float* dst = job.PackedA + ((long)blk * MR * k);
            int row0 = blk * MR;
            int rows = Math.Min(MR, job.M - row0);
            if (job.TransA)
            {
                for (int kk = 0; kk < k; kk++)
                {
                    float* src = job.A + ((long)kk * job.Lda) + row0;
                    float* d = dst + (kk * MR);
                    int r = 0;
                    for (; r < rows; r++)
                    {
                        d[r] = src[r];
                    }

                    for (; r < MR; r++)
                    {
                        d[r] = 0;
                    }
                }
            }
            else
            {
                for (int r = 0; r < MR; r++)
                {
                    if (r < rows)
                    {
                        float* src = job.A + ((long)(row0 + r) * job.Lda);
                        for (int kk = 0; kk < k; kk++)
                        {
                            dst[(kk * MR) + r] = src[kk];
                        }
                    }
                    else
                    {
                        for (int kk = 0; kk < k; kk++)
                        {
                            dst[(kk * MR) + r] = 0;
                        }
                    }
                }
            }
        }
    }

    /// <summary>Packs columns [16·p, 16·p + 16) of op(B) as [k][16], zero-padding past n.</summary>
    private static void PackB(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int k = job.K;
        for (int p = start; p < end; p++)
        {
            float* dst = job.PackedB + ((long)p * NR * k);
            int col0 = p * NR;
            int cols = Math.Min(NR, job.N - col0);
            if (job.TransB)
            {
                for (int j = 0; j < NR; j++)
                {
                    if (j < cols)
                    {
                        float* src = job.B + ((long)(col0 + j) * job.Ldb);
                        for (int kk = 0; kk < k; kk++)
                        {
                            dst[(kk * NR) + j] = src[kk];
                        }
                    }
                    else
                    {
                        for (int kk = 0; kk < k; kk++)
                        {
                            dst[(kk * NR) + j] = 0;
                        }
                    }
                }
            }
            else if (cols == NR)
            {
                for (int kk = 0; kk < k; kk++)
                {
                    float* src = job.B + ((long)kk * job.Ldb) + col0;
                    Vector256.Store(Vector256.Load(src), dst + (kk * NR));
                    Vector256.Store(Vector256.Load(src + 8), dst + (kk * NR) + 8);
                }
            }
            else
            {
                for (int kk = 0; kk < k; kk++)
                {
                    float* src = job.B + ((long)kk * job.Ldb) + col0;
                    float* d = dst + (kk * NR);
                    int j = 0;
                    for (; j < cols; j++)
                    {
                        d[j] = src[j];
                    }

                    for (; j < NR; j++)
                    {
                        d[j] = 0;
                    }
                }
            }
        }
    }

    private static void RunTiles(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        for (int item = start; item < end; item++)
        {
            int chunk = item / job.MBlocks;
            int blk = item % job.MBlocks;
            int row0 = blk * MR;
            int rows = Math.Min(MR, job.M - row0);
            float* ap = job.PackedA + ((long)blk * MR * job.K);
            int panelEnd = Math.Min(job.NPanels, (chunk + 1) * PanelsPerChunk);
            for (int p = chunk * PanelsPerChunk; p < panelEnd; p++)
            {
                int col0 = p * NR;
                Kernel(ap, job.PackedB + ((long)p * NR * job.K), job.K, job.C + ((long)row0 * job.Ldc) + col0, job.Ldc,
                    rows, Math.Min(NR, job.N - col0), job.Accumulate);
            }
        }
    }

    /// <summary>The 6×16 register tile: 12 accumulators of 8 floats, summed over k in order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel(float* ap, float* bp, int k, float* c, int ldc, int rows, int cols, bool accumulate)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int kk = 0; kk < k; kk++)
        {
            var b0 = Vector256.Load(bp);
            var b1 = Vector256.Load(bp + 8);
            var a = Vector256.Create(ap[0]);
            c00 = Vector256.MultiplyAddEstimate(a, b0, c00);
            c01 = Vector256.MultiplyAddEstimate(a, b1, c01);
            a = Vector256.Create(ap[1]);
            c10 = Vector256.MultiplyAddEstimate(a, b0, c10);
            c11 = Vector256.MultiplyAddEstimate(a, b1, c11);
            a = Vector256.Create(ap[2]);
            c20 = Vector256.MultiplyAddEstimate(a, b0, c20);
            c21 = Vector256.MultiplyAddEstimate(a, b1, c21);
            a = Vector256.Create(ap[3]);
            c30 = Vector256.MultiplyAddEstimate(a, b0, c30);
            c31 = Vector256.MultiplyAddEstimate(a, b1, c31);
            a = Vector256.Create(ap[4]);
            c40 = Vector256.MultiplyAddEstimate(a, b0, c40);
            c41 = Vector256.MultiplyAddEstimate(a, b1, c41);
            a = Vector256.Create(ap[5]);
            c50 = Vector256.MultiplyAddEstimate(a, b0, c50);
            c51 = Vector256.MultiplyAddEstimate(a, b1, c51);
            ap += MR;
            bp += NR;
        }

        if (rows == MR && cols == NR)
        {
            Store(c, c00, c01, accumulate);
            Store(c + ldc, c10, c11, accumulate);
            Store(c + (2 * ldc), c20, c21, accumulate);
            Store(c + (3 * ldc), c30, c31, accumulate);
            Store(c + (4 * ldc), c40, c41, accumulate);
            Store(c + (5 * ldc), c50, c51, accumulate);
            return;
        }

        float* tile = stackalloc float[MR * NR];
        c00.Store(tile);
        c01.Store(tile + 8);
        c10.Store(tile + 16);
        c11.Store(tile + 24);
        c20.Store(tile + 32);
        c21.Store(tile + 40);
        c30.Store(tile + 48);
        c31.Store(tile + 56);
        c40.Store(tile + 64);
        c41.Store(tile + 72);
        c50.Store(tile + 80);
        c51.Store(tile + 88);
        for (int r = 0; r < rows; r++)
        {
            float* dst = c + ((long)r * ldc);
            float* src = tile + (r * NR);
            for (int j = 0; j < cols; j++)
            {
                dst[j] = accumulate ? dst[j] + src[j] : src[j];
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* c, Vector256<float> lo, Vector256<float> hi, bool accumulate)
    {
        if (accumulate)
        {
            lo += Vector256.Load(c);
            hi += Vector256.Load(c + 8);
        }

        lo.Store(c);
        hi.Store(c + 8);
    }
}
