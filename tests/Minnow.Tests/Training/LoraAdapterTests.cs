using System.Text.Json;
using Minnow.Export;
using Minnow.Formats.Safetensors;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;
using Minnow.Tests.Cli;
using Minnow.Training;
using Xunit.Abstractions;
using CliHarness = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Training;

/// <summary>
/// LoRA adapters on the shipped default model: PEFT's file layout, unmerged application equal to merging, the same
/// logits in the training and inference engines, and clear errors for adapters that do not fit.
/// </summary>
public unsafe class LoraAdapterTests(ITestOutputHelper output)
{
    internal static string DefaultFolder => Path.Combine(SharedData.RepositoryRoot, "models", "default");

    internal static ModelConfig DefaultConfig() => ModelConfig.FromHuggingFace(Path.Combine(DefaultFolder, "config.json"));

    /// <summary>A seeded adapter with PEFT's A and a random non-zero B (a trained adapter's B is not zero).</summary>
    internal static LoraLayers RandomAdapter(ModelConfig config, IReadOnlyList<LoraTarget> targets, int rank = 8, float alpha = 32)
    {
        var lora = new LoraLayers(config, new LoraConfig { Rank = rank, Alpha = alpha, Targets = targets });
        lora.Initialize(seed: 3);
        var rng = new SplitMix64(21);
        foreach (var p in lora.Parameters.All.Where(p => p.Name.Contains(".lora_B.", StringComparison.Ordinal)))
        {
            var v = lora.Parameters.ValueSpan(p);
            for (int i = 0; i < v.Length; i++)
            {
                v[i] = (float)(rng.NextGaussian() * 0.02);
            }
        }

        return lora;
    }

    private static int[] Tokens(int count)
    {
        var rng = new SplitMix64(8);
        return Enumerable.Range(0, count).Select(_ => rng.NextInt(2047)).ToArray();
    }

    [Fact]
    public void Save_WritesPeftNamesShapesAndConfigFields()
    {
        using var temp = new TempFolder();
        var config = DefaultConfig();
        using (var lora = RandomAdapter(config, LoraTargets.ParseList("v_proj,q_proj")))
        {
            lora.Save(temp.Path, "models/default");
        }

        Assert.Equal(["adapter_config.json", "adapter_model.safetensors"], Directory.GetFiles(temp.Path).Select(Path.GetFileName).Order());
        using (var doc = JsonDocument.Parse(File.ReadAllText(temp.File("adapter_config.json"))))
        {
            var c = doc.RootElement;
            Assert.Equal("LORA", c.GetProperty("peft_type").GetString());
            Assert.Equal(8, c.GetProperty("r").GetInt32());
            Assert.Equal(32, c.GetProperty("lora_alpha").GetDouble());
            Assert.Equal(["q_proj", "v_proj"], c.GetProperty("target_modules").EnumerateArray().Select(e => e.GetString()));
            Assert.Equal(0, c.GetProperty("lora_dropout").GetDouble());
            Assert.Equal("none", c.GetProperty("bias").GetString());
            Assert.Equal("CAUSAL_LM", c.GetProperty("task_type").GetString());
            Assert.Equal("models/default", c.GetProperty("base_model_name_or_path").GetString());
            Assert.False(c.GetProperty("fan_in_fan_out").GetBoolean());
            Assert.True(c.GetProperty("inference_mode").GetBoolean());
        }

        using var file = SafetensorsFile.Open(temp.File("adapter_model.safetensors"));
        var expected = new List<string>();
        for (int l = 0; l < config.Layers; l++)
        {
            foreach (string module in new[] { "q_proj", "v_proj" })
            {
                string prefix = $"base_model.model.model.layers.{l}.self_attn.{module}.";
                int outDim = module == "q_proj" ? config.QDim : config.KvDim;
                var a = file.Tensors[prefix + "lora_A.weight"];
                var b = file.Tensors[prefix + "lora_B.weight"];
                Assert.Equal([8L, config.HiddenSize], a.Shape);
                Assert.Equal([(long)outDim, 8L], b.Shape);
                Assert.Equal(DType.F32, a.Type);
                Assert.Equal(DType.F32, b.Type);
                expected.Add(prefix + "lora_A.weight");
                expected.Add(prefix + "lora_B.weight");
            }
        }

        Assert.Equal(expected.Order(), file.Tensors.Keys.Order());
        Assert.Equal("pt", file.Metadata["format"]);
    }

