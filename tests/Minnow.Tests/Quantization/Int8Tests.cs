using System.Buffers.Binary;
using Minnow.Export;
using Minnow.Loading;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tests.Cli;
using Minnow.Tests.Models;
using Minnow.Tokenizers;
using Xunit.Abstractions;
using static Minnow.Tests.Quantization.QuantizationTestSupport;

namespace Minnow.Tests.Quantization;

/// <summary>
/// INT8 per output channel (<c>--scheme int8</c>): one symmetric scale per row stored in every Q8_0 block of the row,
/// round to nearest or GPTQ, with SmoothQuant migration folded into the norms.
/// </summary>
public class Int8Tests(ITestOutputHelper output)
{
    private const int Bos = 1;

    [Fact]
    public void PerChannelRoundToNearestIsWithinHalfAStepOfTheRowScale()
    {
        const int rows = 12, columns = 96;
        var values = Gaussian(new Random(3), rows * columns);
        for (int j = 0; j < columns; j++)
        {
            values[(5 * columns) + j] *= 40; // a row of much larger weights: its own scale, the others unaffected
        }

        values[(2 * columns) + 7] = 9f; // an outlier inside a row

        var codec = BlockCodec.RoundToNearestPerChannel(values, rows, columns);
        var back = codec.ToFloats();
        for (int r = 0; r < rows; r++)
        {
            var row = values.AsSpan(r * columns, columns);
            float d = BlockCodec.PerChannelScale(row);
            Assert.Equal((float)(Half)(row.ToArray().Max(MathF.Abs) / 127f), d);
            foreach (var scale in codec.ScaleRow(r))
            {
                Assert.Equal(d, (float)scale);
            }

            foreach (var code in codec.CodeRow(r))
            {
                Assert.InRange(code, -127, 127);
            }

            Assert.Contains(codec.CodeRow(r).ToArray(), c => Math.Abs(c) == 127);
            for (int j = 0; j < columns; j++)
            {
                float error = MathF.Abs(row[j] - back[(r * columns) + j]);
                Assert.True(error <= (d / 2) * 1.0001f, $"row {r} column {j}: error {error} > d/2 = {d / 2}");
            }
        }

        // The Q8_0 bytes the kernels read decode to the same values.
        var decoded = new float[values.Length];
        unsafe
        {
            fixed (byte* bytes = codec.ToBytes())
            {
                Dequantize.Row(DType.Q8_0, bytes, decoded);
            }
        }

        Assert.Equal(back, decoded);
    }

    [Fact]
    public void PerChannelGptqKeepsOneScalePerRowAndBeatsRoundToNearest()
    {
        const int rows = 16, columns = 64, tokens = 256;
        var random = new Random(5);
        var weights = Gaussian(random, rows * columns);

        // Correlated inputs, so error feedback has something to exploit.
        var basis = Gaussian(random, 8 * columns);
        var x = new float[tokens * columns];
        for (int t = 0; t < tokens; t++)
        {
            var mix = Gaussian(random, 8);
            for (int j = 0; j < columns; j++)
            {
                float v = 0.1f * Gaussian(random, 1)[0];
                for (int k = 0; k < 8; k++)
                {
                    v += mix[k] * basis[(k * columns) + j];
                }

                x[(t * columns) + j] = v;
            }
        }

        var hessian = new double[columns * columns];
        for (int t = 0; t < tokens; t++)
        {
            for (int a = 0; a < columns; a++)
            {
                for (int b = 0; b < columns; b++)
                {
                    hessian[(a * columns) + b] += 2.0 * x[(t * columns) + a] * x[(t * columns) + b] / tokens;
                }
            }
        }

        var codec = Gptq.Quantize(weights, rows, Gptq.Prepare(hessian, columns, 0.01, actOrder: true), DType.Q8_0, perChannel: true);
        for (int r = 0; r < rows; r++)
        {
            float d = BlockCodec.PerChannelScale(weights.AsSpan(r * columns, columns));
            foreach (var scale in codec.ScaleRow(r))
            {
                Assert.Equal(d, (float)scale);
            }
        }

        var gptq = codec.ToFloats();
        var rtn = BlockCodec.RoundToNearestPerChannel(weights, rows, columns).ToFloats();
        double gptqError = OutputNorm(weights.Zip(gptq, (a, b) => a - b).ToArray(), rows, x, tokens, columns);
        double rtnError = OutputNorm(weights.Zip(rtn, (a, b) => a - b).ToArray(), rows, x, tokens, columns);
        Assert.True(gptqError < rtnError, $"‖(W − Ŵ)X‖²: GPTQ {gptqError} vs RTN {rtnError}");
        Assert.Throws<ArgumentException>(() => Gptq.Quantize(weights, rows, Gptq.Prepare(hessian, columns, 0.01, true), DType.Q4_0, perChannel: true));
    }

