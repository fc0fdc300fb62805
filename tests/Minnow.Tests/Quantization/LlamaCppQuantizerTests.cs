using Minnow.Cli.Commands;
using Minnow.Export;
using Minnow.Formats.Gguf;
using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tests.Models;
using Minnow.Tokenizers;
using Xunit.Abstractions;

namespace Minnow.Tests.Quantization;

/// <summary>
/// Minnow's quantizers against llama.cpp's own (<c>llama_model_quantize</c> through LLamaSharp, the output head and
/// token embedding kept at Q8_0 as Minnow keeps them): round to nearest is llama.cpp's Q4_0/Q8_0 bit for bit, and on
/// the project's default model GPTQ Q4_0 — same format, same size — is closer to the F32 model than llama.cpp's
/// Q4_0, measured by Minnow on the same text. (<c>minnow quantize --method llamacpp</c> is the same comparison on
/// the command line.)
/// </summary>
public class LlamaCppQuantizerTests(ITestOutputHelper output)
{
    private static string DefaultModel => Path.Combine(SharedData.RepositoryRoot, "models", "default");

    private static string Temp(string what) => Path.Combine(Path.GetTempPath(), $"minnow-{what}-{Guid.NewGuid():N}.gguf");

    /// <summary>Quantizes the model with llama.cpp and with Minnow's round to nearest, and compares the tensors byte for byte.</summary>
    private static void AssertSameAsLlamaCpp(string modelPath, DType type, Action<GgufWriter> tokenizer)
    {
        string f32 = Temp("f32"), llama = Temp("llamacpp"), minnow = Temp("rtn");
        try
        {
            using var model = ModelLoader.LoadModel(modelPath);
            GgufExporter.Export(model, f32, DType.F32, tokenizer);
            QuantizeCommand.LlamaCppQuantizer.QuantizeFile(f32, llama, type);
            using (var rtn = ModelQuantizer.Quantize(model, new QuantizationOptions { Scheme = type, Method = QuantizationMethod.Rtn }))
            {
                GgufExporter.Export(rtn.Model, minnow, type, tokenizer);
            }

            using var a = GgufFile.Open(llama);
            using var b = GgufFile.Open(minnow);
            Assert.Equal(a.Tensors.Select(t => t.Name).Order(), b.Tensors.Select(t => t.Name).Order());
            int quantized = 0;
            foreach (var expected in a.Tensors)
            {
                var actual = b.GetTensor(expected.Name);
                Assert.True(expected.Type == actual.Type, $"{expected.Name}: llama.cpp {expected.Type}, Minnow {actual.Type}");
                Assert.Equal(expected.Shape, actual.Shape);
                unsafe
                {
                    Assert.True(new ReadOnlySpan<byte>(expected.Data, (int)expected.ByteSize).SequenceEqual(new ReadOnlySpan<byte>(actual.Data, (int)actual.ByteSize)),
                        $"{expected.Name} ({expected.Type}) differs");
                }

                quantized += expected.Type == type ? 1 : 0;
            }

            Assert.True(quantized > 0);
        }
        finally
        {
            File.Delete(f32);
            File.Delete(llama);
            File.Delete(minnow);
        }
    }

    [Theory]
    [InlineData("q4_0")]
    [InlineData("q8_0")]
    public void RoundToNearestIsLlamaCppsQuantizerOnGptNeoX(string scheme)
    {
        // gpt_neox: every matrix row is a multiple of 32 long, so llama.cpp quantizes all of them.
        var golden = GoldenReference.Load("gpt_neox");
        if (golden is null)
        {
            return;
        }

        AssertSameAsLlamaCpp(golden.WeightsFile("f32"), QuantizationOptions.ParseScheme(scheme), GgufTokenizerMetadata.WriteNone);
    }

    [Fact]
    public void RoundToNearestIsLlamaCppsQuantizerOnTheDefaultModel()
    {
        var tokenizer = GgufTokenizerMetadata.For(DefaultModel, ModelFormat.HuggingFace, 2048);
        AssertSameAsLlamaCpp(DefaultModel, DType.Q4_0, tokenizer.Write);
    }

    [Fact]
    public void GptqQ4BeatsLlamaCppQ4OnTheDefaultModel()
    {
        var tokenizer = TokenizerLoader.LoadFromFolder(DefaultModel);
        var tokens = tokenizer.Encode(File.ReadAllText(Path.Combine(DefaultModel, "held-out.txt")), addSpecial: false).ToArray();

        // Calibrate on the first part of the held-out text, evaluate on a later, disjoint part.
        var calibration = Calibration.FromTokens(tokens, 128, 16 * 128, bos: null);
        var evaluation = tokens[(tokens.Length / 2)..];
        string f32 = Temp("f32"), llama = Temp("llamacpp");
        try
        {
            using var original = ModelLoader.LoadModel(DefaultModel);
            using var statistics = Calibration.Collect(original, calibration);
            using var gptq = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = DType.Q4_0, Method = QuantizationMethod.Gptq }, statistics);
            GgufExporter.Export(original, f32, DType.F32, GgufTokenizerMetadata.For(DefaultModel, ModelFormat.HuggingFace, 2048).Write);
            QuantizeCommand.LlamaCppQuantizer.QuantizeFile(f32, llama, DType.Q4_0);
            using var reference = ModelLoader.LoadModel(llama);
            Assert.Equal(reference.Weights.ByteSize, gptq.Bytes);

            var ofLlama = ModelComparison.Compare(original, reference, evaluation, ctx: 128, maxChunks: 12);
            var ofGptq = ModelComparison.Compare(original, gptq.Model, evaluation, ctx: 128, maxChunks: 12);
            output.WriteLine($"F32 ppl {ofLlama.ReferencePerplexity:0.000}; llama.cpp Q4_0: ppl {ofLlama.Perplexity:0.000}, KL {ofLlama.MeanKl:0.000000}, top-1 {ofLlama.Top1Agreement:P2}; " +
                $"GPTQ Q4_0: ppl {ofGptq.Perplexity:0.000}, KL {ofGptq.MeanKl:0.000000}, top-1 {ofGptq.Top1Agreement:P2}");
            Assert.True(ofGptq.MeanKl < ofLlama.MeanKl, $"KL: GPTQ {ofGptq.MeanKl} vs llama.cpp {ofLlama.MeanKl}");
            Assert.True(ofGptq.Perplexity < ofLlama.Perplexity, $"perplexity: GPTQ {ofGptq.Perplexity} vs llama.cpp {ofLlama.Perplexity}");
        }
        finally
        {
            File.Delete(f32);
            File.Delete(llama);
        }
    }
}
