using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Minnow.Kernels;

/// <summary>
/// The vector operations the row kernels (matrix products, attention) need, generic over the vector type
/// <c>T</c> ∈ {Vector128, Vector256, Vector512}&lt;float&gt;, so each kernel is written once. The JIT compiles one copy
/// per vector type and folds the <c>typeof</c> tests away, leaving the single matching body.
/// </summary>
internal static unsafe class Simd
{
    /// <summary>Floats per vector.</summary>
    public static int Count<T>()
        where T : struct => Unsafe.SizeOf<T>() / sizeof(float);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Load<T>(float* p)
        where T : struct
    {
        if (typeof(T) == typeof(Vector128<float>))
        {
            return As<Vector128<float>, T>(Vector128.Load(p));
        }

        if (typeof(T) == typeof(Vector256<float>))
        {
            return As<Vector256<float>, T>(Vector256.Load(p));
        }

        if (typeof(T) == typeof(Vector512<float>))
        {
            return As<Vector512<float>, T>(Vector512.Load(p));
        }

        return Unsupported<T>();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store<T>(T v, float* p)
        where T : struct
    {
        if (typeof(T) == typeof(Vector128<float>))
        {
            As<T, Vector128<float>>(v).Store(p);
        }
        else if (typeof(T) == typeof(Vector256<float>))
        {
            As<T, Vector256<float>>(v).Store(p);
        }
        else if (typeof(T) == typeof(Vector512<float>))
        {
            As<T, Vector512<float>>(v).Store(p);
        }
        else
        {
            Unsupported<T>();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Broadcast<T>(float value)
        where T : struct
    {
        if (typeof(T) == typeof(Vector128<float>))
        {
            return As<Vector128<float>, T>(Vector128.Create(value));
        }

        if (typeof(T) == typeof(Vector256<float>))
        {
            return As<Vector256<float>, T>(Vector256.Create(value));
        }

        if (typeof(T) == typeof(Vector512<float>))
        {
            return As<Vector512<float>, T>(Vector512.Create(value));
        }

        return Unsupported<T>();
    }

    /// <summary>
    /// a · b + c, fused (one rounding) where the hardware has FMA, as on every AVX2 and Arm64 machine; elsewhere
    /// two roundings (never the slow software emulation of a fused operation).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T MultiplyAdd<T>(T a, T b, T c)
        where T : struct
    {
        if (typeof(T) == typeof(Vector128<float>))
        {
            return As<Vector128<float>, T>(Vector128.MultiplyAddEstimate(As<T, Vector128<float>>(a), As<T, Vector128<float>>(b), As<T, Vector128<float>>(c)));
        }

        if (typeof(T) == typeof(Vector256<float>))
        {
            return As<Vector256<float>, T>(Vector256.MultiplyAddEstimate(As<T, Vector256<float>>(a), As<T, Vector256<float>>(b), As<T, Vector256<float>>(c)));
        }

        if (typeof(T) == typeof(Vector512<float>))
        {
            return As<Vector512<float>, T>(Vector512.MultiplyAddEstimate(As<T, Vector512<float>>(a), As<T, Vector512<float>>(b), As<T, Vector512<float>>(c)));
        }

        return Unsupported<T>();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Multiply<T>(T a, T b)
        where T : struct
    {
        if (typeof(T) == typeof(Vector128<float>))
        {
            return As<Vector128<float>, T>(As<T, Vector128<float>>(a) * As<T, Vector128<float>>(b));
        }

        if (typeof(T) == typeof(Vector256<float>))
        {
            return As<Vector256<float>, T>(As<T, Vector256<float>>(a) * As<T, Vector256<float>>(b));
        }

        if (typeof(T) == typeof(Vector512<float>))
        {
            return As<Vector512<float>, T>(As<T, Vector512<float>>(a) * As<T, Vector512<float>>(b));
        }

        return Unsupported<T>();
    }

    /// <summary>The sum of the lanes (in the fixed order of <c>VectorNNN.Sum</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum<T>(T v)
        where T : struct
    {
        if (typeof(T) == typeof(Vector128<float>))
        {
            return Vector128.Sum(As<T, Vector128<float>>(v));
        }

        if (typeof(T) == typeof(Vector256<float>))
        {
            return Vector256.Sum(As<T, Vector256<float>>(v));
        }

        if (typeof(T) == typeof(Vector512<float>))
        {
            return Vector512.Sum(As<T, Vector512<float>>(v));
        }

        Unsupported<T>();
        return 0;
    }

    // ---- Weight loaders: one vector of float values from packed storage ----

    /// <summary>Count&lt;T&gt; IEEE halves at p, exactly converted.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T LoadHalves<T>(ushort* p)
        where T : struct => LoadHalves<T>(p, finite: false);

    /// <summary><see cref="LoadHalves{T}(ushort*)"/> for halves known to be finite (<see cref="HalfConversion.ToSingleFinite(Vector256{int})"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T LoadFiniteHalves<T>(ushort* p)
        where T : struct => LoadHalves<T>(p, finite: true);

    /// <summary>The halves sign-extended to 32-bit lanes (<c>vpmovsxwd</c>), then converted (a constant <paramref name="finite"/> folds away).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T LoadHalves<T>(ushort* p, bool finite)
        where T : struct
    {
        short* s = (short*)p;
        if (typeof(T) == typeof(Vector128<float>))
        {
            Vector128<int> v = Sse41.IsSupported
                ? Sse41.ConvertToVector128Int32(s)
                : Vector128.WidenLower(Vector128.CreateScalar(Unsafe.ReadUnaligned<long>(s)).AsInt16());
            return As<Vector128<float>, T>(finite ? HalfConversion.ToSingleFinite(v) : HalfConversion.ToSingle(v));
        }

        if (typeof(T) == typeof(Vector256<float>))
        {
            Vector256<int> v = Avx2.IsSupported
                ? Avx2.ConvertToVector256Int32(s)
                : Vector256.WidenLower(Vector128.Load(s).ToVector256Unsafe());
            return As<Vector256<float>, T>(finite ? HalfConversion.ToSingleFinite(v) : HalfConversion.ToSingle(v));
        }

        if (typeof(T) == typeof(Vector512<float>))
        {
            var halves = Vector256.Load(s);
            Vector512<int> v = Avx512F.IsSupported
                ? Avx512F.ConvertToVector512Int32(halves)
                : Vector512.WidenLower(halves.ToVector512Unsafe());
            return As<Vector512<float>, T>(finite ? HalfConversion.ToSingleFinite(v) : HalfConversion.ToSingle(v));
        }

        return Unsupported<T>();
    }

    /// <summary>Count&lt;T&gt; bfloat16 values at p (the top halves of floats).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T LoadBFloat16<T>(ushort* p)
        where T : struct
    {
        if (typeof(T) == typeof(Vector128<float>))
        {
            return As<Vector128<float>, T>((Widen4(p) << 16).AsSingle());
        }

        if (typeof(T) == typeof(Vector256<float>))
        {
            return As<Vector256<float>, T>((Widen8(p) << 16).AsSingle());
        }

        if (typeof(T) == typeof(Vector512<float>))
        {
            return As<Vector512<float>, T>((Widen16(p) << 16).AsSingle());
        }

        return Unsupported<T>();
    }

    /// <summary>Count&lt;T&gt; signed bytes at p, as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T LoadSBytes<T>(sbyte* p)
        where T : struct
    {
        if (typeof(T) == typeof(Vector128<float>))
        {
            Vector128<int> v = Sse41.IsSupported
                ? Sse41.ConvertToVector128Int32(p)
                : Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalar(Unsafe.ReadUnaligned<int>(p)).AsSByte()));
            return As<Vector128<float>, T>(Vector128.ConvertToSingle(v));
        }

        if (typeof(T) == typeof(Vector256<float>))
        {
            Vector256<int> v = Avx2.IsSupported
                ? Avx2.ConvertToVector256Int32(p)
                : Vector256.WidenLower(Vector128.WidenLower(Vector128.CreateScalar(Unsafe.ReadUnaligned<long>(p)).AsSByte()).ToVector256Unsafe());
            return As<Vector256<float>, T>(Vector256.ConvertToSingle(v));
        }

        if (typeof(T) == typeof(Vector512<float>))
        {
            var bytes = Vector128.Load(p);
            Vector512<int> v = Avx512F.IsSupported
                ? Avx512F.ConvertToVector512Int32(bytes)
                : Vector512.WidenLower(Vector256.WidenLower(bytes.ToVector256Unsafe()).ToVector512Unsafe());
            return As<Vector512<float>, T>(Vector512.ConvertToSingle(v));
        }

        return Unsupported<T>();
    }

    /// <summary>
    /// Count&lt;T&gt; GGUF Q4_0 nibbles from the bytes at p, as floats 0..15 before the −8 offset: the low nibbles
    /// (values j &lt; 16 of a block) or, if <paramref name="upper"/>, the high ones (values j + 16).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T LoadNibbles<T>(byte* p, bool upper)
        where T : struct
    {
        if (typeof(T) == typeof(Vector128<float>))
        {
            Vector128<int> v = Sse41.IsSupported
                ? Sse41.ConvertToVector128Int32(p)
                : Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalar(Unsafe.ReadUnaligned<uint>(p)).AsByte())).AsInt32();
            return As<Vector128<float>, T>(Vector128.ConvertToSingle(upper ? v >>> 4 : v & Vector128.Create(15)));
        }

        if (typeof(T) == typeof(Vector256<float>))
        {
            Vector256<int> v = Avx2.IsSupported
                ? Avx2.ConvertToVector256Int32(p)
                : Vector256.WidenLower(Vector128.WidenLower(Vector128.CreateScalar(Unsafe.ReadUnaligned<ulong>(p)).AsByte()).ToVector256Unsafe()).AsInt32();
            return As<Vector256<float>, T>(Vector256.ConvertToSingle(upper ? v >>> 4 : v & Vector256.Create(15)));
        }

        if (typeof(T) == typeof(Vector512<float>))
        {
            var bytes = Vector128.Load(p);
            Vector512<int> v = Avx512F.IsSupported
                ? Avx512F.ConvertToVector512Int32(bytes)
                : Vector512.WidenLower(Vector256.WidenLower(bytes.ToVector256Unsafe()).ToVector512Unsafe()).AsInt32();
            return As<Vector512<float>, T>(Vector512.ConvertToSingle(upper ? v >>> 4 : v & Vector512.Create(15)));
        }

        return Unsupported<T>();
    }

    private static Vector128<uint> Widen4(ushort* p) =>
        Sse41.IsSupported
            ? Sse41.ConvertToVector128Int32(p).AsUInt32()
            : Vector128.WidenLower(Vector128.CreateScalar(Unsafe.ReadUnaligned<ulong>(p)).AsUInt16());

    private static Vector256<uint> Widen8(ushort* p) =>
        Avx2.IsSupported
            ? Avx2.ConvertToVector256Int32(p).AsUInt32()
            : Vector256.WidenLower(Vector128.Load(p).ToVector256Unsafe());

    private static Vector512<uint> Widen16(ushort* p)
    {
        var halves = Vector256.Load(p);
        return Avx512F.IsSupported
            ? Avx512F.ConvertToVector512UInt32(halves)
            : Vector512.WidenLower(halves.ToVector512Unsafe());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TTo As<TFrom, TTo>(TFrom value)
        where TFrom : struct
        where TTo : struct => Unsafe.BitCast<TFrom, TTo>(value);

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static T Unsupported<T>() => throw new NotSupportedException($"{typeof(T)} is not a float vector type.");
}
