namespace Minnow.Kernels;

/// <summary>How the rotated pairs of a head vector are formed.</summary>
public enum RopeStyle
{
    /// <summary>Pairs (i, i + rotaryDim/2): Hugging Face's rotate_half (Llama, Qwen2, GPT-NeoX in HF layout).</summary>
    RotateHalf,
    /// <summary>Pairs (2i, 2i + 1): llama2.c and GGUF's Llama layout.</summary>
    Interleaved,
}

/// <summary>
/// Rotary position embedding applied in place to <c>heads</c> consecutive vectors of <c>headDim</c> floats;
/// only the first <c>rotaryDim</c> dimensions of each head rotate (partial rotary, GPT-NeoX).
/// <c>cos</c>/<c>sin</c> hold rotaryDim/2 values for this position.
/// </summary>
public static unsafe class Rope
{
    public static void Apply(float* x, int heads, int headDim, int rotaryDim, float* cos, float* sin, RopeStyle style)
    {
        int half = rotaryDim / 2;
        for (int h = 0; h < heads; h++)
        {
            float* v = x + (h * headDim);
            if (style == RopeStyle.RotateHalf)
            {
                for (int i = 0; i < half; i++)
                {
                    float a = v[i], b = v[i + half];
                    v[i] = (a * cos[i]) - (b * sin[i]);
                    v[i + half] = (b * cos[i]) + (a * sin[i]);
                }
            }
            else
            {
                for (int i = 0; i < half; i++)
                {
                    float a = v[2 * i], b = v[(2 * i) + 1];
                    v[2 * i] = (a * cos[i]) - (b * sin[i]);
                    v[(2 * i) + 1] = (b * cos[i]) + (a * sin[i]);
                }
            }
        }
    }
}