    [Fact]
    public void SmoothQuantScalesFollowTheFormula()
    {
        double[] activations = [4, 1, 0, 9];
        var weights = new float[] { 1, -0.25f, 3, 0, -2, 0.5f, 1, 0 }; // 2 rows × 4 columns
        var s = SmoothQuant.Scales(activations, [(weights, 2)], 0.5);
        Assert.Equal((float)(Math.Sqrt(4) / Math.Sqrt(2)), s[0], 5);
        Assert.Equal((float)(Math.Sqrt(1) / Math.Sqrt(0.5)), s[1], 5);
        Assert.Equal(1f, s[2]); // a dead activation channel is left alone
        Assert.Equal(1f, s[3]); // so is a channel whose weights are all zero
        Assert.All(SmoothQuant.Scales(activations, [(weights, 2)], 0), v => Assert.Equal(1f, v));
        Assert.Throws<ArgumentOutOfRangeException>(() => SmoothQuant.Scales(activations, [(weights, 2)], 1.5));
    }

    [Fact]
    public void SmoothingLeavesTheF32LogitsUnchangedAndFlattensTheActivationRangeOnAverage()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        using var pool = new WorkerPool(1);
        using var original = ModelLoader.LoadModel(golden.WeightsFile("f32"), pool);
        var sequences = Calibration.Sample(original, 4, 64, Bos, seed: 21);
        using var statistics = Calibration.Collect(original, sequences);
        using var quantized = ModelQuantizer.Quantize(original,
            new QuantizationOptions { Scheme = DType.Q8_0, PerChannel = true, SmoothAlpha = 0.5 }, statistics, pool: pool);

        // Every group fed by a norm is smoothed (q/k/v and gate/up of the 5 layers); o_proj and down_proj are not.
        Assert.Equal(10, quantized.SmoothingScales.Count);
        Assert.All(quantized.SmoothingScales, s => Assert.NotNull(statistics.Plan.Groups[s.Group].NormWeight));
        Assert.Contains(quantized.Tensors, t => t.Name.EndsWith("input_layernorm.weight", StringComparison.Ordinal) && t.Method == "smooth");
        Assert.All(quantized.Tensors.Where(t => t.Name.EndsWith("q_proj.weight", StringComparison.Ordinal)), t => Assert.Equal(0.5, t.SmoothAlpha));
        Assert.All(quantized.Tensors.Where(t => t.Name.EndsWith("o_proj.weight", StringComparison.Ordinal)), t => Assert.Null(t.SmoothAlpha));

