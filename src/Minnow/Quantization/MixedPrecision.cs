using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Quantization;

/// <summary>How much the model's predictions move when one linear layer alone is rounded to the low format.</summary>
public sealed record LayerSensitivity(string Name, long LowBytes, long HighBytes, double KlDivergence, double DeltaNll);

/// <summary>The result of a mixed-precision plan: the layers kept at 8 bits and the size it comes to.</summary>
public sealed record MixedPrecisionPlan(IReadOnlyList<LayerSensitivity> Layers, IReadOnlyDictionary<string, DType> Overrides, long Bytes, long Budget)
{
    public IEnumerable<string> Promoted => Layers.Where(l => Overrides.GetValueOrDefault(l.Name) == DType.Q8_0).Select(l => l.Name);
}

/// <summary>
/// Mixed precision under a size budget: a sensitivity scan quantizes each linear layer alone to Q4_0 (round to
/// nearest) and measures the KL divergence of the model's next-token distributions from the original's on
/// calibration windows; then, most sensitive per extra byte first, layers are kept at Q8_0 while the whole model
/// stays within the budget. The embedding and output head follow llama.cpp's Q4_0 policy (Q8_0).
/// </summary>
public static class MixedPrecision
{
    /// <summary>Bytes of a [rows, columns] matrix in a block format.</summary>
    public static long BlockBytes(DType type, long rows, long columns) => rows * (columns / BlockCodec.BlockSize) * type.BlockBytes();

    /// <summary>The tensor bytes of the model quantized with <paramref name="options"/> (without quantizing it).</summary>
    public static long EstimateBytes(TransformerModel source, QuantizationOptions options)
    {
        var plan = LayerPlan.For(source.Config, source.Weights.Has);
        long total = 0;
        foreach (var (name, tensor) in source.Weights.All)
        {
            var layer = plan.Find(name);
            if (layer is not null && layer.Columns % BlockCodec.BlockSize == 0)
            {
                total += BlockBytes(options.SchemeOf(name), layer.Rows, layer.Columns);
            }
            else if (tensor.Rank < 2)
            {
                total += tensor.ElementCount * sizeof(float);
            }
            else if (tensor.Shape[^1] % BlockCodec.BlockSize != 0)
            {
                total += tensor.ElementCount * 2;
            }
            else
            {
                // Embeddings and the output head: Q8_0 unless mixed precision chose otherwise; learned position embeddings F32.
                bool position = name.EndsWith("wpe.weight", StringComparison.Ordinal);
                var type = options.TypeOverrides is not null && options.TypeOverrides.TryGetValue(name, out var chosen) ? chosen : DType.Q8_0;
                total += position ? tensor.ElementCount * sizeof(float) : BlockBytes(type, tensor.ElementCount / tensor.Shape[^1], tensor.Shape[^1]);
            }
        }

        return total;
    }

    /// <summary>KL divergence and Δ NLL of the model with each linear layer alone rounded to Q4_0.</summary>
    public static List<LayerSensitivity> Scan(TransformerModel source, IReadOnlyList<int> tokens, int ctx, int? maxChunks, int? bos,
        IProgress<(int Done, int Total)>? progress = null, CancellationToken cancellation = default)
    {
        var layers = ScannedTensors(source);
        var result = new List<LayerSensitivity>(layers.Count);
        for (int i = 0; i < layers.Count; i++)
        {
            cancellation.ThrowIfCancellationRequested();
            var layer = layers[i];
            using var probe = WithOneLayerRounded(source, layer, DType.Q4_0);
            var comparison = ModelComparison.Compare(source, probe, tokens, ctx, maxChunks, bos, null, cancellation);
            result.Add(new LayerSensitivity(layer.Name, BlockBytes(DType.Q4_0, layer.Rows, layer.Columns), BlockBytes(DType.Q8_0, layer.Rows, layer.Columns),
                comparison.MeanKl, Math.Log(comparison.Perplexity) - Math.Log(comparison.ReferencePerplexity)));
            progress?.Report((i + 1, layers.Count));
        }

        return result;
    }

    /// <summary>
    /// The tensors a mixed-precision plan chooses a format for: every linear layer whose rows are whole blocks, and the
    /// token embedding and output head (llama.cpp's Q4_0 keeps those at Q8_0; here they compete for the budget too).
    /// </summary>
    public static List<LinearLayer> ScannedTensors(TransformerModel source)
    {
        var plan = LayerPlan.For(source.Config, source.Weights.Has);
        var layers = plan.Layers.Where(l => source.Weights.Has(l.Name) && l.Columns % BlockCodec.BlockSize == 0).ToList();
        string arch = Loading.GgufNames.ArchitectureOf(source.Config);
        foreach (var (name, tensor) in source.Weights.All.OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            string hfName = arch == "gpt2" && name.StartsWith("transformer.", StringComparison.Ordinal) ? name["transformer.".Length..] : name;
            if (plan.Find(name) is null && tensor.Rank == 2 && tensor.Shape[^1] % BlockCodec.BlockSize == 0 &&
                Loading.GgufNames.FromHuggingFace(arch, hfName) is "token_embd.weight" or "output.weight")
            {
                layers.Add(new LinearLayer(name, (int)tensor.Shape[0], (int)tensor.Shape[1], "", false));
            }
        }

        return layers;
    }