    /// <summary>
    /// Every linear layer adapted: the inference engine with the adapter unmerged (a prompt in one batch, then
    /// single-token decoding steps, which take the few-token path), the same model after <c>minnow merge</c>, and
    /// the training engine with the adapter attached all give the same logits; the adapter changes them clearly.
    /// </summary>
    [Fact]
    public void MergedAndUnmerged_GiveTheSameLogits_OnTheDefaultModel()
    {
        using var temp = new TempFolder();
        var config = DefaultConfig();
        const int prompt = 24, steps = 3, total = prompt + steps;
        int vocab = config.VocabSize;
        int[] tokens = Tokens(total);
        string adapterFolder = temp.File("adapter");
        var trainingLogits = new float[total * vocab];
        using (var training = LlamaTrainingModel.Load(DefaultFolder))
        using (var lora = RandomAdapter(config, LoraTargets.All))
        {
            lora.Save(adapterFolder);
            training.AttachLora(lora);
            var (loss, _) = training.Evaluate(tokens[..^1], tokens[1..], 1, total - 1);
            output.WriteLine($"training engine with the adapter: mean NLL {loss / (total - 1):F4}");
        }

        float[] Logits(TransformerModel model, LoraAdapter? adapter = null)
        {
            var logits = new float[total * vocab];
            using var cache = new KvCache(model.Config, total);
            fixed (float* p = logits)
            {
                model.Forward(tokens.AsSpan(0, prompt), cache, p, allLogits: true, adapter);
                for (int t = prompt; t < total; t++)
                {
                    model.Forward(tokens.AsSpan(t, 1), cache, p + ((long)t * vocab), allLogits: true, adapter);
                }
            }

            return logits;
        }

        float[] baseLogits, unmerged, merged;
        using (var model = ModelLoader.LoadModel(DefaultFolder))
        {
            baseLogits = Logits(model);
            using var adapter = LoraAdapter.Load(adapterFolder, model.Config);
            Assert.Equal(config.Layers * 7, adapter.Modules.Count);
            unmerged = Logits(model, adapter);
        }

        var result = LoraMerge.Run(DefaultFolder, adapterFolder, temp.File("merged"));
        Assert.Equal(config.Layers * 7, result.MergedLayers);
        Assert.True(result.TokenizerCopied);
        using (var model = ModelLoader.LoadModel(temp.File("merged")))
        {
            merged = Logits(model);
        }

        double MaxDiff(float[] x, float[] y) => x.Zip(y, (a, b) => Math.Abs((double)a - b)).Max();
        double effect = MaxDiff(baseLogits, unmerged);
        double mergeError = MaxDiff(unmerged, merged);
        double scale = unmerged.Max(Math.Abs);
        output.WriteLine($"adapter moves logits by up to {effect:F3}; merged vs unmerged differ by at most {mergeError:E2} (logits up to {scale:F1})");
        Assert.True(effect > 0.5, $"the adapter barely changes the logits ({effect})");
        Assert.True(mergeError < 1e-3, $"merged and unmerged logits differ by {mergeError}");
    }

    /// <summary>The training engine's forward pass with the adapter attached equals the inference engine's unmerged one.</summary>
    [Fact]
    public void TrainingAndInferenceEngines_AgreeWithTheAdapter()
    {
        using var temp = new TempFolder();
        var config = DefaultConfig();
        const int count = 32;
        int[] tokens = Tokens(count + 1);
        double trainingNll;
        using (var training = LlamaTrainingModel.Load(DefaultFolder))
        using (var lora = RandomAdapter(config, LoraTargets.ParseList("q_proj,k_proj,o_proj,up_proj")))
        {
            lora.Save(temp.File("adapter"));
            training.AttachLora(lora);
            var (totalNll, n) = training.Evaluate(tokens[..^1], tokens[1..], 1, count);
            trainingNll = totalNll / n;
        }

        using var model = ModelLoader.LoadModel(DefaultFolder);
        using var adapter = LoraAdapter.Load(temp.File("adapter"), model.Config);
        int vocab = config.VocabSize;
        var logits = new float[count * vocab];
        using var cache = new KvCache(model.Config, count);
        fixed (float* p = logits)
        {
            model.Forward(tokens.AsSpan(0, count), cache, p, allLogits: true, adapter);
        }

        double sum = 0;
        for (int t = 0; t < count; t++)
        {
            var row = logits.AsSpan(t * vocab, vocab);
            float max = row.ToArray().Max();
            double z = 0;
            foreach (float v in row)
            {
                z += Math.Exp(v - max);
            }

            sum += Math.Log(z) + max - row[tokens[t + 1]];
        }

        double inferenceNll = sum / count;
        output.WriteLine($"mean NLL: training engine {trainingNll:F6}, inference engine {inferenceNll:F6}");
        Assert.True(Math.Abs(trainingNll - inferenceNll) < 1e-4 * inferenceNll, $"{trainingNll} vs {inferenceNll}");
    }

