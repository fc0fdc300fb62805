using System.Buffers.Binary;
using System.Text.Json;
using Minnow.Formats.Safetensors;
using Minnow.Tensors;

namespace Minnow.Benchmarking;

/// <summary>
/// Writes a randomly initialised checkpoint of a <see cref="ModelShape"/> in Hugging Face layout: config.json and
/// model.safetensors (F32, F16 or BF16), each written atomically (the weights first, so a folder with a config.json
/// always has complete weights). Weights are N(0, 0.02), norm scales 1, biases 0. The values depend only on the
/// seed, not on the thread count: each block of values has its own generator. The file is streamed, so memory
/// stays small whatever the model's size.
/// </summary>
public static class SyntheticCheckpoint
{
    public const float WeightStd = 0.02f;

    public const string ConfigFile = "config.json";

    public const string WeightsFile = "model.safetensors";

    private const int BlockElements = 1 << 18;
    private const int BlocksPerWindow = 32;

    public static readonly IReadOnlyList<DType> SupportedTypes = [DType.F32, DType.F16, DType.BF16];

    /// <summary>Writes <paramref name="folder"/>/config.json and model.safetensors; returns the weights file's size.</summary>
    public static long Write(ModelShape shape, string folder, ulong seed = 0, DType dtype = DType.F32,
        IProgress<(long Done, long Total)>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (!SupportedTypes.Contains(dtype))
        {
            throw new MinnowException($"synthetic checkpoints are stored as f32, f16 or bf16, not {dtype.Name().ToLowerInvariant()}.");
        }

        if (File.Exists(folder))
        {
            throw new MinnowException($"{folder}: is a file; --out must be a folder.");
        }

        Directory.CreateDirectory(folder);
        var tensors = shape.Tensors();
        int size = dtype.BlockBytes();
        long total = tensors.Sum(t => t.Elements) * size;
        byte[] header = Header(tensors, dtype, shape);
        string weights = Path.Combine(folder, WeightsFile);
        long done = 0;
        AtomicFile.Write(weights, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            var window = new byte[(long)BlockElements * BlocksPerWindow * size];
            for (int t = 0; t < tensors.Count; t++)
            {
                var tensor = tensors[t];
                long blocks = (tensor.Elements + BlockElements - 1) / BlockElements;
                for (long first = 0; first < blocks; first += BlocksPerWindow)
                {
                    cancellation.ThrowIfCancellationRequested();
                    int count = (int)Math.Min(BlocksPerWindow, blocks - first);
                    long start = first * BlockElements;
                    long elements = Math.Min((long)count * BlockElements, tensor.Elements - start);
                    int tensorIndex = t;
                    Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, b =>
                    {
                        long blockStart = (long)b * BlockElements;
                        int n = (int)Math.Min(BlockElements, elements - blockStart);
                        FillBlock(tensor.Init, seed, tensorIndex, first + b, dtype, window.AsSpan((int)(blockStart * size), n * size));
                    });
                    stream.Write(window, 0, (int)(elements * size));
                    done += elements * size;
                    progress?.Report((done, total));
                }
            }
        });

        AtomicFile.WriteAllText(Path.Combine(folder, ConfigFile), shape.ToConfigJson(TorchDtype(dtype)));
        return 8 + header.Length + total;
    }

    private static string TorchDtype(DType dtype) => dtype switch
    {
        DType.F16 => "float16",
        DType.BF16 => "bfloat16",
        _ => "float32",
    };

    private static byte[] Header(IReadOnlyList<ShapeTensor> tensors, DType dtype, ModelShape shape)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteStartObject("__metadata__");
            json.WriteString("format", "pt");
            json.WriteString("minnow_synthetic", shape.Name);
            json.WriteEndObject();
            long offset = 0;
            foreach (var t in tensors)
            {
                long bytes = t.Elements * dtype.BlockBytes();
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", dtype.Name());
                json.WriteStartArray("shape");
                foreach (long d in t.Shape)
                {
                    json.WriteNumberValue(d);
                }

                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }

            json.WriteEndObject();
        }

        while (buffer.Length % 8 != 0)
        {
            buffer.WriteByte((byte)' ');
        }

        return buffer.ToArray();
    }

    private static void FillBlock(TensorInit init, ulong seed, int tensor, long block, DType dtype, Span<byte> output)
    {
        int size = dtype.BlockBytes();
        int n = output.Length / size;
        if (init != TensorInit.Normal)
        {
            float constant = init == TensorInit.Ones ? 1f : 0f;
            for (int i = 0; i < n; i++)
            {
                Store(constant, dtype, output.Slice(i * size, size));
            }

            return;
        }

        var rng = new SplitMix(seed ^ ((ulong)(uint)tensor * 0x9E3779B97F4A7C15UL) ^ ((ulong)block * 0xD1B54A32D192ED03UL));
        for (int i = 0; i < n; i += 2)
        {
            // Box–Muller: two independent normals from two uniforms in (0, 1].
            double u1 = rng.NextDouble(), u2 = rng.NextDouble();
            double r = Math.Sqrt(-2 * Math.Log(u1)) * WeightStd;
            var (sin, cos) = Math.SinCos(2 * Math.PI * u2);
            Store((float)(r * cos), dtype, output.Slice(i * size, size));
            if (i + 1 < n)
            {
                Store((float)(r * sin), dtype, output.Slice((i + 1) * size, size));
            }
        }
    }

    private static void Store(float value, DType dtype, Span<byte> destination)
    {
        switch (dtype)
        {
            case DType.F16:
                BinaryPrimitives.WriteHalfLittleEndian(destination, (Half)value);
                break;
            case DType.BF16:
                BinaryPrimitives.WriteUInt16LittleEndian(destination, BFloat16.FromSingle(value));
                break;
            default:
                BinaryPrimitives.WriteSingleLittleEndian(destination, value);
                break;
        }
    }

    /// <summary>SplitMix64: a small, fast generator; plenty for weights nobody trains.</summary>
    private struct SplitMix(ulong state)
    {
        private ulong _state = state;

        public ulong Next()
        {
            ulong z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        /// <summary>Uniform in (0, 1].</summary>
        public double NextDouble() => ((Next() >> 11) + 1) * (1.0 / (1UL << 53));
    }
}
