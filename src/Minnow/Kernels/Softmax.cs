using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>In-place softmax over n values: e^(x − max) / Σ e^(x − max).</summary>
public static unsafe class Softmax
{
    public static void Compute(float* x, int n) => Compute(x, n, KernelIsa.Current);

    internal static void Compute(float* x, int n, VectorWidth width)
    {
        if (n <= 0)
        {
            return;
        }

        float max = VectorDriver.Aggregate(default(IdentityOperator), default(MaxOperator), x, n, width);
        float sum = VectorDriver.MapAggregate(new ExpSubtractOperator(max), default(SumOperator), x, x, n, width);
        VectorDriver.Map(new ScaleOperator(1f / sum), x, x, n, width);
    }
}

/// <summary>e^(x − max).</summary>
internal readonly struct ExpSubtractOperator(float max) : IUnaryOperator
{
    private readonly float _max = max;

    public float Invoke(float x) => MathF.Exp(x - _max);

    public Vector128<float> Invoke(Vector128<float> x) =>
        Vector128.Exp(x - Vector128.Create(_max));

    public Vector256<float> Invoke(Vector256<float> x) =>
        Vector256.Exp(x - Vector256.Create(_max));

    public Vector512<float> Invoke(Vector512<float> x) =>
        Vector512.Exp(x - Vector512.Create(_max));
}
