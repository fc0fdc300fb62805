using System.Runtime.Intrinsics;
using Minnow.Tensors;

namespace Minnow.Kernels;

/// <summary>
/// Causal multi-head attention with grouped-query heads over a float32 or float16 KV cache.
/// q: [tokens, heads·headDim]; the cache rows hold [kvHeads·headDim] per position; token t sits at position
/// startPos + t and attends to positions 0..startPos + t. output: [tokens, heads·headDim].
/// (token, head) pairs are spread over the worker pool; each pair is computed by the same code whatever the
/// thread count. Scores are dot products over the head dimension, four cached keys at a time; the output is the
/// score-weighted sum of the cached values, four positions per pass over the output vector (in position order).
/// The cache may be paged (<see cref="KvPages"/>): position p's rows are in page <c>pages[p / pageSize]</c>. Pages hold
/// a multiple of four positions, so the four-position steps fall on the same positions as in one contiguous buffer
/// and a paged cache gives the same bits.
/// </summary>
public static unsafe class Attention
{
    /// <summary>Where a layer's cached rows are: page <c>Pages[p / PageSize]</c> of the pool at <c>Base</c>, keys at
    /// <c>KeyOffset</c> and values at <c>ValueOffset</c> within a page, rows <c>p % PageSize</c>.</summary>
    public struct KvPages
    {
        public byte* Base;
        public int* Pages;
        public long PageBytes;
        public long KeyOffset;
        public long ValueOffset;
        public int PageSize;
    }

    /// <summary>One sequence's share of a batched call: its tokens' queries and outputs, and its cache.</summary>
    public struct Segment
    {
        /// <summary>[Tokens, heads·headDim] queries.</summary>
        public float* Q;

        /// <summary>[Tokens, heads·headDim] outputs.</summary>
        public float* Output;

        /// <summary>The sequence's cached keys and values, the new tokens' included.</summary>
        public KvPages Kv;

        /// <summary>How many new tokens; token t sits at position <see cref="StartPos"/> + t.</summary>
        public int Tokens;

        public int StartPos;
    }

    private struct Job
    {
        public Segment* Segments;
        public int* FirstItems; // segment s has items [FirstItems[s], FirstItems[s + 1])
        public int Heads;
        public int KvHeads;
        public int HeadDim;
        public int MaxLength;
        public int SubGroup; // query heads per item
        public int Splits; // items per token and key/value head: group / SubGroup, rounded up
        public float Scale;
        public VectorWidth Width;
    }

    /// <summary>Cached rows converted to float32 at a time (a multiple of four, so the four-position steps fall
    /// where they fall in a page).</summary>
    private const int ChunkRows = 16;

    private struct ScratchTag;

    public static void Compute(float* q, float* keys, float* values, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool = null) =>
        Compute(q, (byte*)keys, (byte*)values, DType.F32, output, tokens, startPos, heads, kvHeads, headDim, pool, KernelIsa.Current);

    /// <param name="cacheType">The type of the cached keys and values: F32 or F16.</param>
    public static void Compute(float* q, byte* keys, byte* values, DType cacheType, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool = null) =>
        Compute(q, keys, values, cacheType, output, tokens, startPos, heads, kvHeads, headDim, pool, KernelIsa.Current);

    internal static void Compute(float* q, byte* keys, byte* values, DType cacheType, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool, VectorWidth width)
    {
        // One contiguous buffer is one page as long as the whole sequence.
        int page = 0;
        var kv = new KvPages
        {
            Base = keys,
            Pages = &page,
            PageBytes = 0,
            KeyOffset = 0,
            ValueOffset = values - keys,
            PageSize = startPos + tokens,
        };
        Compute(q, kv, cacheType, output, tokens, startPos, heads, kvHeads, headDim, pool, width);
    }

    /// <summary>Attention over a paged cache.</summary>
    public static void Compute(float* q, in KvPages kv, DType cacheType, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool = null) =>
        Compute(q, kv, cacheType, output, tokens, startPos, heads, kvHeads, headDim, pool, KernelIsa.Current);

    internal static void Compute(float* q, in KvPages kv, DType cacheType, float* output, int tokens, int startPos,
        int heads, int kvHeads, int headDim, WorkerPool? pool, VectorWidth width)
    {
        var segment = new Segment { Q = q, Output = output, Kv = kv, Tokens = tokens, StartPos = startPos };
        Compute(new ReadOnlySpan<Segment>(in segment), cacheType, heads, kvHeads, headDim, pool, width);
    }

