using Minnow.Formats.Safetensors;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// Trainable LoRA adapters for a <see cref="LlamaTrainingModel"/>: for each targeted linear layer W [out, in] of
/// every block, A [r, in] (Kaiming-uniform, as PEFT) and B [out, r] (zeros), so the layer computes
/// y = W·x + (alpha/r)·B·(A·x). The matrices live in their own <see cref="ParameterStore"/> under PEFT's tensor
/// names, so AdamW and clipping run over them alone; attached to a model (<see cref="LlamaTrainingModel.AttachLora"/>)
/// they are the only tensors that receive gradients.
/// </summary>
public sealed unsafe class LoraLayers : IDisposable
{
    private sealed class Slot
    {
        public required Parameter A, B;
        public required int In, Out;
        public float* Scaled; // scale·(x·Aᵀ) [rows, r] of the last forward pass, kept for backward
    }

    private readonly Slot?[,] _slots;
    private readonly List<NativeBuffer> _buffers = [];
    private readonly WorkerPool _pool;
    private float* _dScaled;
    private int _capacityRows;

    public LoraLayers(ModelConfig model, LoraConfig config, WorkerPool? pool = null)
    {
        if (config.Rank <= 0)
        {
            throw new MinnowException($"LoRA rank {config.Rank} must be positive.");
        }

        if (config.Targets.Count == 0)
        {
            throw new MinnowException($"no LoRA target modules (choose from {LoraTargets.AllNames}).");
        }

        Model = model;
        Config = config;
        Scale = config.Scale;
        _pool = pool ?? WorkerPool.Shared;
        var specs = new List<(string, long[], bool)>();
        for (int l = 0; l < model.Layers; l++)
        {
            foreach (var t in config.Targets)
            {
                var (outDim, inDim) = LoraTargets.Shape(model, l, t);
                specs.Add((LoraTargets.PeftName(l, t, a: true), [config.Rank, inDim], true));
                specs.Add((LoraTargets.PeftName(l, t, a: false), [outDim, config.Rank], true));
            }
        }

        Parameters = new ParameterStore(specs);
        _slots = new Slot?[model.Layers, LoraTargets.All.Count];
        for (int l = 0; l < model.Layers; l++)
        {
            foreach (var t in config.Targets)
            {
                var (outDim, inDim) = LoraTargets.Shape(model, l, t);
                _slots[l, (int)t] = new Slot
                {
                    A = Parameters[LoraTargets.PeftName(l, t, a: true)],
                    B = Parameters[LoraTargets.PeftName(l, t, a: false)],
                    In = inDim,
                    Out = outDim,
                };
            }
        }
    }

    public ModelConfig Model { get; }

    public LoraConfig Config { get; }

    /// <summary>alpha/r: the factor on B·A.</summary>
    public float Scale { get; }

    /// <summary>Every A and B, named as PEFT saves them.</summary>
    public ParameterStore Parameters { get; }

    /// <summary>
    /// PEFT's initialisation: A ~ U(−1/√in, 1/√in) (kaiming_uniform_ with a = √5), B = 0, so the adapted model
    /// starts equal to the base. Same seed, same values, on any machine.
    /// </summary>
    public void Initialize(long seed)
    {
        var rng = SplitMix64.For(seed, 0x10BA);
        foreach (var p in Parameters.All)
        {
            var values = Parameters.ValueSpan(p);
            if (p.Name.Contains(".lora_B.", StringComparison.Ordinal))
            {
                values.Clear();
                continue;
            }

            double bound = 1.0 / Math.Sqrt(p.Shape[1]);
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = (float)(((2 * rng.NextDouble()) - 1) * bound);
            }
        }
    }

    /// <summary>Whether <paramref name="target"/> of <paramref name="layer"/> is adapted.</summary>
    public bool Has(int layer, LoraTarget target) => _slots[layer, (int)target] != null;

    /// <summary>Allocates the kept activations for up to <paramref name="rows"/> tokens (once; reused after).</summary>
    public void EnsureCapacity(int rows)
    {
        if (rows <= _capacityRows)
        {
            return;
        }

        foreach (var b in _buffers)
        {
            b.Dispose();
        }

        _buffers.Clear();
        int r = Config.Rank;
        foreach (var slot in _slots)
        {
            if (slot != null)
            {
                slot.Scaled = Alloc((long)rows * r);
            }
        }

        _dScaled = Alloc((long)rows * r);
        _capacityRows = rows;
    }

    private float* Alloc(long floats)
    {
        var b = NativeBuffer.Floats(Math.Max(floats, 1));
        _buffers.Add(b);
        return b.FloatPointer;
    }

    /// <summary>y [rows, out] += scale·(x·Aᵀ)·Bᵀ for x [rows, in]; keeps scale·(x·Aᵀ) for <see cref="Backward"/>.</summary>
    public void Forward(int layer, LoraTarget target, float* x, int rows, float* y)
    {
        var s = _slots[layer, (int)target];
        if (s == null)
        {
            return;
        }

        EnsureCapacity(rows);
        int r = Config.Rank;
        Gemm.Multiply(rows, r, s.In, x, s.In, false, Parameters.Value(s.A), s.In, true, s.Scaled, r, false, _pool);
        VectorMath.Scale(s.Scaled, Scale, rows * r);
        Gemm.Multiply(rows, s.Out, r, s.Scaled, r, false, Parameters.Value(s.B), r, true, y, s.Out, true, _pool);
    }

    /// <summary>
    /// Given dy [rows, out] and the layer's input x: dB += dyᵀ·S (S = scale·x·Aᵀ), dA += scale·(dy·B)ᵀ·x, and
    /// dx += scale·(dy·B)·A (added to the gradient the base layer wrote; skipped when dx is null).
    /// </summary>
    public void Backward(int layer, LoraTarget target, float* x, float* dy, int rows, float* dx)
    {
        var s = _slots[layer, (int)target];
        if (s == null)
        {
            return;
        }

        int r = Config.Rank;
        float* b = Parameters.Value(s.B), a = Parameters.Value(s.A);
        Gemm.Multiply(s.Out, r, rows, dy, s.Out, true, s.Scaled, r, false, Parameters.Grad(s.B), r, true, _pool);
        Gemm.Multiply(rows, r, s.Out, dy, s.Out, false, b, r, false, _dScaled, r, false, _pool);
        VectorMath.Scale(_dScaled, Scale, rows * r);
        Gemm.Multiply(r, s.In, rows, _dScaled, r, true, x, s.In, false, Parameters.Grad(s.A), s.In, true, _pool);
        if (dx != null)
        {
            Gemm.Multiply(rows, s.In, r, _dScaled, r, false, a, s.In, false, dx, s.In, true, _pool);
        }
    }

    /// <summary>Writes the adapter folder in PEFT's layout (adapter_config.json + adapter_model.safetensors, F32).</summary>
    public void Save(string folder, string? baseModel = null)
    {
        var writer = new SafetensorsWriter();
        foreach (var p in Parameters.All)
        {
            writer.Add(p.Name, p.Shape, Parameters.ValueSpan(p));
        }

        (Config with { BaseModel = baseModel ?? Config.BaseModel }).Save(folder, writer);
    }

    public void Dispose()
    {
        foreach (var b in _buffers)
        {
            b.Dispose();
        }

        _buffers.Clear();
        Parameters.Dispose();
    }
}
