using Minnow.Kernels;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Quantization;

/// <summary>
/// Calibration statistics of the inputs of a model's linear layers, gathered in one streaming pass as an
/// <see cref="ILinearInputObserver"/>: per input group (q/k/v share one, gate/up share one) the second moment
/// XᵀX (float64 accumulation of float32 partial sums over each forward batch) and per-channel Σ|x|, Σx² and max|x|.
/// Memory is fixed by the layer widths (one width² matrix per group), whatever the number of tokens.
/// </summary>
public sealed unsafe class ActivationStatistics : ILinearInputObserver, IDisposable
{
    private sealed class Accumulator(int width)
    {
        public readonly int Width = width;
        public readonly double[] Gram = new double[width * width];
        public readonly double[] SumAbs = new double[width];
        public readonly double[] SumSquares = new double[width];
        public readonly double[] MaxAbs = new double[width];
        public long Tokens;
    }

    private readonly LayerPlan _plan;
    private readonly Dictionary<string, Accumulator> _groups = new(StringComparer.Ordinal);
    private readonly WorkerPool? _pool;
    private NativeBuffer? _transposed, _product;

    public ActivationStatistics(LayerPlan plan, WorkerPool? pool = null)
    {
        _plan = plan;
        _pool = pool;
    }

    public LayerPlan Plan => _plan;

    public IEnumerable<string> GroupKeys => _groups.Keys;

    public bool Has(string group) => _groups.ContainsKey(group);

    /// <summary>Tokens seen by a group (0 when it was never reached).</summary>
    public long Tokens(string group) => _groups.TryGetValue(group, out var a) ? a.Tokens : 0;

    public void OnLinearInput(Tensor weight, ReadOnlySpan<float> input, int tokens)
    {
        var layer = _plan.Find(weight.Name);
        if (layer is null || tokens <= 0)
        {
            return;
        }

        var group = _plan.Groups[layer.Group];
        if (!string.Equals(group.Members[0], weight.Name, StringComparison.Ordinal))
        {
            // The other members of the group read the very same activations.
            return;
        }

        if (!_groups.TryGetValue(group.Key, out var acc))
        {
            acc = new Accumulator(weight.Columns);
            _groups[group.Key] = acc;
        }

        Accumulate(acc, input, tokens);
    }

    private void Accumulate(Accumulator acc, ReadOnlySpan<float> input, int tokens)
    {
        int n = acc.Width;
        long needT = (long)n * tokens;
        if (_transposed is null || _transposed.Length < needT * sizeof(float))
        {
            _transposed?.Dispose();
            _transposed = NativeBuffer.Floats(needT);
        }

        if (_product is null || _product.Length < (long)n * n * sizeof(float))
        {
            _product?.Dispose();
            _product = NativeBuffer.Floats((long)n * n);
        }

        float* xt = _transposed.FloatPointer;
        for (int t = 0; t < tokens; t++)
        {
            var row = input.Slice(t * n, n);
            for (int i = 0; i < n; i++)
            {
                float v = row[i];
                xt[((long)i * tokens) + t] = v;
                acc.SumAbs[i] += MathF.Abs(v);
                acc.MaxAbs[i] = Math.Max(acc.MaxAbs[i], MathF.Abs(v));
                acc.SumSquares[i] += (double)v * v;
            }
        }

        // (XᵀX)[a, b] = Σ_t Xᵀ[a, t] · Xᵀ[b, t]: a matrix product with Xᵀ as both the weights and the input.
        var asWeights = new Tensor("calibration", DType.F32, [n, tokens], (byte*)xt, null);
        float* product = _product.FloatPointer;
        MatMul.Compute(asWeights, xt, n, product, null, _pool);
        var gram = acc.Gram;
        for (long i = 0; i < (long)n * n; i++)
        {
            gram[i] += product[i];
        }

        acc.Tokens += tokens;
    }

    /// <summary>The GPTQ Hessian of a group's layers, H = 2·XᵀX / tokens (width × width, float64), a new array.</summary>
    public double[] Hessian(string group)
    {
        var acc = Get(group);
        var h = new double[acc.Gram.Length];
        double scale = 2.0 / Math.Max(1, acc.Tokens);
        for (int i = 0; i < h.Length; i++)
        {
            h[i] = acc.Gram[i] * scale;
        }

        return h;
    }

    /// <summary>Per input channel mean |x| (AWQ's activation scale).</summary>
    public double[] MeanAbs(string group)
    {
        var acc = Get(group);
        return acc.SumAbs.Select(s => s / Math.Max(1, acc.Tokens)).ToArray();
    }

    /// <summary>Per input channel max |x| over every calibration token (SmoothQuant's activation range), a new array.</summary>
    public double[] MaxAbs(string group) => (double[])Get(group).MaxAbs.Clone();

    /// <summary>Per input channel mean x² (Wanda's ‖x_j‖² / tokens).</summary>
    public double[] MeanSquare(string group)
    {
        var acc = Get(group);
        return acc.SumSquares.Select(s => s / Math.Max(1, acc.Tokens)).ToArray();
    }

    private Accumulator Get(string group) =>
        _groups.TryGetValue(group, out var acc) ? acc : throw new MinnowException($"no calibration statistics for '{group}' (the calibration pass did not reach it).");

    public void Dispose()
    {
        _transposed?.Dispose();
        _product?.Dispose();
        _transposed = _product = null;
    }
}
