using System.Numerics;
using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Pruning;

/// <summary>
/// Calibration statistics gathered through <see cref="TransformerModel.Observer"/>: for every linear layer, the
/// squared L2 norm and the sum of absolute values of each input feature over the calibration tokens; and, for
/// attention output projections registered with <see cref="TrackHeads"/>, the energy (squared L2 norm summed over
/// tokens) of each head's contribution to the output, ‖W_o[:, head] · attn_head‖².
/// </summary>
public sealed class ActivationStatistics : ILinearInputObserver
{
    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly Dictionary<string, HeadTracker> _heads = new(StringComparer.Ordinal);

    private sealed class Entry(int inputs)
    {
        public readonly double[] SumSquares = new double[inputs];
        public readonly double[] SumAbs = new double[inputs];
        public long Tokens;
    }

    private sealed class HeadTracker(int heads, int headDim)
    {
        public readonly int Heads = heads;
        public readonly int HeadDim = headDim;
        public readonly double[] Energy = new double[heads];
        public float[]? Weight;
    }

    /// <summary>Asks for per-head output energy of an attention output projection with this many heads.</summary>
    public void TrackHeads(string weightName, int heads, int headDim) => _heads[weightName] = new HeadTracker(heads, headDim);

    public void OnLinearInput(Tensor weight, ReadOnlySpan<float> input, int tokens)
    {
        int n = weight.Columns;
        if (!_entries.TryGetValue(weight.Name, out var e))
        {
            e = new Entry(n);
            _entries[weight.Name] = e;
        }

        for (int t = 0; t < tokens; t++)
        {
            var row = input.Slice(t * n, n);
            for (int j = 0; j < n; j++)
            {
                double v = row[j];
                e.SumSquares[j] += v * v;
                e.SumAbs[j] += Math.Abs(v);
            }
        }

        e.Tokens += tokens;
        if (_heads.TryGetValue(weight.Name, out var h))
        {
            AccumulateHeads(h, weight, input, tokens);
        }
    }

    private static void AccumulateHeads(HeadTracker h, Tensor weight, ReadOnlySpan<float> input, int tokens)
    {
        int outputs = weight.Rows, n = weight.Columns;
        h.Weight ??= weight.ToFloatArray();
        var w = h.Weight.AsSpan();
        for (int t = 0; t < tokens; t++)
        {
            var x = input.Slice(t * n, n);
            for (int head = 0; head < h.Heads; head++)
            {
                int start = head * h.HeadDim;
                var xh = x.Slice(start, h.HeadDim);
                double energy = 0;
                for (int r = 0; r < outputs; r++)
                {
                    double y = Dot(w.Slice((r * n) + start, h.HeadDim), xh);
                    energy += y * y;
                }

                h.Energy[head] += energy;
            }
        }
    }

    private static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int i = 0;
        var acc = Vector<float>.Zero;
        for (; i + Vector<float>.Count <= a.Length; i += Vector<float>.Count)
        {
            acc += new Vector<float>(a[i..]) * new Vector<float>(b[i..]);
        }

        float sum = Vector.Sum(acc);
        for (; i < a.Length; i++)
        {
            sum += a[i] * b[i];
        }

        return sum;
    }

    /// <summary>Calibration tokens the layer saw (0 when it saw none).</summary>
    public long Tokens(string weightName) => _entries.TryGetValue(weightName, out var e) ? e.Tokens : 0;

    /// <summary>‖X_j‖₂ for each input feature j of a layer (Wanda's activation norm).</summary>
    public double[] InputNorms(string weightName) => Get(weightName).SumSquares.Select(Math.Sqrt).ToArray();

    /// <summary>The mean |x_j| of each input feature of a layer.</summary>
    public double[] MeanAbsInputs(string weightName)
    {
        var e = Get(weightName);
        return e.SumAbs.Select(s => s / Math.Max(1, e.Tokens)).ToArray();
    }

    /// <summary>Σ over tokens of ‖W_o[:, head]·x_head‖² for each head of a tracked output projection.</summary>
    public double[] HeadEnergy(string weightName) =>
        _heads.TryGetValue(weightName, out var h) && h.Weight != null
            ? (double[])h.Energy.Clone()
            : throw new MinnowException($"no calibration statistics for the heads of '{weightName}'.");

    private Entry Get(string weightName) =>
        _entries.TryGetValue(weightName, out var e) ? e : throw new MinnowException($"no calibration statistics for '{weightName}'.");

    /// <summary>Runs every sequence through the model (each from an empty cache) with this observer attached.</summary>
    public unsafe void Collect(TransformerModel model, IReadOnlyList<int[]> sequences, CancellationToken cancellation = default)
    {
        using var logits = NativeBuffer.Floats(model.Config.VocabSize);
        foreach (var sequence in sequences)
        {
            cancellation.ThrowIfCancellationRequested();
            if (sequence.Length == 0)
            {
                continue;
            }

            using var cache = new KvCache(model.Config, sequence.Length);
            model.Forward(sequence, cache, logits.FloatPointer, allLogits: false, observer: this);
        }
    }
}
