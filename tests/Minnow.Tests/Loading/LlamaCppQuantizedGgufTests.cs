using System.Runtime.InteropServices;
using LLama.Native;
using Minnow.Benchmarking;
using Minnow.Export;
using Minnow.Formats.Gguf;
using Minnow.LlamaCpp;
using Minnow.Loading;
using Minnow.Tensors;
using Minnow.Tokenizers;
using Xunit.Abstractions;

namespace Minnow.Tests.Loading;

/// <summary>The project's default model exported to an F32 GGUF once, for quantizing with llama.cpp.</summary>
public sealed class DefaultModelF32Gguf : IDisposable
{
    public DefaultModelF32Gguf()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"minnow-default-f32-{Guid.NewGuid():N}.gguf");
        using var model = ModelLoader.LoadModel(LlamaCppQuantizedGgufTests.DefaultModel);
        GgufExporter.Export(model, Path, DType.F32, GgufTokenizerMetadata.For(LlamaCppQuantizedGgufTests.DefaultModel, ModelFormat.HuggingFace, model.Config.VocabSize).Write);
    }

    public string Path { get; }

    public void Dispose() => File.Delete(Path);
}

/// <summary>
/// GGUF files quantized by llama.cpp itself (<c>llama_model_quantize</c> through LLamaSharp) to Q4_K_M, Q5_K_M,
/// Q6_K, Q2_K, Q3_K_M, Q4_1, Q5_0 and Q5_1 from the default model: every tensor Minnow converts at load holds
/// exactly the floats ggml's own <c>dequantize_row_*</c> (called in llama.cpp's native library) gives for it, the
/// loaded model says it converted them, and its logits agree with llama.cpp running the same file.
/// </summary>
public sealed unsafe class LlamaCppQuantizedGgufTests(DefaultModelF32Gguf f32, ITestOutputHelper output) : IClassFixture<DefaultModelF32Gguf>
{
    internal static string DefaultModel => Path.Combine(SharedData.RepositoryRoot, "models", "default");

    public static TheoryData<string, string[]> FileTypes => new()
    {
        // ftype, the ggml types the file must contain (so that the test cannot pass vacuously)
        { nameof(LLamaFtype.MOSTLY_Q4_K_M), ["Q4_K", "Q6_K"] },
        { nameof(LLamaFtype.MOSTLY_Q5_K_M), ["Q5_K", "Q6_K"] },
        { nameof(LLamaFtype.MOSTLY_Q6_K), ["Q6_K"] },
        { nameof(LLamaFtype.MOSTLY_Q2_K), ["Q2_K"] },
        { nameof(LLamaFtype.MOSTLY_Q3_K_M), ["Q3_K"] },
        { nameof(LLamaFtype.MOSTLY_Q5_0), ["Q5_0"] },
        { nameof(LLamaFtype.MOSTLY_Q5_1), ["Q5_1"] },
    };

    /// <summary>llama_model_quantize with llama.cpp's defaults for the file type (as llama-quantize would).</summary>
    private static void Quantize(string source, string destination, LLamaFtype ftype)
    {
        if (!NativeLibraryConfig.LLama.LibraryHasLoaded)
        {
            NativeLibraryConfig.All.WithLogCallback((level, message) =>
            {
                if (level == LLamaLogLevel.Error)
                {
                    Console.Error.Write("llama.cpp: " + message);
                }
            });
        }

        // Loads the native library through LLamaSharp's resolver (the parameters' own import would not find it).
        NativeApi.llama_empty_call();
        var parameters = LLamaModelQuantizeParams.Default();
        parameters.ftype = ftype;
        parameters.nthread = 2;
        Assert.Equal(0u, NativeApi.llama_model_quantize(source, destination, ref parameters));
    }