    /// <summary>
    /// The adapter unmerged on GGUF bases (llama.cpp's q/k row order, interleaved RoPE): on F32 it gives the Hugging Face
    /// base's adapted logits; on Q8_0 and Q4_0 it moves the logits as it moves the F32 model's, within the base's own
    /// quantization error (measured on Q8_0: effect differs by 0.077, base logits by 0.11; Q4_0: 0.15 and 0.58).
    /// </summary>
    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q4_0)]
    public void Unmerged_OnGgufBases_MatchesTheHuggingFaceBase(DType type)
    {
        using var temp = new TempFolder();
        var config = DefaultConfig();
        const int count = 8;
        int vocab = config.VocabSize;
        int[] tokens = Tokens(count);
        using (var lora = RandomAdapter(config, LoraTargets.ParseList("q_proj,k_proj,v_proj,down_proj")))
        {
            lora.Save(temp.File("adapter"));
        }

        float[] Logits(TransformerModel model, LoraAdapter? adapter = null)
        {
            var logits = new float[count * vocab];
            using var cache = new KvCache(model.Config, count);
            fixed (float* p = logits)
            {
                model.Forward(tokens, cache, p, allLogits: true, adapter);
            }

            return logits;
        }

        (float[] Base, float[] Adapted) Both(TransformerModel model)
        {
            var plain = Logits(model);
            using var adapter = LoraAdapter.Load(temp.File("adapter"), model.Config);
            var adapted = Logits(model, adapter);
            return (plain, adapted);
        }

        float[] hfBase, hfAdapted, ggufBase, ggufAdapted;
        using (var hf = ModelLoader.LoadModel(DefaultFolder))
        {
            (hfBase, hfAdapted) = Both(hf);
            GgufExporter.Export(hf, temp.File("base.gguf"), type);
        }

        using (var gguf = ModelLoader.LoadModel(temp.File("base.gguf")))
        {
            Assert.Equal(Minnow.Kernels.RopeStyle.InterleavedRows, gguf.Config.RopeStyle);
            (ggufBase, ggufAdapted) = Both(gguf);
        }

        // Compare the adapter's effect (adapted − base) so that the base's own quantization error cancels.
        double worst = 0, effect = 0, baseError = 0;
        for (int i = 0; i < hfBase.Length; i++)
        {
            baseError = Math.Max(baseError, Math.Abs(hfBase[i] - ggufBase[i]));
            double hfDelta = hfAdapted[i] - hfBase[i], ggufDelta = ggufAdapted[i] - ggufBase[i];
            worst = Math.Max(worst, Math.Abs(hfDelta - ggufDelta));
            effect = Math.Max(effect, Math.Abs(hfDelta));
        }

        output.WriteLine($"{type}: the adapter moves logits by up to {effect:F3}; on the GGUF base its effect differs by at most {worst:E2} (base logits differ by {baseError:E2})");
        Assert.True(effect > 0.5, $"the adapter barely changes the logits ({effect})");
        Assert.True(worst <= Math.Max(1e-3, baseError), $"{type}: the adapter's effect differs by {worst}, more than the base's own error {baseError}");
    }

    [Fact]
    public void Load_WrongShape_NamesTheTensorAndTheExpectedShape()
    {
        using var temp = new TempFolder();
        var other = LlamaTrainingModel.CreateConfig(vocab: 2048, hidden: 128, layers: 2, heads: 4, kvHeads: 2, ffn: 256, maxPositions: 64);
        using (var lora = RandomAdapter(other, [LoraTarget.QProj]))
        {
            lora.Save(temp.Path);
        }

        var e = Assert.Throws<MinnowException>(() => LoraAdapter.Load(temp.Path, DefaultConfig()));
        Assert.Contains("'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape [8, 128]", e.Message);
        Assert.Contains("expects [8, 256]", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        CliHarness.AssertFails(["perplexity", DefaultFolder, "--text", Path.Combine(DefaultFolder, "tokenizer_config.json"), "--adapter", temp.Path],
            "q_proj.lora_A.weight", "expects [8, 256]");
    }

    [Fact]
    public void Load_TensorOutsideTargetModulesOrLayers_IsAClearError()
    {
        using var temp = new TempFolder();
        var config = DefaultConfig();
        using (var lora = RandomAdapter(config, [LoraTarget.QProj, LoraTarget.VProj]))
        {
            lora.Save(temp.Path);
        }

        string configPath = temp.File("adapter_config.json");
        string original = File.ReadAllText(configPath);
        File.WriteAllText(configPath, original.Replace("\"v_proj\"", "\"w_proj\"", StringComparison.Ordinal));
        CliHarness.AssertFails(["generate", DefaultFolder, "-p", "In the beginning", "-n", "2", "--adapter", temp.Path], "'w_proj' is not a target module");

        File.WriteAllText(configPath, original.Replace("\"v_proj\"", "\"k_proj\"", StringComparison.Ordinal));
        var e = Assert.Throws<MinnowException>(() => LoraAdapter.Load(temp.Path, config));
        Assert.Contains("'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight' adapts v_proj", e.Message);

        var deeper = config with { Layers = 2 };
        File.WriteAllText(configPath, original);
        e = Assert.Throws<MinnowException>(() => LoraAdapter.Load(temp.Path, deeper));
        Assert.Contains("but the model has 2 layers", e.Message);
    }

    [Fact]
    public void Merge_MissingAdapter_FailsWithOneClearLine()
    {
        using var temp = new TempFolder();
        CliHarness.AssertFails(["merge", DefaultFolder, "--adapter", temp.File("none"), "--out", temp.File("out")], "adapter folder not found");
    }
}
