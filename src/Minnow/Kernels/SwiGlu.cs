namespace Minnow.Kernels;

/// <summary>gate[i] = silu(gate[i]) · up[i], the gated MLP of the Llama family.</summary>
public static unsafe class SwiGlu
{
    public static void Compute(float* gate, float* up, int n)
    {
        for (int i = 0; i < n; i++)
        {
            float g = gate[i];
            gate[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }
}