    /// <summary>ggml's own dequantize_row_{type} from the libggml-base that llama.cpp loaded into this process.</summary>
    private static delegate* unmanaged<byte*, float*, long, void> GgmlDequantizer(DType type)
    {
        NativeApi.llama_empty_call();
        string? loaded = File.ReadLines("/proc/self/maps")
            .Select(line => line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries))
            .Where(parts => parts.Length == 6 && parts[5].Trim().EndsWith("/libggml-base.so", StringComparison.Ordinal))
            .Select(parts => parts[5].Trim())
            .FirstOrDefault();
        nint library = NativeLibrary.Load(loaded ?? "libggml-base.so");
        return (delegate* unmanaged<byte*, float*, long, void>)NativeLibrary.GetExport(library, "dequantize_row_q" + type.Name()[1..]);
    }

    private static float[] GgmlToFloats(Tensor t)
    {
        var result = new float[t.ElementCount];
        var dequantize = GgmlDequantizer(t.Type);
        fixed (float* y = result)
        {
            dequantize(t.Data, y, t.ElementCount);
        }

        return result;
    }

    [Theory]
    [MemberData(nameof(FileTypes))]
    public void LlamaCppQuantizedFilesLoadExactlyAsGgmlDequantizesThem(string ftypeName, string[] requiredTypes)
    {
        var ftype = Enum.Parse<LLamaFtype>(ftypeName);
        string path = Path.Combine(Path.GetTempPath(), $"minnow-{ftypeName}-{Guid.NewGuid():N}.gguf");
        try
        {
            Quantize(f32.Path, path, ftype);

            // What ggml computes for every tensor Minnow will convert, straight from the file.
            var expected = new Dictionary<string, float[]>(StringComparer.Ordinal);
            var types = new Dictionary<string, int>();
            using (var file = GgufFile.Open(path))
            {
                foreach (var t in file.Tensors)
                {
                    types[t.Type.Name()] = types.GetValueOrDefault(t.Type.Name()) + 1;
                    if (t.Type.IsLoadOnly())
                    {
                        float[] ggml = GgmlToFloats(t);
                        float[] minnow = DequantizeKQuants.ToFloats(t);
                        int differ = Enumerable.Range(0, ggml.Length).Count(i => BitConverter.SingleToInt32Bits(ggml[i]) != BitConverter.SingleToInt32Bits(minnow[i]));
                        Assert.True(differ == 0, $"{ftypeName}: {t.Name} ({t.Type.Name()}): {differ} of {ggml.Length} values differ from ggml's");
                        expected[GgufNames.ToHuggingFace(file.Architecture!, t.Name)!] = ggml;
                    }
                }
            }

            output.WriteLine($"{ftypeName}: " + string.Join(", ", types.OrderByDescending(t => t.Value).Select(t => $"{t.Value} {t.Key}")));
            foreach (string type in requiredTypes)
            {
                Assert.True(types.ContainsKey(type), $"{ftypeName}: llama.cpp wrote no {type} tensor ({string.Join(", ", types.Keys)})");
            }

            // The loaded model holds those values as F32, and says it converted them.
            using var loaded = LoadedModel.Open(path);
            Assert.Single(loaded.Notes);
            output.WriteLine(loaded.Notes[0]);
            Assert.Contains($"{expected.Count} tensors (", loaded.Notes[0]);
            Assert.Contains("converted to F32 at load", loaded.Notes[0]);
            output.WriteLine("dtype: " + loaded.Facts.DType);
            Assert.StartsWith("F32 (stored as mixed: ", loaded.Facts.DType);
            Assert.EndsWith(", converted to F32 at load)", loaded.Facts.DType);
            foreach (string type in requiredTypes)
            {
                Assert.Contains(type, loaded.Notes[0]);
                Assert.Contains(type, loaded.Facts.DType);
            }

            foreach (var (name, values) in expected)
            {
                var t = loaded.Model.Weights.Get(name);
                Assert.Equal(DType.F32, t.Type);
                Assert.True(new ReadOnlySpan<float>(t.Data, values.Length).SequenceEqual(values), $"{name} differs after loading");
            }

            // And it computes what llama.cpp computes from the same file.
            CompareLogits(ftypeName, path, loaded);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// Minnow (F32 weights and activations) against llama.cpp on the same quantized file (which, for K-quant and
    /// Q4_1/Q5_x dot products, quantizes the activations to 8 bits) over the model's whole context (128 tokens) of
    /// held-out text: the same argmax wherever Minnow's top two logits are more than 0.5 apart and at 97% of all
    /// positions, and every logit within 3% of the logit range. Measured: 126–128 of 128 positions agree (the flips
    /// are near-ties, top-two gaps under 0.1) and logits differ by at most 0.9% of the range for every file type;
    /// with Q4_K's packed scale and minimum nibbles swapped, 52–55 of 64 positions agree and logits are off by
    /// 13–20% of the range, and with two of Q6_K's quant groups swapped, 8–16 of 64 and over 100%.
    /// </summary>
    [Fact]
    public void LlamaCppQ4_1FilesRunNativelyAndAgreeWithLlamaCpp()
    {
        // Q4_1 (INT4 with a scale and minimum per group of 32) is kept as it is: Minnow's integer kernels run it.
        string path = Path.Combine(Path.GetTempPath(), $"minnow-q4_1-{Guid.NewGuid():N}.gguf");
        try
        {
            Quantize(f32.Path, path, LLamaFtype.MOSTLY_Q4_1);
            using var loaded = LoadedModel.Open(path);
            int q41 = 0;
            using (var file = GgufFile.Open(path))
            {
                foreach (var t in file.Tensors.Where(t => t.Type == DType.Q4_1))
                {
                    var native = loaded.Model.Weights.Get(GgufNames.ToHuggingFace(file.Architecture!, t.Name)!);
                    Assert.Equal(DType.Q4_1, native.Type);
                    Assert.Equal(GgmlToFloats(t), native.ToFloatArray());
                    q41++;
                }
            }

            Assert.True(q41 > 0, "llama.cpp wrote no Q4_1 tensor");
            CompareLogits(nameof(LLamaFtype.MOSTLY_Q4_1), path, loaded);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void MinnowsInt4GroupsOf32ExportAsQ4_1ThatLlamaCppRuns()
    {
        string path = Path.Combine(Path.GetTempPath(), $"minnow-int4-{Guid.NewGuid():N}.gguf");
        try
        {
            using (var source = LoadedModel.Open(f32.Path))
            using (var quantized = Minnow.Quantization.ModelQuantizer.Quantize(source.Model,
                new Minnow.Quantization.QuantizationOptions { Scheme = DType.Q4_1, Method = Minnow.Quantization.QuantizationMethod.Rtn }))
            {
                GgufExporter.Export(quantized.Model, path, DType.Q4_1, GgufTokenizerMetadata.For(DefaultModel, ModelFormat.HuggingFace, source.Config.VocabSize).Write);
            }

            using var loaded = LoadedModel.Open(path);
            Assert.Equal(DType.Q4_1, loaded.Model.Weights.Get("model.layers.0.mlp.up_proj.weight").Type);
            CompareLogits("minnow int4 g32", path, loaded);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private void CompareLogits(string ftypeName, string path, LoadedModel loaded)
    {
        var tokenizer = TokenizerLoader.LoadFromFolder(DefaultModel)!;
        int[] ids = tokenizer.Encode(File.ReadAllText(Path.Combine(DefaultModel, "held-out.txt")), addSpecial: false).ToArray()[..loaded.Config.MaxPositions];
        int vocab = loaded.Config.VocabSize;
        float[] minnow = MinnowEngine.AllLogits(loaded.Model, ids);
        float[] llama;
        using (var peer = LlamaCppModel.Load(path, new LlamaCppOptions { Threads = 2, ContextSize = ids.Length, F32KvCache = true }))
        {
            Assert.Equal(vocab, peer.VocabSize);
            llama = peer.EvaluateAllLogits(ids);
        }

        int same = 0;
        var flips = new List<string>();
        float maxDiff = 0, range = 0;
        for (int p = 0; p < ids.Length; p++)
        {
            var a = minnow.AsSpan(p * vocab, vocab);
            var b = llama.AsSpan(p * vocab, vocab);
            if (MinnowEngine.ArgMax(a) == MinnowEngine.ArgMax(b))
            {
                same++;
            }
            else
            {
                flips.Add($"{p} (Minnow's top-two gap {TopTwoGap(a):0.000})");
                Assert.True(TopTwoGap(a) <= 0.5f, $"{ftypeName}: position {p} flipped although Minnow's top two logits are {TopTwoGap(a)} apart");
            }

            float low = float.MaxValue, high = float.MinValue;
            for (int v = 0; v < vocab; v++)
            {
                maxDiff = MathF.Max(maxDiff, MathF.Abs(a[v] - b[v]));
                low = MathF.Min(low, a[v]);
                high = MathF.Max(high, a[v]);
            }

            range = MathF.Max(range, high - low);
        }

        output.WriteLine($"{ftypeName}: argmax agrees at {same}/{ids.Length} positions; largest logit difference {maxDiff:0.0000} (logit range {range:0.00}, {maxDiff / range:P2}); flipped: {(flips.Count == 0 ? "none" : string.Join(", ", flips))}");
        Assert.True(same >= 0.97 * ids.Length, $"{ftypeName}: argmax agrees at only {same} of {ids.Length} positions");
        Assert.True(maxDiff <= MaxRelativeDifference * range, $"{ftypeName}: largest logit difference {maxDiff} is over {MaxRelativeDifference:P0} of the logit range {range}");
    }

    private const float MaxRelativeDifference = 0.03f;

    private static float TopTwoGap(ReadOnlySpan<float> values)
    {
        float first = float.MinValue, second = float.MinValue;
        foreach (float v in values)
        {
            if (v > first)
            {
                (first, second) = (v, first);
            }
            else if (v > second)
            {
                second = v;
            }
        }

        return first - second;
    }
}
