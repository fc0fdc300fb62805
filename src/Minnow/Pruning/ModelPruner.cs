using Minnow.Models;

namespace Minnow.Pruning;

public enum PruningMethod
{
    /// <summary>Per layer, zero the smallest |w| (torch's l1_unstructured).</summary>
    Magnitude,

    /// <summary>Wanda: per output row, zero the smallest |W_ij|·‖X_j‖₂ (needs calibration).</summary>
    Wanda,

    /// <summary>2:4 semi-structured: 2 of every 4 consecutive inputs kept in each row.</summary>
    TwoFour,

    /// <summary>4:8 semi-structured.</summary>
    FourEight,

    /// <summary>Remove whole attention heads (kv groups with grouped-query attention).</summary>
    Heads,

    /// <summary>Remove whole MLP neurons.</summary>
    Neurons,
}

public sealed record PruningOptions
{
    public required PruningMethod Method { get; init; }

    /// <summary>Fraction of each linear layer's weights zeroed (magnitude, Wanda).</summary>
    public double Sparsity { get; init; } = 0.5;

    /// <summary>Fraction of attention heads kept (structured); null leaves attention alone.</summary>
    public double? KeepHeads { get; init; }

    /// <summary>Fraction of MLP neurons kept (structured); null leaves the MLP alone.</summary>
    public double? KeepFfn { get; init; }

    public StructuredAllocation Allocation { get; init; } = StructuredAllocation.Global;

    /// <summary>Kept MLP widths are multiples of this (default: 32 when the widths allow it, so Q8_0/Q4_0 blocks fit).</summary>
    public int? FfnMultiple { get; init; }

    /// <summary>
    /// Also prune the token embedding and an untied output head (unstructured and N:M only): each row (a token)
    /// loses the same fraction of its smallest |w| (or keeps N of every M), since no activation scales a lookup.
    /// </summary>
    public bool IncludeEmbeddings { get; init; }

    public bool IsStructured => Method is PruningMethod.Heads or PruningMethod.Neurons;

    /// <summary>Whether calibration activations are needed (Wanda and structured) or used when given (N:M).</summary>
    public bool NeedsCalibration => Method is PruningMethod.Wanda || IsStructured;

    public (int N, int M)? Pattern => Method switch
    {
        PruningMethod.TwoFour => (2, 4),
        PruningMethod.FourEight => (4, 8),
        _ => null,
    };

    public static PruningMethod ParseMethod(string text) => text.ToLowerInvariant() switch
    {
        "magnitude" => PruningMethod.Magnitude,
        "wanda" => PruningMethod.Wanda,
        "2:4" or "2of4" => PruningMethod.TwoFour,
        "4:8" or "4of8" => PruningMethod.FourEight,
        "heads" => PruningMethod.Heads,
        "neurons" => PruningMethod.Neurons,
        _ => throw new MinnowException($"--method '{text}' is not supported (magnitude, wanda, 2:4, 4:8, heads, neurons)."),
    };

    public static string MethodName(PruningMethod method) => method switch
    {
        PruningMethod.TwoFour => "2:4",
        PruningMethod.FourEight => "4:8",
        _ => method.ToString().ToLowerInvariant(),
    };

    public void Validate()
    {
        bool unstructured = Method is PruningMethod.Magnitude or PruningMethod.Wanda;
        if (unstructured && (Sparsity is < 0.1 or > 0.9 || double.IsNaN(Sparsity)))
        {
            throw new MinnowException($"--sparsity must be between 0.1 and 0.9 (got {Sparsity}).");
        }

        foreach (var (name, value) in new[] { ("--keep-heads", KeepHeads), ("--keep-ffn", KeepFfn) })
        {
            if (value is double v && (v is <= 0 or > 1 || double.IsNaN(v)))
            {
                throw new MinnowException($"{name} must be above 0 and at most 1 (got {v}).");
            }
        }

        if (IsStructured && KeepHeads is null && KeepFfn is null)
        {
            throw new MinnowException("structured pruning needs --keep-heads or --keep-ffn (the fraction to keep).");
        }

        if (IncludeEmbeddings && IsStructured)
        {
            throw new MinnowException("--include-embeddings goes with unstructured and N:M pruning (magnitude, wanda, 2:4, 4:8), not with heads or neurons.");
        }

        if (FfnMultiple is <= 0)
        {
            throw new MinnowException($"the MLP width multiple must be positive (got {FfnMultiple}).");
        }
    }
}

/// <summary>Zeros or removed units of one linear layer after pruning.</summary>
public sealed record LayerSparsity(string Name, int Layer, long[] Shape, long Zeros, long Count)
{
    public double Sparsity => Count == 0 ? 0 : (double)Zeros / Count;
}

