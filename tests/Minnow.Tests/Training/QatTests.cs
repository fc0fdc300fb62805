using Minnow.Loading;
using Minnow.Models;
using Minnow.Quantization;
using Minnow.Tensors;
using Minnow.Tests.Cli;
using Minnow.Tokenizers;
using Minnow.Training;
using Xunit.Abstractions;
using CliHarness = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Training;

/// <summary>Quantization-aware training: fake-quantized linear weights with a straight-through estimator.</summary>
public unsafe class QatTests(ITestOutputHelper output)
{
    private static ModelConfig TinyConfig() =>
        LlamaTrainingModel.CreateConfig(vocab: 37, hidden: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 96, maxPositions: 16);

    [Theory]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q4_0)]
    [InlineData(DType.Q4_1)]
    [InlineData(DType.Q4_1_G64)]
    [InlineData(DType.Q4_1_G128)]
    [InlineData(DType.Q3_1_G32)]
    [InlineData(DType.Q3_1_G64)]
    [InlineData(DType.Q3_1_G128)]
    public void FakeQuantizedRowIsBitIdenticalToQuantizeThenDequantize(DType type)
    {
        var rng = new SplitMix64(11);
        var values = new float[128 * 6];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)(rng.NextGaussian() * (i < 128 ? 1e-3 : 0.05));
        }

        values.AsSpan(128, 128).Clear(); // an all-zero group: d = 0
        byte[] bytes = Dequantize.FromFloats(type, values);
        var expected = new float[values.Length];
        fixed (byte* p = bytes)
        {
            Dequantize.Row(type, p, expected);
        }

        var actual = new float[values.Length];
        FakeQuantizer.Row(type, values, actual);
        Assert.Equal(expected, actual);
        FakeQuantizer.Row(type, values, values); // in place
        Assert.Equal(expected, values);
    }

    /// <summary>
    /// The straight-through estimator: with fake quantization on, the loss, the input (embedding) gradient and every
    /// weight gradient equal those of the same model whose linear weights are replaced by Q(W) with fake
    /// quantization off; the float weights are left as they were, and the gradients differ from plain float training.
    /// </summary>
    [Theory]
    [InlineData(DType.Q4_0)]
    [InlineData(DType.Q4_1)]
    [InlineData(DType.Q3_1_G32)]
    public void StraightThroughGradientsEqualTheGradientsAtTheQuantizedWeights(DType scheme)
    {
        using var pool = new WorkerPool(2);
        var config = TinyConfig();
        using var qat = LlamaTrainingModel.CreateRandom(config, 5, pool);
        using var replaced = LlamaTrainingModel.CreateRandom(config, 5, pool);
        using var plain = LlamaTrainingModel.CreateRandom(config, 5, pool);
        qat.EnableFakeQuantization(scheme);
        var quantized = qat.FakeQuantization!;
        var formats = quantized.Matrices.ToDictionary(p => p.Name, p => quantized.TypeOf(p)!.Value);
        Assert.Equal((config.Layers * 7) + 1, formats.Count); // every linear layer, and the tied embedding / output head
        Assert.Equal(DType.Q8_0, formats["model.embed_tokens.weight"]);
        Assert.All(formats.Where(f => f.Key != "model.embed_tokens.weight"), f => Assert.Equal(scheme, f.Value));
        foreach (var p in replaced.Parameters.All.Where(p => formats.ContainsKey(p.Name)))
        {
            var values = replaced.Parameters.ValueSpan(p);
            FakeQuantizer.Apply(formats[p.Name], values, (int)p.Shape[1]).CopyTo(values);
        }

        var before = qat.Parameters.All.ToDictionary(p => p.Name, p => qat.Parameters.ValueSpan(p).ToArray());
        const int batch = 3, seq = 12;
        var rng = new SplitMix64(6);
        var inputs = new int[batch * seq];
        var targets = new int[batch * seq];
        for (int i = 0; i < inputs.Length; i++)
        {
            inputs[i] = rng.NextInt(config.VocabSize);
            targets[i] = i % 7 == 3 ? -1 : rng.NextInt(config.VocabSize);
        }

        double lossQat = qat.ForwardBackward(inputs, targets, batch, seq).MeanLoss;
        double lossReplaced = replaced.ForwardBackward(inputs, targets, batch, seq).MeanLoss;
        double lossPlain = plain.ForwardBackward(inputs, targets, batch, seq).MeanLoss;
        output.WriteLine($"{scheme.Name()}: loss with fake quantization {lossQat:F6}, at Q(W) {lossReplaced:F6}, float {lossPlain:F6}");
        Assert.Equal(lossReplaced, lossQat, 6);

        double worst = 0, plainDifference = 0;
        foreach (var p in qat.Parameters.All)
        {
            var a = qat.Parameters.GradSpan(p);
            var b = replaced.Parameters.GradSpan(replaced.Parameters[p.Name]);
            var c = plain.Parameters.GradSpan(plain.Parameters[p.Name]);
            double norm = 0, diff = 0, diffPlain = 0;
            for (int i = 0; i < a.Length; i++)
            {
                norm += (double)b[i] * b[i];
                diff += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
                diffPlain += ((double)c[i] - b[i]) * ((double)c[i] - b[i]);
            }

            Assert.True(norm > 0, $"{p.Name}: no gradient");
            double relative = Math.Sqrt(diff / norm);
            worst = Math.Max(worst, relative);
            plainDifference = Math.Max(plainDifference, Math.Sqrt(diffPlain / norm));
            Assert.True(relative < 1e-5, $"{p.Name}: gradient differs from the one at Q(W) by {relative:E2} (relative)");
            Assert.Equal(before[p.Name], qat.Parameters.ValueSpan(p).ToArray()); // the float weights are untouched
        }

        output.WriteLine($"worst relative gradient difference against Q(W): {worst:E2}; against float training: {plainDifference:E2}");
        Assert.True(plainDifference > 1e-3, "fake quantization did not change the gradients");
    }

    /// <summary>The default model's folder and its held-out text's token ids, split in two halves (train, eval).</summary>
    private static (string Folder, int[] Train, int[] Eval) DefaultModelHeldOutHalves()
    {
        string folder = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"));
        int[] ids = [.. tokenizer.Encode(File.ReadAllText(Path.Combine(folder, "held-out.txt")), addSpecial: false)];
        return (folder, ids[..(ids.Length / 2)], ids[(ids.Length / 2)..]);
    }

    /// <summary>
    /// A short seeded QAT run on the first part of the default model's held-out text, then RTN Q4_0: perplexity on
    /// the rest of the text against RTN Q4_0 of the original model.
    /// </summary>
    [Fact]
    public void ShortQatRunThenRoundToNearestQ4_0BeatsPlainRoundToNearestOnUnseenText()
    {
        using var pool = new WorkerPool(2);
        var (folder, train, eval) = DefaultModelHeldOutHalves();
        using var original = ModelLoader.LoadModel(folder, pool);
        using var rtn = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = DType.Q4_0 }, pool: pool);
        var baseline = ModelComparison.Compare(original, rtn.Model, eval, ctx: 128, maxChunks: 64);

        // QAT, and the control: the same run with fake quantization off (float fine-tuning on the same text).
        var options = new TrainingOptions { Steps = 40, BatchSize = 8, SequenceLength = 128, LearningRate = 1e-4f, WeightDecay = 0, Seed = 3 };
        using var model = LlamaTrainingModel.Load(folder, pool);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var (steps, cancelled) = QuantizationAwareTraining.Train(model, train, options, DType.Q4_0, pool: pool);
        output.WriteLine($"{steps} QAT steps in {watch.Elapsed.TotalSeconds:F1} s");
        Assert.False(cancelled);
        using var qat = QuantizationAwareTraining.Quantize(model, DType.Q4_0, pool);
        using var qatFloat = QuantizationAwareTraining.AsInferenceModel(model, pool);
        var result = ModelComparison.Compare(qatFloat, qat.Model, eval, ctx: 128, maxChunks: 64);

        using var control = LlamaTrainingModel.Load(folder, pool);
        QuantizationAwareTraining.Train(control, train, options, scheme: null, pool: pool);
        using var controlRtn = QuantizationAwareTraining.Quantize(control, DType.Q4_0, pool);
        using var controlFloat = QuantizationAwareTraining.AsInferenceModel(control, pool);
        var controlResult = ModelComparison.Compare(controlFloat, controlRtn.Model, eval, ctx: 128, maxChunks: 64);
        output.WriteLine($"{eval.Length} unseen tokens ({result.TokensScored} scored), perplexity float → RTN Q4_0 (KL): " +
            $"original {baseline.ReferencePerplexity:F3} → {baseline.Perplexity:F3} ({baseline.MeanKl:F5}); " +
            $"float fine-tune {controlResult.ReferencePerplexity:F3} → {controlResult.Perplexity:F3} ({controlResult.MeanKl:F5}); " +
            $"QAT {result.ReferencePerplexity:F3} → {result.Perplexity:F3} ({result.MeanKl:F5})");
        Assert.True(result.Perplexity < baseline.Perplexity, $"QAT {result.Perplexity} vs RTN {baseline.Perplexity}");
    }

    /// <summary>
    /// Distillation QAT (weights and activations fake-quantized, trained towards the float model's distributions):
    /// its loss, KL from the teacher, falls; and its RTN Q4_0 model is closer to the float original on unseen text
    /// (KL divergence) than plain RTN Q4_0 is.
    /// </summary>
    [Fact]
    public void DistillationQatThenRoundToNearestIsCloserToTheFloatModelThanRoundToNearest()
    {
        using var pool = new WorkerPool(2);
        var (folder, train, eval) = DefaultModelHeldOutHalves();
        using var original = ModelLoader.LoadModel(folder, pool);
        using var rtn = ModelQuantizer.Quantize(original, new QuantizationOptions { Scheme = DType.Q4_0 }, pool: pool);
        var baseline = ModelComparison.Compare(original, rtn.Model, eval, ctx: 128, maxChunks: 64);

        using var model = LlamaTrainingModel.Load(folder, pool);
        using var teacher = new InferenceTeacher(original);
        model.Teacher = teacher;
        var options = new TrainingOptions { Steps = 40, BatchSize = 8, SequenceLength = 128, LearningRate = 1e-4f, WeightDecay = 0, Seed = 3 };
        var losses = new List<double>();
        QuantizationAwareTraining.Train(model, train, options, DType.Q4_0, (_, loss, _) => losses.Add(loss), pool: pool, activations: true);
        model.Teacher = null;
        using var qat = QuantizationAwareTraining.Quantize(model, DType.Q4_0, pool);
        var result = ModelComparison.Compare(original, qat.Model, eval, ctx: 128, maxChunks: 64);
        double first = losses.Take(10).Average(), last = losses.TakeLast(10).Average();
        output.WriteLine($"training KL, first 10 steps {first:F5}, last 10 {last:F5}; on {eval.Length} unseen tokens against the float model: " +
            $"RTN Q4_0 perplexity {baseline.Perplexity:F3}, KL {baseline.MeanKl:F5}; distilled QAT then RTN {result.Perplexity:F3}, KL {result.MeanKl:F5} (float {baseline.ReferencePerplexity:F3})");
        Assert.True(last < first * 0.9, $"distillation loss {first} → {last}");
        Assert.True(result.MeanKl < baseline.MeanKl, $"KL after distillation QAT {result.MeanKl} vs RTN {baseline.MeanKl}");
    }

    [Fact]
    public void QatCommand_ShortRun_WritesAQuantizedGgufThatLoads()
    {
        using var temp = new TempFolder();
        string folder = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        File.WriteAllText(temp.File("t.txt"), File.ReadAllText(Path.Combine(folder, "held-out.txt"))[..20000]);
        string target = temp.File("qat.gguf");
        var result = CliHarness.Run(["qat", folder, "--data", temp.File("t.txt"), "--out", target, "--scheme", "int4", "--group", "64",
            "--steps", "2", "--batch", "2", "--ctx", "32"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        using var model = ModelLoader.LoadModel(target);
        Assert.Equal(DType.Q4_1_G64, model.Weights.Get("model.layers.0.mlp.up_proj.weight").Type);
        Assert.Empty(Directory.GetFiles(temp.Path, "*.tmp"));
    }

    /// <summary>
    /// The distillation loss KL(p_t ‖ p_s) summed over rows with a target: its gradient against central differences
    /// in the student's logits, zero loss and gradient for a student equal to the teacher, and skipped rows.
    /// </summary>
    [Fact]
    public void DistillationLossGradientMatchesFiniteDifferencesAndVanishesAtTheTeacher()
    {
        const int rows = 4, vocab = 11;
        var rng = new SplitMix64(21);
        var student = new float[rows * vocab];
        var teacher = new float[rows * vocab];
        for (int i = 0; i < student.Length; i++)
        {
            student[i] = (float)(rng.NextGaussian() * 2);
            teacher[i] = (float)(rng.NextGaussian() * 2);
        }

        int[] targets = [3, -1, 0, 7];
        using var pool = new WorkerPool(2);
        var rowLoss = new float[rows];
        double Loss(float[] s)
        {
            var copy = (float[])s.Clone();
            fixed (float* ps = copy, pt = teacher, pl = rowLoss)
            fixed (int* tg = targets)
            {
                return DistillationLossOp.Compute(ps, pt, tg, rows, vocab, pl, writeGradient: false, 1f, pool);
            }
        }

        // The loss against a direct evaluation of Σ_v p_t (log p_t − log p_s) in double.
        double expected = 0;
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] < 0)
            {
                continue;
            }

            double[] logPs = LogSoftmax(student.AsSpan(r * vocab, vocab)), logPt = LogSoftmax(teacher.AsSpan(r * vocab, vocab));
            for (int v = 0; v < vocab; v++)
            {
                expected += Math.Exp(logPt[v]) * (logPt[v] - logPs[v]);
            }
        }

        double loss = Loss(student);
        Assert.True(loss > 0.1, $"loss {loss}");
        Assert.Equal(expected, loss, 5);

        var gradient = (float[])student.Clone();
        fixed (float* ps = gradient, pt = teacher, pl = rowLoss)
        fixed (int* tg = targets)
        {
            DistillationLossOp.Compute(ps, pt, tg, rows, vocab, pl, writeGradient: true, 1f, pool);
        }

        const float h = 1e-2f;
        for (int i = 0; i < student.Length; i++)
        {
            var plus = (float[])student.Clone();
            var minus = (float[])student.Clone();
            plus[i] += h;
            minus[i] -= h;
            double numeric = (Loss(plus) - Loss(minus)) / (2 * h);
            Assert.True(Math.Abs(numeric - gradient[i]) < 1e-3, $"logit {i}: analytic {gradient[i]}, numeric {numeric}");
        }

        Assert.All(gradient.AsSpan(vocab, vocab).ToArray(), g => Assert.Equal(0f, g)); // the row without a target

        var same = (float[])teacher.Clone();
        fixed (float* ps = same, pt = teacher, pl = rowLoss)
        fixed (int* tg = targets)
        {
            Assert.Equal(0, DistillationLossOp.Compute(ps, pt, tg, rows, vocab, pl, writeGradient: true, 1f, pool), 9);
        }

        Assert.All(same, g => Assert.True(Math.Abs(g) < 1e-7, $"gradient {g} at the teacher"));
    }

    private static double[] LogSoftmax(ReadOnlySpan<float> row)
    {
        double max = double.NegativeInfinity;
        foreach (float x in row)
        {
            max = Math.Max(max, x);
        }

        double sum = 0;
        foreach (float x in row)
        {
            sum += Math.Exp(x - max);
        }

        var result = new double[row.Length];
        for (int i = 0; i < row.Length; i++)
        {
            result[i] = row[i] - max - Math.Log(sum);
        }

        return result;
    }

    /// <summary>
    /// With weights and activations fake-quantized, the training model's loss on real text (per window) is far
    /// closer to the quantized inference model's, whose integer kernels quantize activations to 8 bits per block of
    /// 32, than with the weights alone fake-quantized.
    /// </summary>
    [Theory]
    [InlineData(DType.Q4_0)]
    [InlineData(DType.Q4_1_G64)]
    public void WeightAndActivationFakeQuantizationGivesTheQuantizedEnginesLoss(DType scheme)
    {
        string folder = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        using var pool = new WorkerPool(2);
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"));
        const int seq = 64, windows = 16;
        int[] ids = [.. tokenizer.Encode(File.ReadAllText(Path.Combine(folder, "held-out.txt")), addSpecial: false).Take((seq * windows) + 1)];
        using var model = LlamaTrainingModel.Load(folder, pool);
        using var quantized = QuantizationAwareTraining.Quantize(model, scheme, pool);
        double[] engine = EngineWindowNll(quantized.Model, ids, seq);
        model.EnableFakeQuantization(scheme);
        double[] weightsOnly = WindowNll(model, ids, seq);
        model.EnableFakeQuantization(scheme, activations: true);
        double[] both = WindowNll(model, ids, seq);
        static double Rms(double[] a, double[] b) => Math.Sqrt(a.Zip(b, (x, y) => (x - y) * (x - y)).Average());
        double rmsWeightsOnly = Rms(weightsOnly, engine), rmsBoth = Rms(both, engine);
        output.WriteLine($"{scheme.Name()}: NLL per window of {seq}, RMS difference from the quantized engine: fake-quantized weights {rmsWeightsOnly:E2}, weights and activations {rmsBoth:E2}");
        // Not exact: the engine sums integer products and the training model float ones, and a last-bit difference
        // that moves a value across a rounding boundary flips its code in every later quantization. Measured: 5.8x
        // (Q4_0) and 4.6x (Q4_1_G64) closer with the activations fake-quantized.
        Assert.True(rmsBoth * 3 < rmsWeightsOnly, "activation fake quantization does not bring the loss to the engine's");
    }

    private static double[] WindowNll(LlamaTrainingModel model, int[] ids, int seq)
    {
        var result = new double[(ids.Length - 1) / seq];
        for (int w = 0; w < result.Length; w++)
        {
            result[w] = model.Evaluate(ids.AsSpan(w * seq, seq), ids.AsSpan((w * seq) + 1, seq), 1, seq).TotalLoss;
        }

        return result;
    }

    private static double[] EngineWindowNll(TransformerModel model, int[] ids, int seq)
    {
        var result = new double[(ids.Length - 1) / seq];
        int vocab = model.Config.VocabSize;
        using var cache = new KvCache(model.Config, seq);
        var logits = new float[seq * vocab];
        for (int w = 0; w < result.Length; w++)
        {
            cache.Clear();
            fixed (float* p = logits)
            {
                model.Forward(ids.AsSpan(w * seq, seq), cache, p, allLogits: true);
            }

            for (int i = 0; i < seq; i++)
            {
                result[w] -= LogSoftmax(logits.AsSpan(i * vocab, vocab))[ids[(w * seq) + i + 1]];
            }
        }

        return result;
    }

    [Fact]
    public void QatCommand_DistillingFromTokenIdsWithActivations_WritesAModelThatLoads()
    {
        using var temp = new TempFolder();
        string folder = Path.Combine(SharedData.RepositoryRoot, "models", "default");
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"));
        var ids = tokenizer.Encode(File.ReadAllText(Path.Combine(folder, "held-out.txt"))[..20000], addSpecial: false);
        File.WriteAllText(temp.File("ids.txt"), string.Join(' ', ids));
        string target = temp.File("qat.gguf");
        var result = CliHarness.Run(["qat", folder, "--ids", temp.File("ids.txt"), "--distill", "--activations", "--out", target,
            "--scheme", "int3", "--group", "64", "--steps", "2", "--batch", "2", "--ctx", "32"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("of weights and activations, distilled from the float model", result.Stderr);
        using var model = ModelLoader.LoadModel(target);
        Assert.Equal(DType.Q3_1_G64, model.Weights.Get("model.layers.0.mlp.up_proj.weight").Type);

        CliHarness.AssertFails(["qat", folder, "--ids", temp.File("ids.txt"), "--data", temp.File("ids.txt"), "--out", temp.File("x.gguf")], "one of the two");
        File.WriteAllText(temp.File("bad.txt"), "1 2 999999");
        CliHarness.AssertFails(["qat", folder, "--ids", temp.File("bad.txt"), "--out", temp.File("x.gguf")], "outside the model's vocabulary");
        Assert.Empty(Directory.GetFiles(temp.Path, "*.tmp"));
    }

    [Fact]
    public void QatCommand_BadGroup_FailsWithOneClearLine()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("t.txt"), "some text");
        CliHarness.AssertFails(["qat", "--data", temp.File("t.txt"), "--out", temp.File("o.gguf"), "--scheme", "int4", "--group", "48"], "--group must be");
    }
}
