using Minnow.Models;

namespace Minnow.Pruning;

/// <summary>How the kept heads or neurons are shared out among the layers.</summary>
public enum StructuredAllocation
{
    /// <summary>
    /// One ranking over all layers (each layer's scores divided by that layer's mean, as FLAP does), so layers
    /// that matter more keep more; every layer keeps at least one head group and one multiple of neurons.
    /// </summary>
    Global,

    /// <summary>Every layer keeps the same fraction.</summary>
    Uniform,
}

/// <summary>What structured pruning kept: per layer, the kv groups (Llama) or heads, and the MLP neurons, ascending.</summary>
public sealed record StructuredPlan(int[][]? KeptHeadUnits, int[][]? KeptNeurons);

/// <summary>
/// Removes whole attention heads and MLP neurons, so the model becomes a smaller dense one whose layers may each
/// keep a different number of heads and a different MLP width (recorded as per-layer shapes in its config).
/// <para>
/// Heads are ranked by the energy of their contribution to the attention output, Σ_tokens ‖W_o[:, h]·attn_h‖²,
/// on calibration text. With grouped-query attention a key/value head serves a group of query heads, so the unit
/// is the group: its score is the sum of its query heads', and it is kept or removed with all of them (q rows,
/// k and v rows, o columns). Neurons are ranked by mean |activation| (the input of the down projection) times the
/// L2 norm of their down-projection column; a removed neuron takes its gate and up rows and its down column.
/// </para>
/// <para>
/// Removal is exact: the smaller model computes what the original computes with those heads' and neurons'
/// output columns zeroed.
/// </para>
/// </summary>
public static class StructuredPruner
{
    /// <summary>Scores each head unit (Llama: kv group; otherwise head) of each layer.</summary>
    public static double[][] HeadUnitScores(ModelConfig c, IReadOnlyList<LinearLayer> linears, ActivationStatistics stats)
    {
        var scores = new double[c.Layers][];
        foreach (var o in linears.Where(x => x.Kind == LinearKind.AttentionOutput))
        {
            double[] heads = stats.HeadEnergy(o.Name);
            int groups = c.KvHeadsOf(o.Layer), size = c.HeadsOf(o.Layer) / groups;
            scores[o.Layer] = Enumerable.Range(0, groups).Select(g => heads.Skip(g * size).Take(size).Sum()).ToArray();
        }

        return scores;
    }

    /// <summary>Scores each MLP neuron of each layer: mean |activation| × ‖down[:, j]‖₂.</summary>
    public static double[][] NeuronScores(ModelConfig c, IReadOnlyList<LinearLayer> linears, EditableWeights w, ActivationStatistics stats)
    {
        var scores = new double[c.Layers][];
        foreach (var down in linears.Where(x => x.Kind == LinearKind.Down))
        {
            double[] meanAbs = stats.MeanAbsInputs(down.Name);
            double[] norms = InputColumnNorms(w[down.Name], down.StoredTransposed);
            scores[down.Layer] = meanAbs.Select((a, j) => a * norms[j]).ToArray();
        }

        return scores;
    }

    /// <summary>The L2 norm of the weights that read each input feature (a column of [out, in]).</summary>
    public static double[] InputColumnNorms(EditableTensor t, bool storedTransposed)
    {
        int rows = t.Rows, cols = t.Columns;
        var sums = new double[storedTransposed ? rows : cols];
        for (int r = 0; r < rows; r++)
        {
            for (int col = 0; col < cols; col++)
            {
                double v = t.Values[(r * cols) + col];
                sums[storedTransposed ? r : col] += v * v;
            }
        }

        return sums.Select(Math.Sqrt).ToArray();
    }

    /// <summary>
    /// Chooses how many units each layer keeps and which: the best by score. Counts are rounded to a multiple of
    /// <paramref name="multiple"/> (at least one multiple, at most all units); kept indices come back ascending.
    /// </summary>
    public static int[][] Allocate(double[][] scores, double keep, StructuredAllocation allocation, int multiple)
    {
        int layers = scores.Length;
        var counts = new int[layers];
        if (allocation == StructuredAllocation.Uniform)
        {
            for (int l = 0; l < layers; l++)
            {
                counts[l] = (int)Math.Round(keep * scores[l].Length, MidpointRounding.ToEven);
            }
        }
        else
        {
            var all = new List<(double Score, int Layer, int Index)>();
            for (int l = 0; l < layers; l++)
            {
                double mean = scores[l].Average();
                for (int i = 0; i < scores[l].Length; i++)
                {
                    all.Add((mean > 0 ? scores[l][i] / mean : 1, l, i));
                }
            }

            int total = (int)Math.Round(keep * all.Count, MidpointRounding.ToEven);
            foreach (var unit in all.OrderByDescending(u => u.Score).ThenBy(u => u.Layer).ThenBy(u => u.Index).Take(total))
            {
                counts[unit.Layer]++;
            }
        }

        var kept = new int[layers][];
        for (int l = 0; l < layers; l++)
        {
            int units = scores[l].Length;
            int m = units >= multiple ? multiple : 1;
            int count = (int)Math.Round((double)counts[l] / m, MidpointRounding.AwayFromZero) * m;
            count = Math.Clamp(count, m, units);
            kept[l] = Enumerable.Range(0, units)
                .OrderByDescending(i => scores[l][i]).ThenBy(i => i)
                .Take(count)
                .Order()
                .ToArray();
        }

        return kept;
    }