/// <summary>Prunes a model's weights (a copy: the model itself is not changed).</summary>
public static class ModelPruner
{
    /// <summary>
    /// Prunes <paramref name="model"/>. <paramref name="calibration"/>: token sequences run through the model to
    /// gather activation statistics (required by Wanda and structured pruning, used by N:M when given).
    /// </summary>
    public static EditableWeights Prune(TransformerModel model, PruningOptions options, IReadOnlyList<int[]>? calibration,
        CancellationToken cancellation = default)
    {
        options.Validate();
        var config = model.Config;
        var linears = LinearLayers.Of(config, model.Weights.Has);
        bool calibrate = calibration is { Count: > 0 } && (options.NeedsCalibration || options.Pattern != null);
        if (options.NeedsCalibration && !calibrate)
        {
            throw new MinnowException($"--method {PruningOptions.MethodName(options.Method)} needs calibration text (--calib FILE).");
        }

        ActivationStatistics? stats = null;
        if (calibrate)
        {
            stats = new ActivationStatistics();
            if (options.IsStructured)
            {
                foreach (var o in linears.Where(x => x.Kind == LinearKind.AttentionOutput))
                {
                    stats.TrackHeads(o.Name, config.HeadsOf(o.Layer), config.HeadDim);
                }
            }

            stats.Collect(model, calibration!, cancellation);
        }

        var weights = EditableWeights.From(config, model.Weights);
        if (options.IsStructured)
        {
            PruneStructured(weights, linears, options, stats!);
        }
        else
        {
            foreach (var layer in linears)
            {
                cancellation.ThrowIfCancellationRequested();
                PruneLayer(weights[layer.Name], layer, options, stats);
            }

            if (options.IncludeEmbeddings)
            {
                foreach (string name in LinearLayers.Embeddings(config, weights.Has))
                {
                    cancellation.ThrowIfCancellationRequested();
                    PruneEmbedding(weights[name], options);
                }
            }
        }

        return weights;
    }

    /// <summary>An embedding table or output head [vocab, hidden]: per row the smallest |w| (N:M: the N largest of every M kept).</summary>
    private static void PruneEmbedding(EditableTensor t, PruningOptions options)
    {
        if (options.Pattern is (int n, int m))
        {
            UnstructuredPruner.NOfM(t.Values, t.Rows, t.Columns, n, m);
        }
        else
        {
            var ones = new double[t.Columns];
            Array.Fill(ones, 1.0);
            UnstructuredPruner.Wanda(t.Values, t.Rows, t.Columns, ones, options.Sparsity);
        }
    }

    private static void PruneLayer(EditableTensor t, LinearLayer layer, PruningOptions options, ActivationStatistics? stats)
    {
        if (options.Method == PruningMethod.Magnitude)
        {
            UnstructuredPruner.Magnitude(t.Values, options.Sparsity);
            return;
        }

        // Wanda and N:M work per output row: view the matrix as [out, in].
        int outputs = layer.StoredTransposed ? t.Columns : t.Rows;
        int inputs = layer.StoredTransposed ? t.Rows : t.Columns;
        float[] values = layer.StoredTransposed ? UnstructuredPruner.Transpose(t.Values, t.Rows, t.Columns) : t.Values;
        double[]? norms = stats?.Tokens(layer.Name) > 0 ? stats.InputNorms(layer.Name) : null;
        if (options.Pattern is (int n, int m))
        {
            UnstructuredPruner.NOfM(values, outputs, inputs, n, m, norms);
        }
        else
        {
            UnstructuredPruner.Wanda(values, outputs, inputs, norms ?? throw new MinnowException($"no calibration activations reached '{layer.Name}'."), options.Sparsity);
        }

        if (layer.StoredTransposed)
        {
            UnstructuredPruner.Transpose(values, outputs, inputs).CopyTo(t.Values, 0);
        }
    }

    private static void PruneStructured(EditableWeights weights, IReadOnlyList<LinearLayer> linears, PruningOptions options, ActivationStatistics stats)
    {
        var c = weights.Config;
        int[][]? heads = null, neurons = null;
        if (options.KeepHeads is double keepHeads)
        {
            heads = StructuredPruner.Allocate(StructuredPruner.HeadUnitScores(c, linears, stats), keepHeads, options.Allocation, 1);
        }

        if (options.KeepFfn is double keepFfn)
        {
            int multiple = options.FfnMultiple ?? (Enumerable.Range(0, c.Layers).All(l => c.IntermediateOf(l) % 32 == 0) ? 32 : 1);
            neurons = StructuredPruner.Allocate(StructuredPruner.NeuronScores(c, linears, weights, stats), keepFfn, options.Allocation, multiple);
        }

        weights.Plan = new StructuredPlan(heads, neurons);
        StructuredPruner.Apply(weights, linears, weights.Plan);
    }

    /// <summary>The zeros in each prunable linear layer of a (pruned) model.</summary>
    public static IReadOnlyList<LayerSparsity> Sparsity(EditableWeights weights) =>
        LinearLayers.Of(weights.Config, weights.Has)
            .Select(l => (Layer: l, Tensor: weights[l.Name]))
            .Select(x => new LayerSparsity(x.Layer.Name, x.Layer.Layer, x.Tensor.Shape, x.Tensor.ZeroCount, x.Tensor.Values.Length))
            .ToList();

    /// <summary>The zeros in the token embedding and an untied output head (layer -1).</summary>
    public static IReadOnlyList<LayerSparsity> EmbeddingSparsity(EditableWeights weights) =>
        LinearLayers.Embeddings(weights.Config, weights.Has)
            .Select(name => (Name: name, Tensor: weights[name]))
            .Select(x => new LayerSparsity(x.Name, -1, x.Tensor.Shape, x.Tensor.ZeroCount, x.Tensor.Values.Length))
            .ToList();
}
