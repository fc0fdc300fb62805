using Minnow.Models;
using Minnow.Pruning;
using Minnow.Quantization;
using Minnow.Tensors;

namespace Minnow.Optimization;

/// <summary>How a recipe stores the weights.</summary>
public enum WeightScheme
{
    F32,
    F16,
    Q8_0,
    Q4_0,

    /// <summary>Q4_0 with the most sensitive layers at Q8_0 (<see cref="MixedPrecision"/>), 10% over the all-Q4_0 size.</summary>
    Mixed,
}

/// <summary>
/// One way to compress a model: optional structured pruning (fractions of attention heads and MLP neurons kept),
/// then a storage scheme and the quantizer that fills it. Its <see cref="Name"/> is what reports and the cache use.
/// </summary>
public sealed record Recipe(WeightScheme Scheme, QuantizationMethod Method = QuantizationMethod.Rtn, double? KeepHeads = null, double? KeepFfn = null)
{
    public bool Prunes => KeepHeads is not null || KeepFfn is not null;

    public bool Quantizes => Scheme is WeightScheme.Q8_0 or WeightScheme.Q4_0 or WeightScheme.Mixed;

    /// <summary>How many techniques the recipe combines (pruning, quantization), for "single-technique" baselines.</summary>
    public int Techniques => (Prunes ? 1 : 0) + (Quantizes || Scheme == WeightScheme.F16 ? 1 : 0);

    public string Name
    {
        get
        {
            string scheme = Scheme.ToString().ToLowerInvariant();
            if (Quantizes && Scheme != WeightScheme.Q8_0)
            {
                scheme += "-" + QuantizationOptions.MethodName(Method);
            }

            return Prunes ? $"prune-h{Percent(KeepHeads)}-f{Percent(KeepFfn)}+{scheme}" : scheme;
        }
    }

    /// <summary>The GGUF storage type of the written file's bulk tensors.</summary>
    public DType FileType => Scheme switch
    {
        WeightScheme.F32 => DType.F32,
        WeightScheme.F16 => DType.F16,
        WeightScheme.Q8_0 => DType.Q8_0,
        _ => DType.Q4_0,
    };

    /// <summary>The recipes a search tries by default: each technique alone, then the combinations worth trying.</summary>
    public static IReadOnlyList<Recipe> Defaults { get; } =
    [
        new(WeightScheme.F32),
        new(WeightScheme.F16),
        new(WeightScheme.Q8_0),
        new(WeightScheme.Q4_0),
        new(WeightScheme.Q4_0, QuantizationMethod.Gptq),
        new(WeightScheme.Mixed, QuantizationMethod.Gptq),
        new(WeightScheme.F32, KeepHeads: 0.75, KeepFfn: 0.75),
        new(WeightScheme.Q8_0, KeepHeads: 0.75, KeepFfn: 0.75),
        new(WeightScheme.Q4_0, QuantizationMethod.Gptq, KeepHeads: 0.75, KeepFfn: 0.75),
        new(WeightScheme.Q4_0, QuantizationMethod.Gptq, KeepHeads: 1.0, KeepFfn: 0.5),
    ];

    private static string Percent(double? keep) => ((int)Math.Round((keep ?? 1) * 100)).ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// Builds the recipe's model in memory from <paramref name="source"/>. <paramref name="calibration"/>: token
    /// sequences for structured pruning and GPTQ; <paramref name="scan"/>: tokens for the mixed-precision scan.
    /// </summary>
    public TransformerModel Build(TransformerModel source, IReadOnlyList<int[]> calibration, IReadOnlyList<int> scan, int scanContext, int? bos,
        WorkerPool? pool = null, CancellationToken cancellation = default)
    {
        TransformerModel? pruned = null;
        try
        {
            var model = source;
            if (Prunes)
            {
                var options = new PruningOptions { Method = PruningMethod.Heads, KeepHeads = KeepHeads ?? 1, KeepFfn = KeepFfn ?? 1 };
                pruned = ModelPruner.Prune(source, options, calibration, cancellation).CreateModel(pool);
                model = pruned;
            }

            cancellation.ThrowIfCancellationRequested();
            if (!Quantizes)
            {
                if (Scheme == WeightScheme.F16)
                {
                    var halved = ModelConversion.Convert(model, t => t.Rank >= 2 ? DType.F16 : DType.F32, shareUnchanged: false, pool);
                    pruned?.Dispose();
                    return halved;
                }

                return pruned ?? ModelConversion.Convert(model, t => DType.F32, shareUnchanged: false, pool);
            }

            var quantization = new QuantizationOptions { Scheme = Scheme == WeightScheme.Q8_0 ? DType.Q8_0 : DType.Q4_0, Method = Method };
            using var statistics = Method == QuantizationMethod.Rtn ? null : Calibration.Collect(model, calibration, null, cancellation);
            if (Scheme == WeightScheme.Mixed)
            {
                var sensitivities = MixedPrecision.Scan(model, scan, scanContext, 8, bos, null, cancellation);
                long budget = (long)(MixedPrecision.EstimateBytes(model, quantization) * 1.10);
                quantization = quantization with { TypeOverrides = MixedPrecision.Choose(model, sensitivities, budget).Overrides };
            }

            var quantized = ModelQuantizer.Quantize(model, quantization, statistics, null, cancellation, pool);
            pruned?.Dispose();
            return quantized.Model;
        }
        catch
        {
            pruned?.Dispose();
            throw;
        }
    }
}
