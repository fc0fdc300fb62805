using System.Runtime.Intrinsics;

namespace Minnow.Kernels;

// The operator shapes of the element-wise kernels, after dotnet/runtime's TensorPrimitives: a small readonly
// struct (which may carry parameters such as a scale) with a scalar body, the reference, and one body per vector
// size. VectorDriver runs them over a buffer, picks the widest allowed body and handles the tail.

/// <summary>f(x) element by element.</summary>
internal interface IUnaryOperator
{
    float Invoke(float x);

    Vector128<float> Invoke(Vector128<float> x);

    Vector256<float> Invoke(Vector256<float> x);

    Vector512<float> Invoke(Vector512<float> x);
}

/// <summary>f(x, y) element by element.</summary>
internal interface IBinaryOperator
{
    float Invoke(float x, float y);

    Vector128<float> Invoke(Vector128<float> x, Vector128<float> y);

    Vector256<float> Invoke(Vector256<float> x, Vector256<float> y);

    Vector512<float> Invoke(Vector512<float> x, Vector512<float> y);
}

/// <summary>f(x, y, z) element by element.</summary>
internal interface ITernaryOperator
{
    float Invoke(float x, float y, float z);

    Vector128<float> Invoke(Vector128<float> x, Vector128<float> y, Vector128<float> z);

    Vector256<float> Invoke(Vector256<float> x, Vector256<float> y, Vector256<float> z);

    Vector512<float> Invoke(Vector512<float> x, Vector512<float> y, Vector512<float> z);
}

/// <summary>An associative combination (sum, max) with its identity and its reduction of one vector's lanes.</summary>
internal interface IAggregationOperator : IBinaryOperator
{
    float Identity { get; }

    float Reduce(Vector128<float> x);

    float Reduce(Vector256<float> x);

    float Reduce(Vector512<float> x);
}

/// <summary>x (the identity; used where a driver takes a transform).</summary>
internal readonly struct IdentityOperator : IUnaryOperator
{
    public float Invoke(float x) => x;

    public Vector128<float> Invoke(Vector128<float> x) => x;

    public Vector256<float> Invoke(Vector256<float> x) => x;

    public Vector512<float> Invoke(Vector512<float> x) => x;
}

/// <summary>x · scale.</summary>
internal readonly struct ScaleOperator(float scale) : IUnaryOperator
{
    private readonly float _scale = scale;

    public float Invoke(float x) => x * _scale;

    public Vector128<float> Invoke(Vector128<float> x) => x * Vector128.Create(_scale);

    public Vector256<float> Invoke(Vector256<float> x) => x * Vector256.Create(_scale);

    public Vector512<float> Invoke(Vector512<float> x) => x * Vector512.Create(_scale);
}

/// <summary>x − value.</summary>
internal readonly struct SubtractScalarOperator(float value) : IUnaryOperator
{
    private readonly float _value = value;

    public float Invoke(float x) => x - _value;

    public Vector128<float> Invoke(Vector128<float> x) => x - Vector128.Create(_value);

    public Vector256<float> Invoke(Vector256<float> x) => x - Vector256.Create(_value);

    public Vector512<float> Invoke(Vector512<float> x) => x - Vector512.Create(_value);
}

/// <summary>max(x, y) with <see cref="MathF.Max(float, float)"/>'s rules (NaN wins, +0 above −0).</summary>
internal readonly struct MaxOperator : IAggregationOperator
{
    public float Identity => float.NegativeInfinity;

    public float Invoke(float x, float y) => MathF.Max(x, y);

    public Vector128<float> Invoke(Vector128<float> x, Vector128<float> y) => Vector128.Max(x, y);

    public Vector256<float> Invoke(Vector256<float> x, Vector256<float> y) => Vector256.Max(x, y);

    public Vector512<float> Invoke(Vector512<float> x, Vector512<float> y) => Vector512.Max(x, y);

    public float Reduce(Vector128<float> x) =>
        MathF.Max(MathF.Max(x.GetElement(0), x.GetElement(1)), MathF.Max(x.GetElement(2), x.GetElement(3)));

    public float Reduce(Vector256<float> x) => Reduce(Vector128.Max(x.GetLower(), x.GetUpper()));

    public float Reduce(Vector512<float> x) => Reduce(Vector256.Max(x.GetLower(), x.GetUpper()));
}

/// <summary>x + y.</summary>
internal readonly struct SumOperator : IAggregationOperator
{
    public float Identity => 0f;

    public float Invoke(float x, float y) => x + y;

    public Vector128<float> Invoke(Vector128<float> x, Vector128<float> y) => x + y;

    public Vector256<float> Invoke(Vector256<float> x, Vector256<float> y) => x + y;

    public Vector512<float> Invoke(Vector512<float> x, Vector512<float> y) => x + y;

    public float Reduce(Vector128<float> x) => Vector128.Sum(x);

    public float Reduce(Vector256<float> x) => Vector256.Sum(x);

    public float Reduce(Vector512<float> x) => Vector512.Sum(x);
}
