using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>gate[i] = silu(gate[i]) · up[i], the gated MLP of the Llama family.</summary>
public static unsafe class SwiGlu
{
    public static void Compute(float* gate, float* up, int n) => Compute(gate, up, n, KernelIsa.Current);

    internal static void Compute(float* gate, float* up, int n, VectorWidth width) =>
        VectorDriver.Map(default(SwiGluOperator), gate, up, gate, n, width);
}

/// <summary>g / (1 + e^−g) · u. (For g ≪ 0, e^−g overflows to ∞ and the result is the correct −0 · u.)</summary>
internal readonly struct SwiGluOperator : IBinaryOperator
{
    public float Invoke(float g, float u) => g / (1f + MathF.Exp(-g)) * u;

    public Vector128<float> Invoke(Vector128<float> g, Vector128<float> u) =>
        g / (Vector128<float>.One + Vector128.Exp(-g)) * u;

    public Vector256<float> Invoke(Vector256<float> g, Vector256<float> u) =>
        g / (Vector256<float>.One + Vector256.Exp(-g)) * u;

    public Vector512<float> Invoke(Vector512<float> g, Vector512<float> u) =>
        g / (Vector512<float>.One + Vector512.Exp(-g)) * u;
}
