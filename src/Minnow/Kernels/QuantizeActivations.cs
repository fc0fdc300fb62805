using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>
/// Quantizes a float32 activation row to Q8_0 on the fly, for the integer matrix kernels
/// (<see cref="QuantizedMatMul"/>), exactly as llama.cpp's <c>quantize_row_q8_0_ref</c> and
/// <see cref="Tensors.Dequantize.FromFloats"/> do: per block of 32, d = max|x| / 127, id = d ≠ 0 ? 1 / d : 0,
/// q = round-half-away-from-zero(x · id), and d is stored as fp16 (the fp16-rounded d is what the dot uses).
/// <para>
/// The blocks are written split for the kernels rather than interleaved as in a GGUF file: the 32 quants of block
/// b at <c>quants + 32b</c>, its fp16-rounded scale (as float) at <c>scales[b]</c>, and Σq at <c>sums[b]</c>
/// (which Q4_0 weights need for their −8 offset). Every path gives the same bytes: the maximum and the rounding
/// are exact, and the multiply by id is the same single float multiply.
/// </para>
/// </summary>
public static unsafe class QuantizeActivations
{
    /// <summary>Values per block.</summary>
    public const int BlockSize = 32;

    /// <summary>Quantizes <paramref name="n"/> (a multiple of 32) values at <paramref name="x"/>.</summary>
    public static void ToQ8_0(float* x, int n, sbyte* quants, float* scales, int* sums) =>
        ToQ8_0(x, n, quants, scales, sums, KernelIsa.Current);

    internal static void ToQ8_0(float* x, int n, sbyte* quants, float* scales, int* sums, VectorWidth width)
    {
        if (n % BlockSize != 0)
        {
            ThrowLength(n);
        }

        for (int b = 0; b < n / BlockSize; b++)
        {
            float* xb = x + (b * BlockSize);
            sbyte* qb = quants + (b * BlockSize);
            float amax = width switch
            {
                VectorWidth.Scalar => MaxAbsScalar(xb),
                VectorWidth.V128 => MaxAbs128(xb),
                _ => MaxAbs256(xb),
            };
            float d = amax / 127f;
            float id = d != 0 ? 1f / d : 0f;
            scales[b] = (float)(Half)d;
            sums[b] = width switch
            {
                VectorWidth.Scalar => RoundScalar(xb, id, qb),
                VectorWidth.V128 => Round128(xb, id, qb),
                _ => Round256(xb, id, qb),
            };
        }
    }

    // ---- Scalar reference ----

    private static float MaxAbsScalar(float* x)
    {
        float amax = 0;
        for (int j = 0; j < BlockSize; j++)
        {
            amax = MathF.Max(amax, MathF.Abs(x[j]));
        }

        return amax;
    }

    private static int RoundScalar(float* x, float id, sbyte* q)
    {
        int sum = 0;
        for (int j = 0; j < BlockSize; j++)
        {
            int v = (int)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
            q[j] = (sbyte)v;
            sum += v;
        }

        return sum;
    }

    // ---- Vector bodies (a block is 32 floats: eight 128-bit or four 256-bit vectors; 512-bit uses the latter) ----

    private static float MaxAbs128(float* x)
    {
        var m = Vector128.Abs(Vector128.Load(x));
        for (int j = 4; j < BlockSize; j += 4)
        {
            m = Vector128.Max(m, Vector128.Abs(Vector128.Load(x + j)));
        }

        return Reduce(m);
    }

    private static float MaxAbs256(float* x)
    {
        var m = Vector256.Max(
            Vector256.Max(Vector256.Abs(Vector256.Load(x)), Vector256.Abs(Vector256.Load(x + 8))),
            Vector256.Max(Vector256.Abs(Vector256.Load(x + 16)), Vector256.Abs(Vector256.Load(x + 24))));
        return Reduce(Vector128.Max(m.GetLower(), m.GetUpper()));
    }

    /// <summary>The largest lane (max is exact, so any order gives the scalar loop's value).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Reduce(Vector128<float> m) =>
        MathF.Max(MathF.Max(m.GetElement(0), m.GetElement(1)), MathF.Max(m.GetElement(2), m.GetElement(3)));

    private static int Round128(float* x, float id, sbyte* q)
    {
        var scale = Vector128.Create(id);
        var sum = Vector128<int>.Zero;
        for (int j = 0; j < BlockSize; j += 16)
        {
            var a = RoundAway(Vector128.Load(x + j) * scale);
            var b = RoundAway(Vector128.Load(x + j + 4) * scale);
            var c = RoundAway(Vector128.Load(x + j + 8) * scale);
            var d = RoundAway(Vector128.Load(x + j + 12) * scale);
            sum += (a + b) + (c + d);
            Vector128.Narrow(Vector128.Narrow(a, b), Vector128.Narrow(c, d)).Store(q + j);
        }

        return Vector128.Sum(sum);
    }

    private static int Round256(float* x, float id, sbyte* q)
    {
        var scale = Vector256.Create(id);
        var a = RoundAway(Vector256.Load(x) * scale);
        var b = RoundAway(Vector256.Load(x + 8) * scale);
        var c = RoundAway(Vector256.Load(x + 16) * scale);
        var d = RoundAway(Vector256.Load(x + 24) * scale);
        Vector256.Narrow(Vector256.Narrow(a, b), Vector256.Narrow(c, d)).Store(q);
        return Vector256.Sum((a + b) + (c + d));
    }

    /// <summary>
    /// Round half away from zero, as <c>MathF.Round(v, MidpointRounding.AwayFromZero)</c>: truncate, then step
    /// away from zero when the dropped fraction (exact: v − trunc(v)) is at least one half. Adding ±0.5 before
    /// truncating would be wrong for 0.49999997, whose sum rounds up to 1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> RoundAway(Vector128<float> v)
    {
        var t = Vector128.Truncate(v);
        var up = Vector128.GreaterThanOrEqual(Vector128.Abs(v - t), Vector128.Create(0.5f));
        return Vector128.ConvertToInt32(t + (up & Vector128.CopySign(Vector128<float>.One, v)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> RoundAway(Vector256<float> v)
    {
        var t = Vector256.Truncate(v);
        var up = Vector256.GreaterThanOrEqual(Vector256.Abs(v - t), Vector256.Create(0.5f));
        return Vector256.ConvertToInt32(t + (up & Vector256.CopySign(Vector256<float>.One, v)));
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowLength(int n) =>
        throw new ArgumentException($"Q8_0 activations need a multiple of {BlockSize} values, not {n}.", nameof(n));
}