    /// <summary>
    /// Keeps layers at Q8_0, most KL per extra byte first, while the estimated size stays within
    /// <paramref name="budget"/>; the rest are Q4_0. A budget below the all-Q4_0 size is an error.
    /// </summary>
    public static MixedPrecisionPlan Choose(TransformerModel source, IReadOnlyList<LayerSensitivity> sensitivities, long budget)
    {
        // Everything scanned starts at Q4_0 (the embedding and head too), then the budget buys Q8_0.
        var overrides = sensitivities.ToDictionary(l => l.Name, _ => DType.Q4_0, StringComparer.Ordinal);
        long bytes = EstimateBytes(source, new QuantizationOptions { Scheme = DType.Q4_0, TypeOverrides = overrides });
        if (bytes > budget)
        {
            throw new MinnowException($"--max-size {FormatBytes(budget)} is below the size with every layer at 4 bits ({FormatBytes(bytes)}); give a larger budget.");
        }

        foreach (var layer in sensitivities.OrderByDescending(l => l.KlDivergence / Math.Max(1, l.HighBytes - l.LowBytes)))
        {
            long extra = layer.HighBytes - layer.LowBytes;
            if (bytes + extra <= budget)
            {
                overrides[layer.Name] = DType.Q8_0;
                bytes += extra;
            }
        }

        return new MixedPrecisionPlan(sensitivities, overrides, bytes, budget);
    }

    /// <summary>Parses a size such as "90MB", "1.5GiB", "2500000" (bytes; k/M/G are powers of 1000, Ki/Mi/Gi of 1024).</summary>
    public static long ParseSize(string text)
    {
        string t = text.Trim();
        int split = 0;
        while (split < t.Length && (char.IsDigit(t[split]) || t[split] == '.'))
        {
            split++;
        }

        string unit = t[split..].Trim().ToLowerInvariant();
        double factor = unit switch
        {
            "" or "b" => 1,
            "k" or "kb" => 1e3,
            "m" or "mb" => 1e6,
            "g" or "gb" => 1e9,
            "ki" or "kib" => 1024,
            "mi" or "mib" => 1024 * 1024,
            "gi" or "gib" => 1024.0 * 1024 * 1024,
            _ => double.NaN,
        };
        if (split == 0 || double.IsNaN(factor) ||
            !double.TryParse(t[..split], System.Globalization.NumberStyles.AllowDecimalPoint, System.Globalization.CultureInfo.InvariantCulture, out double value) ||
            value <= 0)
        {
            throw new MinnowException($"--max-size '{text}' is not a size; write e.g. 90MB, 1.5GiB or a number of bytes.");
        }

        return (long)(value * factor);
    }

    private static string FormatBytes(long bytes) => bytes >= 1_000_000 ? $"{bytes / 1e6:0.00} MB" : $"{bytes / 1e3:0.0} kB";

    private static float[] Transpose(float[] values, int rows, int columns)
    {
        var result = new float[values.Length];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                result[((long)c * rows) + r] = values[((long)r * columns) + c];
            }
        }

        return result;
    }

    /// <summary>The model with one layer replaced by its round-to-nearest copy; every other tensor is shared, not copied.</summary>
    private static unsafe TransformerModel WithOneLayerRounded(TransformerModel source, LinearLayer layer, DType type)
    {
        var owner = new ModelQuantizer.BufferOwner();
        try
        {
            var tensors = new Dictionary<string, Tensor>(source.Weights.All, StringComparer.Ordinal);
            var original = source.Weights.Get(layer.Name);
            var values = ModelQuantizer.ReadMatrix(original, layer); // [outputs, inputs]: blocks run along the inputs
            var rounded = new float[values.Length];
            fixed (byte* q = Dequantize.FromFloats(type, values))
            {
                Dequantize.Row(type, q, rounded);
            }

            if (layer.StoredTransposed)
            {
                rounded = Transpose(rounded, layer.Rows, layer.Columns);
            }

            // Stored back in the source's own layout, as F32 (the rounded values are exact in it).
            tensors[layer.Name] = owner.Store(layer.Name, DType.F32, original.Shape, Dequantize.FromFloats(DType.F32, rounded));
            var set = new WeightSet(tensors, source.Weights.Source, owner);
            try
            {
                return ModelFactory.Create(source.Config, set);
            }
            catch
            {
                set.Dispose();
                throw;
            }
        }
        catch
        {
            owner.Dispose();
            throw;
        }
    }
}
