using BenchmarkDotNet.Attributes;
using Minnow.Kernels;
using Minnow.Tensors;

namespace Minnow.Benchmarks;

/// <summary>
/// Q8_0 and Q4_0 weights through a Qwen2.5-0.5B MLP down projection, W [896 × 4864], decode (1 token) and prefill
/// (64 tokens): the integer path (activations quantized to Q8_0, as llama.cpp) against the float path that unpacks
/// the weights (<c>MINNOW_Q8_ACTIVATIONS=0</c>).
/// </summary>
public unsafe class QuantizedMatMulBenchmarks
{
    public const int Rows = 896;
    public const int Cols = 4864;

    private Tensor? _weight;
    private NativeBuffer? _storage, _x, _y;
    private WorkerPool? _pool;

    [Params(DType.Q8_0, DType.Q4_0)]
    public DType Type { get; set; }

    [Params(1, 64)]
    public int Tokens { get; set; }

    [Params(false, true)]
    public bool Int8 { get; set; }

    [ParamsSource(nameof(ThreadCounts))]
    public int Threads { get; set; }

    public static IEnumerable<int> ThreadCounts => new[] { 1, Environment.ProcessorCount }.Distinct();

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(42);
        var values = new float[Rows * Cols];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)((random.NextDouble() * 2) - 1) * 0.05f;
        }

        byte[] bytes = Dequantize.FromFloats(Type, values);
        _storage = new NativeBuffer(bytes.Length);
        bytes.CopyTo(new Span<byte>(_storage.Pointer, bytes.Length));
        _weight = new Tensor("w", Type, [Rows, Cols], _storage.Pointer, _storage);
        _x = NativeBuffer.Floats((long)Cols * Tokens);
        for (int i = 0; i < Cols * Tokens; i++)
        {
            _x.FloatPointer[i] = (float)((random.NextDouble() * 2) - 1);
        }

        _y = NativeBuffer.Floats((long)Rows * Tokens);
        _pool = new WorkerPool(Threads);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pool?.Dispose();
        _storage?.Dispose();
        _x?.Dispose();
        _y?.Dispose();
    }

    [Benchmark]
    public void Compute() =>
        MatMul.Compute(_weight!, _x!.FloatPointer, Tokens, _y!.FloatPointer, null, _pool, KernelIsa.Current, Int8);
}
