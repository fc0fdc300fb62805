using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>x[i] += y[i] (residual connections).</summary>
public static unsafe class Add
{
    public static void Compute(float* x, float* y, int n) => Compute(x, y, n, KernelIsa.Current);

    internal static void Compute(float* x, float* y, int n, VectorWidth width) =>
        VectorDriver.Map(default(AddOperator), x, y, x, n, width);
}

/// <summary>x + y.</summary>
internal readonly struct AddOperator : IBinaryOperator
{
    public float Invoke(float x, float y) => x + y;

    public Vector128<float> Invoke(Vector128<float> x, Vector128<float> y) => x + y;

    public Vector256<float> Invoke(Vector256<float> x, Vector256<float> y) => x + y;

    public Vector512<float> Invoke(Vector512<float> x, Vector512<float> y) => x + y;
}