    /// <summary>
    /// Attention for several sequences in one pass of the pool (a batched decode step: one wake-up of the workers
    /// instead of one per sequence). Each segment's outputs are what a call for it alone gives, bit for bit.
    /// </summary>
    public static void Compute(ReadOnlySpan<Segment> segments, DType cacheType, int heads, int kvHeads, int headDim, WorkerPool? pool = null) =>
        Compute(segments, cacheType, heads, kvHeads, headDim, pool, KernelIsa.Current);

    internal static void Compute(ReadOnlySpan<Segment> segments, DType cacheType, int heads, int kvHeads, int headDim, WorkerPool? pool, VectorWidth width)
    {
        if (cacheType is not (DType.F32 or DType.F16))
        {
            throw new NotSupportedException($"Attention reads an F32 or F16 cache, not {cacheType}.");
        }

        if (kvHeads <= 0 || heads % kvHeads != 0)
        {
            throw new ArgumentException($"{heads} query heads do not divide into {kvHeads} key/value heads.", nameof(kvHeads));
        }

        pool ??= WorkerPool.Shared;
        int count = segments.Length;
        int grouped = 0, maxLength = 0;
        for (int s = 0; s < count; s++)
        {
            grouped += segments[s].Tokens * kvHeads;
            maxLength = Math.Max(maxLength, segments[s].StartPos + segments[s].Tokens);
        }

        // The query heads that share a key/value head go together when there are enough items to keep every
        // thread busy (a batch, a prompt); otherwise (one sequence decoding) they are split up for balance. Either
        // way each head gets the same bits.
        int group = heads / kvHeads;
        int subGroup = (int)Math.Clamp((long)group * grouped / (4L * pool.ThreadCount), 1, group);
        int splits = (group + subGroup - 1) / subGroup;
        int* firstItems = stackalloc int[count + 1];
        firstItems[0] = 0;
        for (int s = 0; s < count; s++)
        {
            firstItems[s + 1] = firstItems[s] + (segments[s].Tokens * kvHeads * splits);
        }

        int items = firstItems[count];
        if (items == 0)
        {
            return;
        }

        fixed (Segment* pointer = segments)
        {
            var job = new Job
            {
                Segments = pointer,
                FirstItems = firstItems,
                Heads = heads,
                KvHeads = kvHeads,
                HeadDim = headDim,
                MaxLength = maxLength,
                SubGroup = subGroup,
                Splits = splits,
                Scale = 1f / MathF.Sqrt(headDim),
                Width = width,
            };
            delegate*<void*, int, int, void> body = cacheType == DType.F16 ? Select<F16Format>(width) : Select<F32Format>(width);
            pool.For(items, 1, body, &job);
        }
    }

    private static delegate*<void*, int, int, void> Select<TFormat>(VectorWidth width)
        where TFormat : struct, IWeightFormat => width switch
        {
            VectorWidth.V512 => &RunItems<TFormat, Vector512<float>>,
            VectorWidth.V256 => &RunItems<TFormat, Vector256<float>>,
            VectorWidth.V128 => &RunItems<TFormat, Vector128<float>>,
            _ => &RunItemsScalar<TFormat>,
        };

    /// <summary>Which segment item <paramref name="item"/> is in, searching on from <paramref name="segment"/>.</summary>
    private static int SegmentOf(ref Job job, int item, int segment)
    {
        while (item >= job.FirstItems[segment + 1])
        {
            segment++;
        }

        return segment;
    }

    /// <summary>
    /// An item is one token and one key/value head: the group of query heads that share that head is computed
    /// together, so each cached row is converted to float32 once for the group (sixteen rows at a time, into a
    /// per-thread buffer) rather than once per query head. Conversion is exact, and the products then run in the
    /// same order as on the stored rows, so the grouping changes no bit.
    /// </summary>
    private static void RunItems<TFormat, T>(void* context, int start, int end)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        ref Job job = ref *(Job*)context;
        int hd = job.HeadDim;
        int qDim = job.Heads * hd;
        int element = TFormat.BlockBytes;
        long kvBytes = (long)job.KvHeads * hd * element;
        int maxLength = job.MaxLength;
        int heads = job.SubGroup;