        // Before rounding, the smoothed model is the same function.
        using var smoothed = ModelQuantizer.ApplyScales(original, quantized.SmoothingScales, pool);
        var ids = sequences[0];
        var expected = Logits(original, ids);
        var actual = Logits(smoothed, ids);
        float tolerance = 1e-4f * MathF.Max(1, expected.Max(MathF.Abs));
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(MathF.Abs(expected[i] - actual[i]) <= tolerance, $"logit {i}: {actual[i]} vs {expected[i]}");
        }

        // The smoothed layers read x/s (max|x_j| / s_j per channel, as calibrated), and their range across channels,
        // max over mean of max|x_j|, is flatter on average (α = 0.5 balances it with the weights', not for every group).
        using var after = Calibration.Collect(smoothed, sequences);
        double spreadBefore = 0, spreadAfter = 0;
        foreach (var scale in quantized.SmoothingScales)
        {
            var maxBefore = statistics.MaxAbs(scale.Group);
            var maxAfter = after.MaxAbs(scale.Group);
            for (int j = 0; j < maxBefore.Length; j++)
            {
                Assert.True(Math.Abs(maxAfter[j] - (maxBefore[j] / scale.Scales[j])) <= 1e-3 * maxAfter[j], $"{scale.Group} channel {j}");
            }

            double before = Spread(maxBefore), flattened = Spread(maxAfter);
            output.WriteLine($"{scale.Group}: max/mean of max|x| {before:0.00} -> {flattened:0.00}");
            spreadBefore += before;
            spreadAfter += flattened;
        }

        Assert.True(spreadAfter < spreadBefore * 0.95, $"mean max/mean of max|x|: {spreadAfter / 10} vs {spreadBefore / 10}");
    }

    private static double Spread(double[] maxAbs) => maxAbs.Max() / maxAbs.Average();

    [Fact]
    public void Stories260kInt8FileReloadsWithTheSameBlocksAndWarnsOnceAboutFloatFallbacks()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        using var pool = new WorkerPool(1);
        using var original = ModelLoader.LoadModel(golden.WeightsFile("f32"), pool);
        var sequences = Calibration.Sample(original, 4, 64, Bos, seed: 22);
        using var statistics = Calibration.Collect(original, sequences);
        using var quantized = ModelQuantizer.Quantize(original,
            new QuantizationOptions { Scheme = DType.Q8_0, Method = QuantizationMethod.Gptq, PerChannel = true, SmoothAlpha = 0.5 }, statistics, pool: pool);
        string path = Path.Combine(Path.GetTempPath(), $"minnow-int8-{Guid.NewGuid():N}.gguf");
        string blocksPath = Path.ChangeExtension(path, ".q8_0.gguf");
        try
        {
            GgufExporter.Export(quantized.Model, path, DType.Q8_0, rowScaledInt8: true);
            GgufExporter.Export(quantized.Model, blocksPath, DType.Q8_0);

            // In the file: I8 codes and one F16 scale per row, smaller than the same values in Q8_0 blocks.
            using (var file = Minnow.Formats.Gguf.GgufFile.Open(path))
            {
                var q = file.Tensors.Single(t => t.Name == "blk.0.attn_q.weight");
                Assert.Equal(DType.I8, q.Type);
                var scale = file.Tensors.Single(t => t.Name == GgufModelReader.RowScaleName("blk.0.attn_q.weight"));
                Assert.Equal(DType.F16, scale.Type);
                Assert.Equal(q.Rows, scale.ElementCount);
                Assert.Equal(DType.I8, file.Tensors.Single(t => t.Name == "token_embd.weight").Type);
                Assert.Equal(DType.F16, file.Tensors.Single(t => t.Name == "blk.0.ffn_down.weight").Type);
            }

            Assert.True(new FileInfo(path).Length < new FileInfo(blocksPath).Length, $"{new FileInfo(path).Length} vs {new FileInfo(blocksPath).Length}");
            var notes = new List<string>();
            using var reloaded = ModelLoader.LoadModel(path, pool, notes);
            AssertSameBlocks(quantized.Model, reloaded);
            using (var fromBlocks = ModelLoader.LoadModel(blocksPath, pool))
            {
                AssertSameBlocks(fromBlocks, reloaded);
            }

            Assert.Equal(DType.Q8_0, reloaded.Weights.Get("model.embed_tokens.weight").Type);
            Assert.Equal(DType.F16, reloaded.Weights.Get("model.layers.0.mlp.down_proj.weight").Type);

            // Every row of every Q8_0 matrix carries one scale in all its blocks.
            foreach (var (name, tensor) in reloaded.Weights.All.Where(t => t.Value.Type == DType.Q8_0))
            {
                AssertOneScalePerRow(name, tensor);
            }

            // One warning line: the 5 down projections (rows of 172) run on float kernels; 36 matrices in all (the tied head included).
            var warning = Assert.Single(notes);
            Assert.StartsWith("warning:", warning, StringComparison.Ordinal);
            Assert.Contains("5 of 36 weight matrices (5 F16; rows of 172)", warning, StringComparison.Ordinal);

            // The original F32 model has nothing quantized, so nothing to warn about.
            Assert.Null(GgufModelReader.FloatKernelFallbackNote(original.Weights.All, "f32"));
        }
        finally
        {
            File.Delete(path);
            File.Delete(blocksPath);
        }
    }

    [Fact]
    public void CommandWritesInt8ReportsSmoothingAndWarnsAboutFallbacks()
    {
        var golden = GoldenReference.Load("stories260k-hf");
        if (golden is null)
        {
            return;
        }

        using var folder = new TempFolder();
        string calib = folder.File("calib.txt"), eval = folder.File("eval.txt"), target = folder.File("stories-int8.gguf");
        using (var pool = new WorkerPool(1))
        using (var original = ModelLoader.LoadModel(golden.Folder, pool))
        {
            File.WriteAllText(calib, string.Join(' ', Calibration.Sample(original, 4, 64, Bos, seed: 1).SelectMany(s => s[1..])));
            File.WriteAllText(eval, string.Join(' ', Calibration.Sample(original, 2, 128, Bos, seed: 2).SelectMany(s => s)));
        }

        var result = Minnow.Tests.Cli.Cli.Run("quantize", golden.Folder, "--out", target, "--scheme", "int8", "--method", "rtn", "--ids", "--calib", calib,
            "--eval", eval, "--bos", "1", "--ctx", "128", "--calib-seq", "64", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal("int8", json.GetProperty("scheme").GetString());
        Assert.True(json.GetProperty("options").GetProperty("per_channel").GetBoolean());
        Assert.Equal(0.5, json.GetProperty("options").GetProperty("smooth_alpha").GetDouble());
        Assert.Contains(json.GetProperty("layers").EnumerateArray(), l => l.GetProperty("method").GetString() == "smooth");
        Assert.Single(result.Stderr.Split('\n'), line => line.StartsWith("warning:", StringComparison.Ordinal) && line.Contains("fall back to float kernels", StringComparison.Ordinal));
        using (var loaded = ModelLoader.LoadModel(target))
        {
            AssertOneScalePerRow("q_proj", loaded.Weights.Get("model.layers.0.self_attn.q_proj.weight"));
        }

        using (var file = Minnow.Formats.Gguf.GgufFile.Open(target))
        {
            Assert.Equal(DType.I8, file.Tensors.Single(t => t.Name == "blk.0.attn_q.weight").Type);
            Assert.Equal(file.Tensors.Sum(t => t.ByteSize), json.GetProperty("tensor_bytes").GetInt64());
        }

        Minnow.Tests.Cli.Cli.AssertFails(["quantize", golden.Folder, "--out", target + "2", "--scheme", "q4_0", "--smooth-alpha", "0.5"], "--smooth-alpha", "int8");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", golden.Folder, "--out", target + "2", "--scheme", "int8", "--smooth-alpha", "1.5"], "--smooth-alpha", "1.5");
        Minnow.Tests.Cli.Cli.AssertFails(["quantize", golden.Folder, "--out", target + "2", "--scheme", "int8", "--method", "awq"], "int8", "awq");
        Assert.False(File.Exists(target + "2"));
    }

    private static unsafe void AssertOneScalePerRow(string name, Tensor tensor)
    {
        int blocks = (int)(tensor.Shape[^1] / 32);
        for (long r = 0; r < tensor.Shape[0]; r++)
        {
            var row = new ReadOnlySpan<byte>(tensor.Data + (r * tensor.RowBytes), (int)tensor.RowBytes);
            ushort first = BinaryPrimitives.ReadUInt16LittleEndian(row);
            for (int b = 1; b < blocks; b++)
            {
                Assert.True(first == BinaryPrimitives.ReadUInt16LittleEndian(row[(b * 34)..]), $"{name} row {r} block {b}");
            }
        }
    }

    [Fact]
    public void DefaultModelInt8SavesReloadsBitIdenticallyAndLosesLittle()
    {
        string folder = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        using var pool = new WorkerPool(2);
        using var original = ModelLoader.LoadModel(folder, pool);
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"));
        int[] ids = tokenizer.Encode(File.ReadAllText(Path.Combine(folder, "held-out.txt")), addSpecial: false).Take(4096).ToArray();
        var calibration = ids.Take(2048).Chunk(128).ToList();
        var evaluation = ids.Skip(2048).ToArray();
        using var statistics = Calibration.Collect(original, calibration);
        foreach (var (method, alpha) in new[] { (QuantizationMethod.Rtn, 0.0), (QuantizationMethod.Rtn, 0.5), (QuantizationMethod.Gptq, 0.5) })
        {
            using var quantized = ModelQuantizer.Quantize(original,
                new QuantizationOptions { Scheme = DType.Q8_0, Method = method, PerChannel = true, SmoothAlpha = alpha }, statistics, pool: pool);
            Assert.Equal(DType.Q8_0, quantized.Model.Weights.Get("model.layers.0.mlp.up_proj.weight").Type);
            var result = ModelComparison.Compare(original, quantized.Model, evaluation, ctx: 128, bosToken: null);
            double delta = (result.Perplexity / result.ReferencePerplexity) - 1;
            output.WriteLine($"int8 {method} α {alpha}: ppl {result.Perplexity:0.0000} (F32 {result.ReferencePerplexity:0.0000}, Δ {delta:P3}), " +
                $"KL {result.MeanKl:0.000000}, top-1 {result.Top1Agreement:P2}, {quantized.BitsPerWeight:0.00} bpw");
            Assert.True(Math.Abs(delta) < 0.002, $"int8 {method} α {alpha}: Δ perplexity {delta:P3}");
            Assert.True(result.MeanKl < 0.001, $"int8 {method} α {alpha}: KL {result.MeanKl}");

            string path = Path.Combine(Path.GetTempPath(), $"minnow-int8-{Guid.NewGuid():N}.gguf");
            try
            {
                GgufExporter.Export(quantized.Model, path, DType.Q8_0, rowScaledInt8: true);
                var notes = new List<string>();
                using var reloaded = ModelLoader.LoadModel(path, pool, notes);
                Assert.Empty(notes); // every matrix of the default model has rows of a multiple of 32
                Assert.Equal(DType.Q8_0, reloaded.Weights.Get("model.layers.0.mlp.up_proj.weight").Type);
                AssertSameBlocks(quantized.Model, reloaded);
                var sample = evaluation.Take(64).ToArray();
                Assert.Equal(Logits(quantized.Model, sample), Logits(reloaded, sample));
            }
            finally
            {
                File.Delete(path);
            }
        }
    }
}