    /// <summary>Removes every unit not in the plan from the weights and records the per-layer shapes in the config.</summary>
    public static void Apply(EditableWeights w, IReadOnlyList<LinearLayer> linears, StructuredPlan plan)
    {
        var c = w.Config;
        int hd = c.HeadDim;
        var heads = Enumerable.Range(0, c.Layers).Select(c.HeadsOf).ToArray();
        var kvHeads = Enumerable.Range(0, c.Layers).Select(c.KvHeadsOf).ToArray();
        var ffn = Enumerable.Range(0, c.Layers).Select(c.IntermediateOf).ToArray();
        foreach (var group in linears.GroupBy(x => x.Layer))
        {
            int l = group.Key;
            var byKind = group.ToDictionary(x => x.Kind);
            if (plan.KeptHeadUnits?[l] is int[] units)
            {
                int size = heads[l] / kvHeads[l];
                int[] keptHeads = units.SelectMany(g => Enumerable.Range(g * size, size)).ToArray();
                int[] headColumns = Spread(keptHeads, hd, 0);
                if (c.Architecture == Architecture.Llama)
                {
                    KeepOutputs(w, byKind[LinearKind.Query], headColumns);
                    KeepOutputs(w, byKind[LinearKind.Key], Spread(units, hd, 0));
                    KeepOutputs(w, byKind[LinearKind.Value], Spread(units, hd, 0));
                }
                else if (c.Architecture == Architecture.GptNeoX)
                {
                    if (!c.FusedQkvPerHead)
                    {
                        throw new MinnowException("structured pruning of GPT-NeoX needs Hugging Face's per-head query_key_value layout.");
                    }

                    KeepOutputs(w, byKind[LinearKind.FusedQkv], Spread(keptHeads, 3 * hd, 0));
                }
                else
                {
                    int qDim = heads[l] * hd;
                    int[] rows = [.. headColumns, .. headColumns.Select(i => i + qDim), .. headColumns.Select(i => i + (2 * qDim))];
                    KeepOutputs(w, byKind[LinearKind.FusedQkv], rows);
                }

                KeepInputs(w, byKind[LinearKind.AttentionOutput], headColumns);
                heads[l] = keptHeads.Length;
                kvHeads[l] = c.Architecture == Architecture.Llama ? units.Length : keptHeads.Length;
            }

            if (plan.KeptNeurons?[l] is int[] neurons)
            {
                if (byKind.TryGetValue(LinearKind.Gate, out var gate))
                {
                    KeepOutputs(w, gate, neurons);
                }

                KeepOutputs(w, byKind[LinearKind.Up], neurons);
                KeepInputs(w, byKind[LinearKind.Down], neurons);
                ffn[l] = neurons.Length;
            }
        }

        w.Config = c with
        {
            LayerHeads = plan.KeptHeadUnits != null ? heads : c.LayerHeads,
            LayerKvHeads = plan.KeptHeadUnits != null ? kvHeads : c.LayerKvHeads,
            LayerIntermediate = plan.KeptNeurons != null ? ffn : c.LayerIntermediate,
        };
        w.Config.Validate("pruned model");
    }

    /// <summary>For each unit u, the indices u·width .. u·width + width − 1 (plus an offset).</summary>
    private static int[] Spread(IEnumerable<int> units, int width, int offset) =>
        units.SelectMany(u => Enumerable.Range(offset + (u * width), width)).ToArray();

    private static void KeepOutputs(EditableWeights w, LinearLayer layer, int[] outputs)
    {
        var t = w[layer.Name];
        if (layer.StoredTransposed)
        {
            t.KeepColumns(outputs);
        }
        else
        {
            t.KeepRows(outputs);
        }

        if (layer.BiasName is string bias && w.Has(bias))
        {
            w[bias].KeepRows(outputs);
        }
    }

    private static void KeepInputs(EditableWeights w, LinearLayer layer, int[] inputs)
    {
        var t = w[layer.Name];
        if (layer.StoredTransposed)
        {
            t.KeepRows(inputs);
        }
        else
        {
            t.KeepColumns(inputs);
        }
    }
}