        // A lone head reads its rows as stored; a group reads them once converted.
        bool convert = typeof(TFormat) != typeof(F32Format) && heads > 1;
        long stride = convert ? (long)hd * sizeof(float) : kvBytes;
        float* scores = Scratch<ScratchTag>.Get(checked((heads * maxLength) + (ChunkRows * hd)));
        float* rows = scores + ((long)heads * maxLength);
        int segment = 0;
        for (int item = start; item < end; item++)
        {
            segment = SegmentOf(ref job, item, segment);
            ref Segment seg = ref job.Segments[segment];
            int local = item - job.FirstItems[segment];
            int split = local % job.Splits;
            local /= job.Splits;
            int t = local / job.KvHeads, kvh = local % job.KvHeads;
            int firstHead = (kvh * (job.Heads / job.KvHeads)) + (split * heads);
            int group = Math.Min(heads, ((kvh + 1) * (job.Heads / job.KvHeads)) - firstHead);
            int length = seg.StartPos + t + 1;
            float* q = seg.Q + ((long)t * qDim) + (firstHead * hd);
            float* output = seg.Output + ((long)t * qDim) + (firstHead * hd);
            long headOffset = (long)kvh * hd * element;
            int ps = seg.Kv.PageSize;

            // Scores: q_g · k_p · scale for every head g of the group and position p.
            for (int p0 = 0, page = 0; p0 < length; p0 += ps, page++)
            {
                byte* keys = seg.Kv.Base + (seg.Kv.Pages[page] * seg.Kv.PageBytes) + seg.Kv.KeyOffset + headOffset;
                int count = Math.Min(ps, length - p0);
                for (int c0 = 0; c0 < count; c0 += ChunkRows)
                {
                    int n = Math.Min(ChunkRows, count - c0);
                    byte* k = keys + (c0 * kvBytes);
                    if (convert)
                    {
                        ConvertRows<TFormat, T>(k, kvBytes, n, hd, rows);
                        k = (byte*)rows;
                    }

                    for (int g = 0; g < group; g++)
                    {
                        if (convert)
                        {
                            Scores<F32Format, T>(k, stride, n, q + (g * hd), hd, job.Scale, scores + ((long)g * maxLength) + p0 + c0);
                        }
                        else
                        {
                            Scores<TFormat, T>(k, stride, n, q + (g * hd), hd, job.Scale, scores + ((long)g * maxLength) + p0 + c0);
                        }
                    }
                }
            }

            for (int g = 0; g < group; g++)
            {
                Softmax.Compute(scores + ((long)g * maxLength), length, job.Width);
                new Span<float>(output + (g * hd), hd).Clear();
            }

            // Outputs: o_g = Σ_p softmax_g[p] · v_p.
            for (int p0 = 0, page = 0; p0 < length; p0 += ps, page++)
            {
                byte* values = seg.Kv.Base + (seg.Kv.Pages[page] * seg.Kv.PageBytes) + seg.Kv.ValueOffset + headOffset;
                int count = Math.Min(ps, length - p0);
                for (int c0 = 0; c0 < count; c0 += ChunkRows)
                {
                    int n = Math.Min(ChunkRows, count - c0);
                    byte* v = values + (c0 * kvBytes);
                    if (convert)
                    {
                        ConvertRows<TFormat, T>(v, kvBytes, n, hd, rows);
                        v = (byte*)rows;
                    }

                    for (int g = 0; g < group; g++)
                    {
                        if (convert)
                        {
                            AccumulateWeighted<F32Format, T>(scores + ((long)g * maxLength) + p0 + c0, v, stride, n, output + (g * hd), hd);
                        }
                        else
                        {
                            AccumulateWeighted<TFormat, T>(scores + ((long)g * maxLength) + p0 + c0, v, stride, n, output + (g * hd), hd);
                        }
                    }
                }
            }
        }
    }

    /// <summary>n cached rows (rowBytes apart) of one head as float32, hd apart.</summary>
    private static void ConvertRows<TFormat, T>(byte* source, long rowBytes, int n, int hd, float* destination)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        int c = Simd.Count<T>();
        for (int r = 0; r < n; r++)
        {
            byte* row = source + (r * rowBytes);
            float* d = destination + ((long)r * hd);
            int i = 0;
            for (; i <= hd - c; i += c)
            {
                Simd.Store(TFormat.Load<T>(row, i), d + i);
            }

            for (; i < hd; i++)
            {
                d[i] = TFormat.Value(row, i);
            }
        }
    }

    /// <summary>s[p] = (k_p · q) · scale for n float32 rows, four at a time.</summary>
    private static void Scores<TFormat, T>(byte* keys, long stride, int n, float* q, int hd, float scale, float* s)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        int p = 0;
        for (; p + 4 <= n; p += 4)
        {
            MatMul.Dot4<TFormat, T>(keys + (p * stride), stride, q, hd, s + p);
            for (int k = 0; k < 4; k++)
            {
                s[p + k] *= scale;
            }
        }

        for (; p < n; p++)
        {
            s[p] = MatMul.Dot1<TFormat, T>(keys + (p * stride), q, hd) * scale;
        }
    }

    /// <summary>o += Σ_p w[p] · v[p], in position order, four positions per pass over o.</summary>
    private static void AccumulateWeighted<TFormat, T>(float* w, byte* values, long kvBytes, int length, float* o, int hd)
        where TFormat : struct, IWeightFormat
        where T : struct
    {
        int c = Simd.Count<T>();
        int p = 0;
        for (; p + 4 <= length; p += 4)
        {
            byte* v0 = values + (p * kvBytes);
            byte* v1 = v0 + kvBytes, v2 = v1 + kvBytes, v3 = v2 + kvBytes;
            T w0 = Simd.Broadcast<T>(w[p]), w1 = Simd.Broadcast<T>(w[p + 1]);
            T w2 = Simd.Broadcast<T>(w[p + 2]), w3 = Simd.Broadcast<T>(w[p + 3]);
            int i = 0;
            for (; i <= hd - c; i += c)
            {
                T acc = Simd.Load<T>(o + i);
                acc = Simd.MultiplyAdd(w0, TFormat.Load<T>(v0, i), acc);
                acc = Simd.MultiplyAdd(w1, TFormat.Load<T>(v1, i), acc);
                acc = Simd.MultiplyAdd(w2, TFormat.Load<T>(v2, i), acc);
                acc = Simd.MultiplyAdd(w3, TFormat.Load<T>(v3, i), acc);
                Simd.Store(acc, o + i);
            }

            for (; i < hd; i++)
            {
                o[i] = o[i] + (w[p] * TFormat.Value(v0, i)) + (w[p + 1] * TFormat.Value(v1, i)) + (w[p + 2] * TFormat.Value(v2, i)) + (w[p + 3] * TFormat.Value(v3, i));
            }
        }

        for (; p < length; p++)
        {
            byte* v = values + (p * kvBytes);
            T wp = Simd.Broadcast<T>(w[p]);
            int i = 0;
            for (; i <= hd - c; i += c)
            {
                Simd.Store(Simd.MultiplyAdd(wp, TFormat.Load<T>(v, i), Simd.Load<T>(o + i)), o + i);
            }

            for (; i < hd; i++)
            {
                o[i] += w[p] * TFormat.Value(v, i);
            }
        }
    }

    /// <summary>The scalar reference.</summary>
    private static void RunItemsScalar<TFormat>(void* context, int start, int end)
        where TFormat : struct, IWeightFormat
    {
        ref Job job = ref *(Job*)context;
        int hd = job.HeadDim;
        int qDim = job.Heads * hd;
        int kvDim = job.KvHeads * hd;
        int group = job.Heads / job.KvHeads;
        float* scores = Scratch<ScratchTag>.Get(job.MaxLength);
        int segment = 0;
        for (int item = start; item < end; item++)
        {
            segment = SegmentOf(ref job, item, segment);
            ref Segment seg = ref job.Segments[segment];
            int local = item - job.FirstItems[segment];
            int split = local % job.Splits;
            local /= job.Splits;
            int t = local / job.KvHeads, kvh = local % job.KvHeads;
            int length = seg.StartPos + t + 1;
            int firstHead = (kvh * group) + (split * job.SubGroup);
            for (int h = firstHead; h < Math.Min(firstHead + job.SubGroup, (kvh + 1) * group); h++)
            {
                float* qh = seg.Q + ((long)t * qDim) + (h * hd);
                for (int p = 0; p < length; p++)
                {
                    byte* k = Row(seg.Kv, seg.Kv.KeyOffset, p, (long)kvDim * TFormat.BlockBytes) + ((long)kvh * hd * TFormat.BlockBytes);
                    float dot = 0;
                    for (int i = 0; i < hd; i++)
                    {
                        dot += qh[i] * TFormat.Value(k, i);
                    }

                    scores[p] = dot * job.Scale;
                }

                Softmax.Compute(scores, length, VectorWidth.Scalar);
                float* o = seg.Output + ((long)t * qDim) + (h * hd);
                new Span<float>(o, hd).Clear();
                for (int p = 0; p < length; p++)
                {
                    byte* v = Row(seg.Kv, seg.Kv.ValueOffset, p, (long)kvDim * TFormat.BlockBytes) + ((long)kvh * hd * TFormat.BlockBytes);
                    float w = scores[p];
                    for (int i = 0; i < hd; i++)
                    {
                        o[i] += w * TFormat.Value(v, i);
                    }
                }
            }
        }
    }

    private static byte* Row(in KvPages kv, long offset, int position, long rowBytes) =>
        kv.Base + (kv.Pages[position / kv.PageSize] * kv.PageBytes) + offset + ((position % kv.PageSize) * rowBytes);
}
