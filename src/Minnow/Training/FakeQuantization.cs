using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// Fake quantization of weight matrices for quantization-aware training: Q(W) = dequantize(quantize_rtn(W)) in a
/// block format (Q8_0, Q4_0 or an INT4 group type), computed in place into buffers allocated once, with exactly the
/// arithmetic of <see cref="Dequantize.FromFloats"/> followed by <see cref="Dequantize.Row"/> (fp16 scales and
/// minimums included), so training sees the weights that round-to-nearest quantization will store. Matrices whose
/// rows are not a multiple of the format's block stay in float32, as <see cref="Quantization.ModelQuantizer"/> keeps them.
/// Optionally the inputs of the quantized matrices are fake-quantized too (<see cref="QuantizeInputs"/>), as the
/// integer kernels quantize activations at run time.
/// </summary>
public sealed unsafe class FakeQuantizer : IDisposable
{
    private struct Job
    {
        public float* Source;
        public float* Target;
        public int Columns;
        public DType Type;
    }

    private readonly ParameterStore _store;
    private readonly Dictionary<Parameter, (NativeBuffer Buffer, DType Type)> _buffers = [];

    /// <param name="store">The parameters the matrices belong to.</param>
    /// <param name="matrices">The weight matrices ([rows, columns]) to fake-quantize, each in its own format (Q8_0, Q4_0 or an INT4 group type).</param>
    /// <param name="quantizeInputs">Whether <see cref="QuantizeInputs"/> also fake-quantizes the matrices' inputs.</param>
    public FakeQuantizer(ParameterStore store, IEnumerable<(Parameter Matrix, DType Type)> matrices, bool quantizeInputs = false)
    {
        _store = store;
        QuantizesInputs = quantizeInputs;
        foreach (var (p, type) in matrices)
        {
            if (type is not (DType.Q8_0 or DType.Q4_0) && !type.IsIntGroup())
            {
                throw new MinnowException($"fake quantization supports q8_0, q4_0 and int4 / int3 groups, not {type.Name()}.");
            }

            if (p.Shape.Length == 2 && p.Shape[1] % type.BlockSize() == 0 && !_buffers.ContainsKey(p))
            {
                _buffers[p] = (NativeBuffer.Floats(p.Count), type);
            }
        }
    }

    /// <summary>The matrices that are fake-quantized.</summary>
    public IEnumerable<Parameter> Matrices => _buffers.Keys;

    /// <summary>Whether the inputs of the fake-quantized matrices are fake-quantized too (8 bits per block of 32).</summary>
    public bool QuantizesInputs { get; }

    /// <summary>The format a matrix is fake-quantized in, or null when it stays in float32.</summary>
    public DType? TypeOf(Parameter p) => _buffers.TryGetValue(p, out var b) ? b.Type : null;

    /// <summary>Q(W) for a fake-quantized matrix (as of the last <see cref="Refresh"/>), else the float weights.</summary>
    public float* Weights(Parameter p) => _buffers.TryGetValue(p, out var b) ? b.Buffer.FloatPointer : _store.Value(p);

    /// <summary>Recomputes Q(W) from the current float weights of every matrix.</summary>
    public void Refresh(WorkerPool pool)
    {
        foreach (var (p, (buffer, type)) in _buffers)
        {
            var job = new Job { Source = _store.Value(p), Target = buffer.FloatPointer, Columns = checked((int)p.Shape[1]), Type = type };
            pool.For(checked((int)p.Shape[0]), 16, &Run, &job);
        }
    }

    /// <summary>
    /// When inputs are fake-quantized and <paramref name="matrix"/> is, replaces its input <paramref name="x"/>
    /// ([rows, columns]) in place by dequantize(quantize(x)) in Q8_0 blocks, the arithmetic the integer kernels use
    /// on activations (<see cref="Kernels.QuantizeActivations"/>). The backward pass treats it as the identity (straight
    /// through), while the weight gradient sees the quantized input that the forward pass multiplied.
    /// </summary>
    public void QuantizeInputs(Parameter matrix, float* x, int rows, int columns, WorkerPool pool)
    {
        if (!QuantizesInputs || !_buffers.ContainsKey(matrix) || columns % Kernels.QuantizeActivations.BlockSize != 0)
        {
            return;
        }

        var job = new Job { Source = x, Target = x, Columns = columns, Type = DType.Q8_0 };
        pool.For(rows, 16, &Run, &job);
    }

