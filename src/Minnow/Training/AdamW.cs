using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// AdamW (decoupled weight decay, as torch.optim.AdamW): per parameter p with gradient g at step t,
/// m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; p −= lr·wd·p (matrices only, not norms or biases);
/// p −= lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε). Moments are float32 buffers laid out like the parameters.
/// </summary>
public sealed unsafe class AdamW : IDisposable
{
    private const int Chunk = 16384;

    private readonly ParameterStore _store;
    private readonly NativeBuffer _m;
    private readonly NativeBuffer _v;
    private readonly (long Offset, int Count, bool Decay)[] _chunks;
    private readonly WorkerPool _pool;

    private struct Job
    {
        public float* P;
        public float* G;
        public float* M;
        public float* V;
        public (long Offset, int Count, bool Decay)* Chunks;
        public float Lr;
        public float Decay;
        public float Beta1;
        public float Beta2;
        public float Eps;
        public float StepSize;
        public float InvSqrtBc2;
    }

    public AdamW(ParameterStore store, float beta1 = 0.9f, float beta2 = 0.95f, float eps = 1e-8f, float weightDecay = 0.1f, WorkerPool? pool = null)
    {
        _store = store;
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        WeightDecay = weightDecay;
        _pool = pool ?? WorkerPool.Shared;
        _m = NativeBuffer.Floats(store.TotalFloats);
        _v = NativeBuffer.Floats(store.TotalFloats);
        var chunks = new List<(long, int, bool)>();
        foreach (var p in store.All)
        {
            for (long o = 0; o < p.Count; o += Chunk)
            {
                chunks.Add((p.Offset + o, (int)Math.Min(Chunk, p.Count - o), p.Decay));
            }
        }

        _chunks = chunks.ToArray();
    }

    public float Beta1 { get; }

    public float Beta2 { get; }

    public float Eps { get; }

    public float WeightDecay { get; }

    /// <summary>Updates taken so far (t of the bias correction).</summary>
    public long Step { get; set; }

    /// <summary>First moments, laid out like <see cref="ParameterStore.Values"/>.</summary>
    public float* M => _m.FloatPointer;

    /// <summary>Second moments, laid out like <see cref="ParameterStore.Values"/>.</summary>
    public float* V => _v.FloatPointer;

    /// <summary>Applies one update from the current gradients with learning rate <paramref name="lr"/>.</summary>
    public void Update(float lr)
    {
        Step++;
        double bc1 = 1 - Math.Pow(Beta1, Step);
        double bc2 = 1 - Math.Pow(Beta2, Step);
        fixed ((long, int, bool)* chunks = _chunks)
        {
            var job = new Job
            {
                P = _store.Values,
                G = _store.Grads,
                M = M,
                V = V,
                Chunks = chunks,
                Lr = lr,
                Decay = WeightDecay,
                Beta1 = Beta1,
                Beta2 = Beta2,
                Eps = Eps,
                StepSize = (float)(lr / bc1),
                InvSqrtBc2 = (float)(1 / Math.Sqrt(bc2)),
            };
            _pool.For(_chunks.Length, 1, &Run, &job);
        }
    }

    private static void Run(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        for (int c = start; c < end; c++)
        {
            var (offset, count, decay) = job.Chunks[c];
            float* p = job.P + offset, g = job.G + offset, m = job.M + offset, v = job.V + offset;
            float keep = decay ? 1f - (job.Lr * job.Decay) : 1f;
            for (int i = 0; i < count; i++)
            {
                float gi = g[i];
                float mi = (job.Beta1 * m[i]) + ((1 - job.Beta1) * gi);
                float vi = (job.Beta2 * v[i]) + ((1 - job.Beta2) * gi * gi);
                m[i] = mi;
                v[i] = vi;
                float denom = (MathF.Sqrt(vi) * job.InvSqrtBc2) + job.Eps;
                p[i] = (p[i] * keep) - (job.StepSize * mi / denom);
            }
        }
    }

    public void Dispose()
    {
        _m.Dispose();
        _v.Dispose();
    }
}

/// <summary>Global gradient norm and clipping over a <see cref="ParameterStore"/>.</summary>
public static unsafe class GradientClipping
{
    private const int Chunk = 65536;

    private struct Job
    {
        public float* G;
        public long Count;
        public double* Partial;
        public float Scale;
    }

    /// <summary>The L2 norm of all gradients (summed per fixed chunk, then over chunks in order: deterministic).</summary>
    public static double GlobalNorm(ParameterStore store, WorkerPool? pool = null)
    {
        long n = store.TotalFloats;
        int chunks = (int)((n + Chunk - 1) / Chunk);
        var partial = new double[chunks];
        fixed (double* pp = partial)
        {
            var job = new Job { G = store.Grads, Count = n, Partial = pp };
            (pool ?? WorkerPool.Shared).For(chunks, 1, &SumSquares, &job);
        }

        double total = 0;
        foreach (double s in partial)
        {
            total += s;
        }

        return Math.Sqrt(total);
    }

    /// <summary>Scales the gradients so their global norm is at most <paramref name="maxNorm"/>; returns the norm before.</summary>
    public static double ClipGlobalNorm(ParameterStore store, double maxNorm, WorkerPool? pool = null)
    {
        double norm = GlobalNorm(store, pool);
        if (maxNorm > 0 && norm > maxNorm)
        {
            long n = store.TotalFloats;
            var job = new Job { G = store.Grads, Count = n, Scale = (float)(maxNorm / (norm + 1e-6)) };
            (pool ?? WorkerPool.Shared).For((int)((n + Chunk - 1) / Chunk), 1, &ScaleChunks, &job);
        }

        return norm;
    }

    private static void SumSquares(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        for (int c = start; c < end; c++)
        {
            long o = (long)c * Chunk;
            job.Partial[c] = VectorMath.SumSquares(job.G + o, Math.Min(Chunk, job.Count - o));
        }
    }

    private static void ScaleChunks(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        for (int c = start; c < end; c++)
        {
            long o = (long)c * Chunk;
            VectorMath.Scale(job.G + o, job.Scale, (int)Math.Min(Chunk, job.Count - o));
        }
    }
}

/// <summary>Linear warm-up to the peak rate, then cosine decay to the minimum at the last step.</summary>
public sealed record LearningRateSchedule(float Peak, float Minimum, int WarmupSteps, int TotalSteps)
{
    /// <summary>The rate for step <paramref name="step"/> (0-based).</summary>
    public float At(int step)
    {
        if (step < WarmupSteps)
        {
            return Peak * (step + 1) / WarmupSteps;
        }

        int decaySteps = Math.Max(1, TotalSteps - WarmupSteps);
        double progress = Math.Clamp((double)(step - WarmupSteps) / decaySteps, 0, 1);
        return (float)(Minimum + (0.5 * (Peak - Minimum) * (1 + Math.Cos(Math.PI * progress))));
    }
}
