using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

/// <summary>The widest SIMD registers a kernel may use.</summary>
public enum VectorWidth
{
    /// <summary>Plain scalar loops: the reference every vector path is tested against.</summary>
    Scalar = 0,
    V128 = 128,
    V256 = 256,
    V512 = 512,
}

/// <summary>
/// Chooses the instruction-set path of the kernels. By default it is the widest vector size the JIT accelerates
/// (<see cref="Vector512.IsHardwareAccelerated"/>, then 256, then 128), so runtime switches such as
/// <c>DOTNET_EnableAVX512F=0</c> are honoured. <see cref="Max"/> lowers (or raises) it for the whole process and
/// <see cref="Force"/> for the calling thread only (tests use it to run every path on one machine). A width above
/// what the hardware accelerates still computes correctly through .NET's software fallback, only slowly.
/// Kernels that spread work over a <see cref="Tensors.WorkerPool"/> read the width once, on the calling thread.
/// <para>
/// Results depend on the width, not on the architecture: at the same width an Arm64 machine (AdvSimd, with or
/// without SDOT) and an x64 machine with FMA give the same bits (checked under qemu-aarch64: perplexity of the
/// default model in F32 and Q4_0 identical to all 16 digits with x64 at 128 bits). Between widths three things
/// differ, by design: the float kernels keep one accumulator of width/32 lanes and sum the lanes at the end
/// (<c>VectorNNN.Sum</c>), so the rounding of a long dot product depends on the width; the scalar path and x64
/// without AVX (no FMA) round a · b + c twice where vector paths with FMA round once
/// (<c>MultiplyAddEstimate</c>); and in Q8_0 / Q4_0 models those last-bit differences in the float activations can
/// move an activation's 8-bit code by one, which is why perplexities differ near the 5th significant digit between
/// Arm64 (128-bit) and an x64 machine at 256 or 512 bits. The integer block dot products themselves are exact on
/// every path. <c>DOTNET_PreferredVectorBitWidth=128</c> on an x64 machine with FMA gives Arm64's results.
/// </para>
/// </summary>
public static class KernelIsa
{
    [ThreadStatic]
    private static int t_forced; // 0: not forced; otherwise (int)width + 1

    private static volatile int s_max = (int)Hardware;

    /// <summary>The widest vector size the hardware (and the JIT's configuration) accelerates.</summary>
    public static VectorWidth Hardware =>
        Vector512.IsHardwareAccelerated ? VectorWidth.V512 :
        Vector256.IsHardwareAccelerated ? VectorWidth.V256 :
        Vector128.IsHardwareAccelerated ? VectorWidth.V128 : VectorWidth.Scalar;

    /// <summary>The process-wide widest path; defaults to <see cref="Hardware"/>.</summary>
    public static VectorWidth Max
    {
        get => (VectorWidth)s_max;
        set => s_max = (int)Validate(value);
    }

    /// <summary>The path kernels called on this thread take now: a forced width, or else <see cref="Max"/>.</summary>
    public static VectorWidth Current => t_forced != 0 ? (VectorWidth)(t_forced - 1) : (VectorWidth)s_max;

    /// <summary>Forces <paramref name="width"/> on the calling thread until the returned scope is disposed.</summary>
    public static Scope Force(VectorWidth width)
    {
        var scope = new Scope(t_forced);
        t_forced = (int)Validate(width) + 1;
        return scope;
    }

    /// <summary>A short description for diagnostics, e.g. "256-bit vectors (hardware 256-bit)".</summary>
    public static string Describe() =>
        $"{Name(Current)} (hardware {Name(Hardware)})";

    private static string Name(VectorWidth width) => width == VectorWidth.Scalar ? "scalar" : $"{(int)width}-bit vectors";

    private static VectorWidth Validate(VectorWidth width) => width switch
    {
        VectorWidth.Scalar or VectorWidth.V128 or VectorWidth.V256 or VectorWidth.V512 => width,
        _ => throw new ArgumentOutOfRangeException(nameof(width), width, "Not a vector width."),
    };

    /// <summary>Restores the previous thread-local choice when disposed.</summary>
    public readonly struct Scope : IDisposable
    {
        private readonly int _previous;

        internal Scope(int previous) => _previous = previous;

        public void Dispose() => t_forced = _previous;
    }
}