    private static void Run(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        for (int r = start; r < end; r++)
        {
            long offset = (long)r * job.Columns;
            Row(job.Type, new ReadOnlySpan<float>(job.Source + offset, job.Columns), new Span<float>(job.Target + offset, job.Columns));
        }
    }

    /// <summary>
    /// <paramref name="target"/> = dequantize(quantize_rtn(<paramref name="source"/>)), bit-identical to
    /// <see cref="Dequantize.Row"/> of <see cref="Dequantize.FromFloats"/> (the two spans may be the same).
    /// </summary>
    public static void Row(DType type, ReadOnlySpan<float> source, Span<float> target)
    {
        int group = type.BlockSize();
        if (source.Length % group != 0 || target.Length != source.Length)
        {
            throw new ArgumentException($"a row of {source.Length} values is not a whole number of {group}-value blocks.");
        }

        for (int g = 0; g < source.Length / group; g++)
        {
            var block = source.Slice(g * group, group);
            var output = target.Slice(g * group, group);
            switch (type)
            {
                case DType.Q8_0:
                    {
                        float amax = 0;
                        foreach (float v in block)
                        {
                            amax = MathF.Max(amax, MathF.Abs(v));
                        }

                        float d = amax / 127f;
                        float id = d != 0 ? 1f / d : 0f;
                        float dh = (float)(Half)d;
                        for (int j = 0; j < 32; j++)
                        {
                            output[j] = (sbyte)MathF.Round(block[j] * id, MidpointRounding.AwayFromZero) * dh;
                        }

                        break;
                    }

                case DType.Q4_0:
                    {
                        float amax = 0, max = 0;
                        foreach (float v in block)
                        {
                            if (MathF.Abs(v) > amax)
                            {
                                amax = MathF.Abs(v);
                                max = v;
                            }
                        }

                        float d = max / -8f;
                        float id = d != 0 ? 1f / d : 0f;
                        float dh = (float)(Half)d;
                        for (int j = 0; j < 32; j++)
                        {
                            int q = Math.Min(15, (int)((block[j] * id) + 8.5f));
                            output[j] = (q - 8) * dh;
                        }

                        break;
                    }

                default:
                    {
                        // INT4 and INT3 groups: value = q · d + m, q in [0, 15] or [0, 7] between the group's minimum and maximum.
                        int top = type.MaxGroupCode();
                        float min = float.MaxValue, max = float.MinValue;
                        foreach (float v in block)
                        {
                            min = MathF.Min(min, v);
                            max = MathF.Max(max, v);
                        }

                        float d = (max - min) / top;
                        float id = d != 0 ? 1f / d : 0f;
                        float dh = (float)(Half)d, mh = (float)(Half)min;
                        for (int j = 0; j < group; j++)
                        {
                            int q = Math.Min(top, (int)(((block[j] - min) * id) + 0.5f));
                            output[j] = (q * dh) + mh;
                        }

                        break;
                    }
            }
        }
    }

    /// <summary>The fake-quantized copy of a whole matrix (for tests and tools).</summary>
    public static float[] Apply(DType type, ReadOnlySpan<float> values, int columns)
    {
        var result = new float[values.Length];
        for (int r = 0; r < values.Length / columns; r++)
        {
            Row(type, values.Slice(r * columns, columns), result.AsSpan(r * columns, columns));
        }

        return result;
    }

    public void Dispose()
    {
        foreach (var (buffer, _) in _buffers.Values)
        {
            buffer.Dispose();
        }

        _buffers.Clear();
    }
}
