using Minnow.Kernels;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// GELU, exact (x·Φ(x), GPT-NeoX "gelu") or the tanh approximation (GPT-2 "gelu_new"), forward by
/// <see cref="Gelu"/> (as inference computes it) and its gradient.
/// </summary>
public static unsafe class GeluOp
{
    private const int Chunk = 4096;
    private const double InvSqrt2 = 0.70710678118654752440;
    private const double InvSqrt2Pi = 0.39894228040143267794;
    private const float TanhC = 0.7978845608028654f; // sqrt(2/pi)
    private const float TanhA = 0.044715f;

    private struct Job
    {
        public float* X;
        public float* Out;
        public float* DOut;
        public float* DX;
        public long Count;
        public bool Exact;
    }

    /// <summary>output = gelu(x) (<paramref name="kind"/> is <see cref="Activation.Gelu"/> or <see cref="Activation.GeluTanh"/>).</summary>
    public static void Forward(float* x, float* output, long count, Activation kind, WorkerPool pool)
    {
        var job = new Job { X = x, Out = output, Count = count, Exact = IsExact(kind) };
        pool.For(checked((int)((count + Chunk - 1) / Chunk)), 4, &ForwardChunks, &job);
    }

    /// <summary>dx = dOut · gelu'(x) (written, not accumulated).</summary>
    public static void Backward(float* x, float* dOut, float* dx, long count, Activation kind, WorkerPool pool)
    {
        var job = new Job { X = x, DOut = dOut, DX = dx, Count = count, Exact = IsExact(kind) };
        pool.For(checked((int)((count + Chunk - 1) / Chunk)), 4, &BackwardChunks, &job);
    }

    /// <summary>d/dx x·Φ(x) = Φ(x) + x·φ(x), with Φ from erfc so the negative tail keeps its precision.</summary>
    public static double ExactDerivative(double x)
    {
        double halfErfc = 0.5 * GeluExactOperator.Erfc(Math.Abs(x) * InvSqrt2);
        double cdf = x >= 0 ? 1.0 - halfErfc : halfErfc;
        return cdf + (x * InvSqrt2Pi * Math.Exp(-0.5 * x * x));
    }

    /// <summary>
    /// d/dx x·σ(2u), u = √(2/π)(x + 0.044715x³): σ(2u) + x·σ(2u)(1 − σ(2u))·2√(2/π)(1 + 3·0.044715x²).
    /// </summary>
    public static float TanhDerivative(float x)
    {
        float u = TanhC * (x + (TanhA * x * x * x));
        float s = 1f / (1f + MathF.Exp(-2f * u));
        return s + (x * s * (1f - s) * 2f * TanhC * (1f + (3f * TanhA * x * x)));
    }

    private static bool IsExact(Activation kind) => kind switch
    {
        Activation.Gelu => true,
        Activation.GeluTanh => false,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "GeluOp computes gelu or gelu_new only."),
    };

    private static void ForwardChunks(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        long i0 = (long)start * Chunk, i1 = Math.Min(job.Count, (long)end * Chunk);
        VectorMath.Copy(job.X + i0, job.Out + i0, i1 - i0);
        if (job.Exact)
        {
            Gelu.Exact(job.Out + i0, (int)(i1 - i0));
        }
        else
        {
            Gelu.Tanh(job.Out + i0, (int)(i1 - i0));
        }
    }

    private static void BackwardChunks(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        long i0 = (long)start * Chunk, i1 = Math.Min(job.Count, (long)end * Chunk);
        if (job.Exact)
        {
            for (long i = i0; i < i1; i++)
            {
                job.DX[i] = (float)(job.DOut[i] * ExactDerivative(job.X[i]));
            }
        }
        else
        {
            for (long i = i0; i < i1; i++)
            {
                job.DX[i] = job.DOut[i] * TanhDerivative(job.X[i]);
            }
        }
    }
}
