using System.Runtime.Intrinsics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Parameters;
using Minnow.Tensors;

namespace Minnow.Benchmarks;

/// <summary>
/// Memory baselines for <see cref="MatMulDecodeBenchmarks"/>, single-threaded, over the F32 matrix's size
/// (576 × 1536 × 4 bytes): Copy (Buffer.MemoryCopy; GB/s counts the bytes copied, the bus moves twice that) and
/// Read (a vector sum over the buffer: the pure streaming read a decode MatMul has to do). Hot reuses one buffer,
/// Cold cycles through 256 MB.
/// </summary>
[Config(typeof(Config))]
public unsafe class MemoryBandwidthBenchmarks
{
    private const long Bytes = (long)MatMulDecodeBenchmarks.Rows * MatMulDecodeBenchmarks.Cols * sizeof(float);
    private const long ColdBytes = 256L << 20;

    private NativeBuffer? _source, _destination;
    private int _copies;
    private int _next;

    [Params(Residence.Hot, Residence.Cold)]
    public Residence Residence { get; set; }

    public static long BytesPerOperation(ParameterInstances parameters) => Bytes;

    [GlobalSetup]
    public void Setup()
    {
        _copies = Residence == Residence.Hot ? 1 : (int)(ColdBytes / Bytes);
        _source = new NativeBuffer(Bytes * _copies);
        _destination = new NativeBuffer(Bytes * _copies);
        new Span<byte>(_source.Pointer, (int)Math.Min(int.MaxValue, _source.Length)).Fill(1);
        new Span<byte>(_destination.Pointer, (int)Math.Min(int.MaxValue, _destination.Length)).Fill(2);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _source?.Dispose();
        _destination?.Dispose();
    }

    private long NextOffset()
    {
        long offset = _next * Bytes;
        _next = _next + 1 == _copies ? 0 : _next + 1;
        return offset;
    }

    [Benchmark]
    public void Copy()
    {
        long offset = NextOffset();
        Buffer.MemoryCopy(_source!.Pointer + offset, _destination!.Pointer + offset, Bytes, Bytes);
    }

    [Benchmark]
    public float Read()
    {
        float* p = (float*)(_source!.Pointer + NextOffset());
        long n = Bytes / sizeof(float);
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (long i = 0; i < n; i += 32)
        {
            a0 += Vector256.Load(p + i);
            a1 += Vector256.Load(p + i + 8);
            a2 += Vector256.Load(p + i + 16);
            a3 += Vector256.Load(p + i + 24);
        }

        return Vector256.Sum((a0 + a1) + (a2 + a3));
    }

    private sealed class Config : ManualConfig
    {
        public Config() => AddColumn(new ThroughputColumn());
    }
}
