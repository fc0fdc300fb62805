using Minnow.Benchmarking;
using Minnow.Export.Onnx;
using Minnow.Loading;
using Minnow.OnnxRuntime;
using Minnow.Tensors;

namespace Minnow.Cli.Commands;

/// <summary><c>minnow bench --vs onnxruntime</c>: the bench model exported to ONNX, and the logit agreement of ONNX Runtime with Minnow.</summary>
internal static class OnnxBench
{
    /// <summary>
    /// Exports the model Minnow benchmarks: F16 weights as F16, block-quantized ones as MatMulNBits, the rest F32.
    /// MatMulNBits gets accuracy_level 4 (int8 activations, as onnxruntime-genai's model builder sets for CPU): that
    /// is the arithmetic Minnow's own integer kernels do, and at level 0 ONNX Runtime runs these weights through a
    /// float fallback one to two orders of magnitude slower, which would not be a fair peer.
    /// </summary>
    public static void Export(LoadedModel loaded, string folder, CancellationToken ct)
    {
        var types = loaded.Model.Weights.All.Values.Where(t => t.Rank == 2).Select(t => t.Type).Distinct().ToList();
        var type = types.All(t => t is DType.F16) ? OnnxWeightType.F16 : OnnxWeightType.Auto;
        OnnxExporter.Export(loaded.Model, folder, new OnnxExportOptions { Type = type, AccuracyLevel = 4 }, null, ct);
    }

    public static (LogitAgreement, string) Agreement(LoadedModel loaded, string onnxFolder, string? textFile, int tokens, IReadOnlySet<int> special, ulong seed,
        int threads, TextWriter err, CancellationToken ct)
    {
        int length = Math.Min(tokens, loaded.Config.MaxPositions);
        using var decoder = OrtDecoder.Open(onnxFolder, threads);
        int[] ids;
        string source;
        if (textFile is not null)
        {
            var tokenizer = loaded.Tokenizer
                ?? throw new MinnowException($"{loaded.Path}: the model has no tokenizer, so --agreement-text cannot be tokenized; leave it out to check on a sequence sampled from the model.");
            ids = tokenizer.Encode(File.ReadAllText(textFile), addSpecial: true, parseSpecial: false).Take(length).ToArray();
            if (ids.Length < 2)
            {
                throw new MinnowException($"{textFile}: fewer than 2 tokens to check agreement on.");
            }

            source = $"the first {ids.Length} tokens of {Path.GetFileName(textFile)}";
        }
        else
        {
            err.WriteLine($"sampling {length} tokens from the model in ONNX Runtime for the agreement check ...");
            int first = loaded.Config.BosTokenId ?? BenchmarkInputs.PseudoRandomIds(1, loaded.Config.VocabSize, special, seed)[0];
            decoder.Reset();
            ids = BenchmarkInputs.Sample(length, first, seed, special, token =>
            {
                ct.ThrowIfCancellationRequested();
                return decoder.Forward([token], allLogits: false);
            });
            source = "a sequence sampled from the model";
        }

        err.WriteLine($"checking ONNX Runtime's agreement on {ids.Length} tokens ...");
        float[] minnow = MinnowEngine.AllLogits(loaded.Model, ids, cancellation: ct);
        float[] ort = OrtBenchmark.AllLogits(decoder, ids);
        return (LogitAgreement.Compare(minnow, ort, loaded.Config.VocabSize, ids), source);
    }
}
