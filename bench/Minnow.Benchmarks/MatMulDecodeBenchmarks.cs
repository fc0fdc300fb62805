using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Parameters;
using Minnow.Kernels;
using Minnow.Tensors;

namespace Minnow.Benchmarks;

/// <summary>
/// Where the weights live: Hot = one matrix, resident in cache after the first call; Cold = enough copies
/// (≥ 256 MB, far beyond the last-level cache) cycled so that every call streams its weights from DRAM, as
/// decoding a whole model does.
/// </summary>
public enum Residence
{
    Hot,
    Cold,
}

/// <summary>
/// Decode (one token) through a SmolLM2-135M MLP down projection, W [576 × 1536], for every weight type.
/// The GB/s column counts the weight bytes streamed per call.
/// </summary>
[Config(typeof(Config))]
public unsafe class MatMulDecodeBenchmarks
{
    public const int Rows = 576;
    public const int Cols = 1536;
    private const long ColdBytes = 256L << 20;

    private Tensor[] _weights = [];
    private NativeBuffer? _storage;
    private NativeBuffer? _x, _y;
    private WorkerPool? _pool;
    private int _next;

    [Params(DType.F32, DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0)]
    public DType Type { get; set; }

    [Params(Residence.Hot, Residence.Cold)]
    public Residence Residence { get; set; }

    [ParamsSource(nameof(ThreadCounts))]
    public int Threads { get; set; }

    public static IEnumerable<int> ThreadCounts => new[] { 1, Environment.ProcessorCount }.Distinct();

    public static long BytesPerOperation(ParameterInstances parameters) =>
        ((DType)parameters["Type"]).ByteCount((long)Rows * Cols);

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
        int copies = Residence == Residence.Hot ? 1 : (int)((ColdBytes + bytes.Length - 1) / bytes.Length);
        long stride = (bytes.Length + 4095) & ~4095L;
        _storage = new NativeBuffer(stride * copies);
        _weights = new Tensor[copies];
        for (int c = 0; c < copies; c++)
        {
            byte* data = _storage.Pointer + (c * stride);
            bytes.CopyTo(new Span<byte>(data, bytes.Length));
            _weights[c] = new Tensor("w", Type, [Rows, Cols], data, _storage);
        }

        _x = NativeBuffer.Floats(Cols);
        for (int i = 0; i < Cols; i++)
        {
            _x.FloatPointer[i] = (float)((random.NextDouble() * 2) - 1);
        }

        _y = NativeBuffer.Floats(Rows);
        _pool = new WorkerPool(Threads);
        Console.WriteLine($"// Kernel path: {KernelIsa.Describe()}; {copies} cop{(copies == 1 ? "y" : "ies")} of the weights");
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
    public void Decode()
    {
        var weight = _weights[_next];
        _next = _next + 1 == _weights.Length ? 0 : _next + 1;
        MatMul.Compute(weight, _x!.FloatPointer, 1, _y!.FloatPointer, null, _pool);
    }

    private sealed class Config : ManualConfig
    {
        public Config() => AddColumn(new ThroughputColumn());
    }
}
