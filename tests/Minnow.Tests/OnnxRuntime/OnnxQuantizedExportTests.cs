using Minnow.Export.Onnx;
using Minnow.Export.Onnx.Proto;
using Minnow.Inference;
using Minnow.Loading;
using Minnow.Models;
using Minnow.OnnxRuntime;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tests.Cli;
using Minnow.Tokenizers;
using Xunit.Abstractions;

namespace Minnow.Tests.OnnxRuntime;

/// <summary>
/// Minnow's quantized weights exported as com.microsoft MatMulNBits: every weight the file describes (read back from
/// model.onnx and dequantized as the operator specifies) equals Minnow's, and ONNX Runtime's perplexity on the
/// default model's held-out text is within 0.1 % of Minnow's for the same quantized model.
/// </summary>
public class OnnxQuantizedExportTests(ITestOutputHelper output)
{
    private static readonly string DefaultFolder = Path.Combine(SharedData.RepositoryRoot, "models", "default");

    public static IEnumerable<object[]> Schemes() =>
    [
        ["rtn", "Q4_1"],
        ["gptq", "Q4_1"],
        ["gptq", "Q4_1_G128"],
        ["rtn", "Q4_0"],
        ["rtn", "Q8_0"],
    ];

    [Theory]
    [MemberData(nameof(Schemes))]
    public unsafe void QuantizedExport_WeightsEqualMinnowsAndPerplexityMatchesInOnnxRuntime(string method, string scheme)
    {
        var type = Enum.Parse<DType>(scheme);
        using var pool = new WorkerPool(2);
        using var original = ModelLoader.LoadModel(DefaultFolder, pool);
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(DefaultFolder, "tokenizer.json"));
        int[] tokens = tokenizer.Encode(File.ReadAllText(Path.Combine(DefaultFolder, "held-out.txt")), addSpecial: false).ToArray();
        using var statistics = method == "gptq" ? Calibration.Collect(original, Calibration.FromTokens(tokens, 128, 8 * 128, bos: null)) : null;
        using var quantized = ModelQuantizer.Quantize(original, new QuantizationOptions
        {
            Scheme = type,
            Method = method == "gptq" ? QuantizationMethod.Gptq : QuantizationMethod.Rtn,
        }, statistics, pool: pool);
        var model = quantized.Model;

        using var folder = new TempFolder();
        var result = OnnxExporter.Export(model, folder.Path, new OnnxExportOptions());
        Assert.True(result.MatMulNBitsLayers >= (7 * model.Config.Layers) + 1, $"{result.MatMulNBitsLayers} MatMulNBits layers");

        // Read model.onnx back and dequantize each MatMulNBits weight by the operator's definition.
        var onnx = ModelProto.Parser.ParseFrom(File.ReadAllBytes(result.ModelFile));
        var initializers = onnx.Graph.Initializer.ToDictionary(t => t.Name);
        int checkedLayers = 0;
        foreach (var node in onnx.Graph.Node.Where(n => n.OpType == "MatMulNBits"))
        {
            Assert.Equal("com.microsoft", node.Domain);
            long Attr(string name) => node.Attribute.Single(a => a.Name == name).I;
            int k = (int)Attr("K"), n = (int)Attr("N"), bits = (int)Attr("bits"), block = (int)Attr("block_size");
            string layer = node.Input[1][..^".qweight".Length];
            string tensorName = layer == "lm_head" ? (model.Weights.Has("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight") : layer + ".weight";
            var tensor = model.Weights.Get(tensorName);
            var b = initializers[node.Input[1]].RawData.Span;
            var scales = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(initializers[node.Input[2]].RawData.Span);
            var zeroPoints = node.Input.Count > 3 ? initializers[node.Input[3]].RawData.ToByteArray() : null;
            initializers.TryGetValue(layer + ".minimums", out var minimumsTensor);
            var minimums = minimumsTensor is null ? null : System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(minimumsTensor.RawData.Span).ToArray();
            int kBlocks = k / block, blob = block * bits / 8, zpRow = ((kBlocks * bits) + 7) / 8;
            Assert.Equal(tensor.Rows, n);
            Assert.Equal(tensor.Columns, k);
            var expected = new float[k];
            for (int row = 0; row < n; row++)
            {
                tensor.ReadRow(row, expected);
                for (int col = 0; col < k; col++)
                {
                    int g = col / block, j = col % block;
                    int q = bits == 8 ? b[(((row * kBlocks) + g) * blob) + j] : (b[(((row * kBlocks) + g) * blob) + (j / 2)] >> (4 * (j & 1))) & 15;
                    int zp = zeroPoints is null ? 1 << (bits - 1) : bits == 8 ? zeroPoints[(row * zpRow) + g] : (zeroPoints[(row * zpRow) + (g / 2)] >> (4 * (g & 1))) & 15;
                    float value = (q - zp) * scales[(row * kBlocks) + g];
                    if (minimums is not null)
                    {
                        value += minimums[(g * n) + row];
                    }

                    Assert.True(BitConverter.SingleToInt32Bits(value) == BitConverter.SingleToInt32Bits(expected[col]) || value == expected[col],
                        $"{tensorName}[{row}, {col}]: MatMulNBits {value} vs Minnow {expected[col]}");
                }
            }

            checkedLayers++;
        }

        Assert.Equal(result.MatMulNBitsLayers, checkedLayers);

        // Perplexity on a later, disjoint part of the held-out text, by the same windows.
        int[] evaluation = tokens[(tokens.Length / 2)..];
        var minnow = PerplexityEvaluator.Evaluate(model, evaluation, ctx: 128, maxChunks: 8);
        using var ort = OrtDecoder.Open(folder.Path, threads: 1);
        var onnxRuntime = OrtPerplexity.Evaluate(ort, evaluation, ctx: 128, maxChunks: 8);
        double relative = Math.Abs(onnxRuntime.Perplexity - minnow.Perplexity) / minnow.Perplexity;
        output.WriteLine($"{method} {scheme}: perplexity Minnow {minnow.Perplexity:0.0000}, ONNX Runtime {onnxRuntime.Perplexity:0.0000} ({relative:P4}); {checkedLayers} MatMulNBits layers");
        Assert.True(relative <= 0.001, $"perplexity Minnow {minnow.Perplexity} vs ONNX Runtime {onnxRuntime.Perplexity}");

        // Argmax agreement where Minnow's top-2 gap is above 0.1, over one window.
        var window = evaluation[..128];
        var expectedLogits = OnnxGoldenTests.MinnowLogits(model, window);
        ort.Reset();
        var actualLogits = ort.Forward(window, allLogits: true);
        int vocab = model.Config.VocabSize, compared = 0;
        for (int t = 0; t < window.Length; t++)
        {
            var row = expectedLogits.AsSpan(t * vocab, vocab);
            int best = OnnxGoldenTests.ArgMax(row);
            float second = float.NegativeInfinity;
            for (int i = 0; i < vocab; i++)
            {
                if (i != best)
                {
                    second = MathF.Max(second, row[i]);
                }
            }

            if (row[best] - second > 0.1f)
            {
                compared++;
                Assert.Equal(best, OnnxGoldenTests.ArgMax(actualLogits.AsSpan(t * vocab, vocab)));
            }
        }

        Assert.True(compared > window.Length / 2, $"only {compared} positions with a top-2 gap above 0.1");
    }
}
