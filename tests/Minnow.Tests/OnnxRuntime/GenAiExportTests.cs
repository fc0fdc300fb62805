using Minnow.Export.Onnx;
using Minnow.Loading;
using Minnow.OnnxRuntime;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tests.Cli;

namespace Minnow.Tests.OnnxRuntime;

/// <summary>onnxruntime-genai opens the exported folder as it is and greedy-generates Minnow's tokens.</summary>
public class GenAiExportTests
{
    [Theory]
    [InlineData("auto")]
    [InlineData("int4")]
    public unsafe void GenAi_OpensExportedDefaultModelAndGreedyTokensEqualMinnows(string type)
    {
        string source = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        using var loaded = LoadedModel.Open(source);

        // INT4: Minnow's own quantized model (round to nearest, groups of 32) is the reference, exported as it is.
        using var quantized = type == "int4" ? ModelQuantizer.Quantize(loaded.Model, new QuantizationOptions { Scheme = DType.Q4_1 }) : null;
        var model = quantized?.Model ?? loaded.Model;
        using var folder = new TempFolder();
        OnnxExporter.Export(model, folder.Path, new OnnxExportOptions());
        GenAiFolder.Write(model.Config, folder.Path, source);

        using var genai = GenAiRunner.Open(folder.Path);
        const string text = "Once upon a time, the little fish";
        var prompt = loaded.Tokenizer!.Encode(text, addSpecial: false).ToArray();
        Assert.Equal(prompt, genai.Encode(text));

        const int steps = 24;
        var expected = new List<int>();
        using (var cache = new Minnow.Models.KvCache(model.Config, prompt.Length + steps))
        {
            var logits = new float[model.Config.VocabSize];
            fixed (float* p = logits)
            {
                model.Forward(prompt, cache, p, allLogits: false);
                for (int i = 0; i < steps; i++)
                {
                    int next = OnnxGoldenTests.ArgMax(logits);
                    expected.Add(next);
                    if (next == model.Config.EosTokenId)
                    {
                        break;
                    }

                    model.Forward([next], cache, p, allLogits: false);
                }
            }
        }

        var actual = genai.GreedyTokens(prompt, steps);
        Assert.Equal(expected, actual);
    }
}
