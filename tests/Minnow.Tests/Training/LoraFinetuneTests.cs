using System.Globalization;
using System.Text;
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
/// A short seeded LoRA fine-tune of the shipped default model (trained on the King James Bible) on a small text from
/// another domain: ship's log entries, generated here so that the test owns its data.
/// </summary>
public class LoraFinetuneTests(ITestOutputHelper output)
{
    private static string DefaultFolder => Path.Combine(SharedData.RepositoryRoot, "models", "default");

    /// <summary>About 8 KB of log entries ("Day 3. Wind NE force 4, sea moderate, ...") from a fixed seed.</summary>
    public static string ShipsLog(int entries = 80)
    {
        string[] winds = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"];
        string[] seas = ["calm", "slight", "moderate", "rough"];
        string[] skies = ["clear", "overcast", "fog banks to the north", "rain squalls", "fair with high cloud"];
        string[] events = ["Sighted a schooner bound south.", "Reefed the mainsail.", "Pumped the bilge.", "Took a sounding of 40 fathoms.",
            "Shook out the reef.", "Crew employed mending sails.", "Lost a line overboard.", "Spoke the brig Hope, all well."];
        var rng = new SplitMix64(2024);
        var sb = new StringBuilder();
        for (int day = 1; day <= entries; day++)
        {
            sb.Append(CultureInfo.InvariantCulture,
                $"Day {day}. Wind {winds[rng.NextInt(winds.Length)]} force {1 + rng.NextInt(7)}, sea {seas[rng.NextInt(seas.Length)]}, " +
                $"sky {skies[rng.NextInt(skies.Length)]}. Barometer {990 + rng.NextInt(40)} hPa. Noon position {30 + rng.NextInt(20)} N " +
                $"{10 + rng.NextInt(30)} W, course {rng.NextInt(36) * 10} degrees, {40 + rng.NextInt(120)} miles run. " +
                $"{events[rng.NextInt(events.Length)]}\n");
        }

        return sb.ToString();
    }

    [Fact]
    public void Finetune_LowersTheDomainTextsPerplexity_WithAnAdapterUnder2PercentOfTheBase()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("log.txt"), ShipsLog());
        var options = new LoraFinetuneOptions
        {
            ModelPath = DefaultFolder,
            DataPath = temp.File("log.txt"),
            OutputFolder = temp.File("adapter"),
            Rank = 8,
            Alpha = 32,
            Targets = [LoraTarget.QProj, LoraTarget.VProj],
            Steps = 30,
            BatchSize = 4,
            Context = 64,
            LearningRate = 3e-3f,
            Seed = 1,
        };
        var s = LoraFinetune.Run(options);
        output.WriteLine(LoraFinetune.SummaryJson(s, options, indented: true));
        Assert.False(s.Cancelled);
        Assert.Equal(30, s.Steps);
        Assert.True(s.HeldOutLossBefore is double, "no held-out text was measured");
        double before = Math.Exp(s.HeldOutLossBefore!.Value), after = Math.Exp(s.HeldOutLossAfter!.Value);
        // Measured: held-out perplexity 6139 → 138 (the base never saw numbers or sailing terms); asked: a tenth at most.
        Assert.True(after < before / 10, $"held-out perplexity {before:F1} → {after:F1}");
        Assert.True(s.TrainLossAfter < s.TrainLossBefore - 0.5, $"train loss {s.TrainLossBefore:F3} → {s.TrainLossAfter:F3}");

        long adapterBytes = new FileInfo(temp.File(Path.Combine("adapter", "adapter_model.safetensors"))).Length;
        long baseBytes = new FileInfo(Path.Combine(DefaultFolder, "model.safetensors")).Length;
        Assert.Equal(adapterBytes, s.AdapterBytes);
        Assert.True(adapterBytes < 0.02 * baseBytes, $"adapter {adapterBytes} bytes vs base {baseBytes}");
        Assert.True(s.AdapterParameters < 0.02 * s.BaseParameters);
        Assert.Empty(Directory.GetFiles(temp.File("adapter"), "*.tmp"));

        // The saved adapter gives the inference engine the same improvement.
        var ppl = CliHarness.Run("perplexity", DefaultFolder, "--text", temp.File("log.txt"), "--ctx", "64", "--chunks", "8", "--json");
        var pplAdapted = CliHarness.Run("perplexity", DefaultFolder, "--text", temp.File("log.txt"), "--ctx", "64", "--chunks", "8", "--json",
            "--adapter", temp.File("adapter"));
        Assert.True(ppl.ExitCode == 0, ppl.ToString());
        Assert.True(pplAdapted.ExitCode == 0, pplAdapted.ToString());
        double basePpl = ppl.Json().GetProperty("ppl").GetDouble(), adaptedPpl = pplAdapted.Json().GetProperty("ppl").GetDouble();
        output.WriteLine($"minnow perplexity (ctx 64, 8 windows): {basePpl:F1} → {adaptedPpl:F1} with --adapter");
        Assert.True(adaptedPpl < basePpl / 10, $"{basePpl} → {adaptedPpl}");
    }

    /// <summary>
    /// A GGUF base holds q/k rows in llama.cpp's interleaved-RoPE order; fine-tuning puts them back in Hugging Face
    /// order, so an F32 GGUF of the default model trains the same adapter as the Hugging Face folder.
    /// </summary>
    [Fact]
    public void Finetune_FromAnF32GgufBase_TrainsTheSameAdapterAsFromTheHuggingFaceFolder()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("log.txt"), ShipsLog(30));
        using (var model = ModelLoader.LoadModel(DefaultFolder))
        {
            GgufExporter.Export(model, temp.File("base.gguf"), DType.F32,
                GgufTokenizerMetadata.For(DefaultFolder, ModelFormat.HuggingFace, model.Config.VocabSize).Write);
        }

        LoraFinetuneSummary Run(string model, string folder) => LoraFinetune.Run(new LoraFinetuneOptions
        {
            ModelPath = model,
            DataPath = temp.File("log.txt"),
            OutputFolder = temp.File(folder),
            Targets = [LoraTarget.QProj, LoraTarget.KProj],
            Steps = 3,
            BatchSize = 2,
            Context = 32,
        });

        var fromFolder = Run(DefaultFolder, "hf");
        var fromGguf = Run(temp.File("base.gguf"), "gguf");
        output.WriteLine($"train loss before/after: folder {fromFolder.TrainLossBefore:F6}/{fromFolder.TrainLossAfter:F6}, GGUF {fromGguf.TrainLossBefore:F6}/{fromGguf.TrainLossAfter:F6}");
        Assert.Equal(fromFolder.TrainLossBefore, fromGguf.TrainLossBefore, 5);
        Assert.Equal(fromFolder.TrainLossAfter, fromGguf.TrainLossAfter, 4);
        using var a = SafetensorsFile.Open(temp.File(Path.Combine("hf", "adapter_model.safetensors")));
        using var b = SafetensorsFile.Open(temp.File(Path.Combine("gguf", "adapter_model.safetensors")));
        Assert.Equal(a.Tensors.Keys.Order(), b.Tensors.Keys.Order());
        foreach (var (name, t) in a.Tensors)
        {
            var x = t.ToFloatArray();
            var y = b.Tensors[name].ToFloatArray();
            Assert.True(x.Zip(y, (p, q) => Math.Abs(p - q)).Max() < 1e-4, name);
        }
    }

    [Fact]
    public void FinetuneCommand_WritesPeftFiles_AndMergeWritesAModel()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("log.txt"), ShipsLog(30));
        var result = CliHarness.Run("finetune", DefaultFolder, "--data", temp.File("log.txt"), "--out", temp.File("adapter"), "--lora-rank", "4",
            "--lora-alpha", "8", "--targets", "o_proj,down_proj", "--steps", "3", "--batch", "2", "--context", "32", "--json");
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(3, json.GetProperty("steps").GetInt32());
        Assert.Equal(["o_proj", "down_proj"], json.GetProperty("targets").EnumerateArray().Select(e => e.GetString()));
        var config = LoraConfig.Load(temp.File(Path.Combine("adapter", "adapter_config.json")));
        Assert.Equal(4, config.Rank);
        Assert.Equal(2f, config.Scale);
        using (var file = SafetensorsFile.Open(temp.File(Path.Combine("adapter", "adapter_model.safetensors"))))
        {
            Assert.Equal(4 * 2 * 2, file.Tensors.Count);
            Assert.Contains("base_model.model.model.layers.3.mlp.down_proj.lora_B.weight", file.Tensors.Keys);
        }

        var merged = CliHarness.Run("merge", DefaultFolder, "--adapter", temp.File("adapter"), "--out", temp.File("merged"), "--json");
        Assert.True(merged.ExitCode == 0, merged.ToString());
        Assert.Equal(8, merged.Json().GetProperty("merged_layers").GetInt32());
        var generated = CliHarness.Run("generate", temp.File("merged"), "-p", "Day 4. Wind", "-n", "4", "--temp", "0", "--json");
        Assert.True(generated.ExitCode == 0, generated.ToString());
    }

    [Fact]
    public void Finetune_Cancelled_SavesTheAdapterTrainedSoFarAndExits130()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("log.txt"), ShipsLog(30));
        using var cts = new CancellationTokenSource();
        var options = new LoraFinetuneOptions
        {
            ModelPath = DefaultFolder,
            DataPath = temp.File("log.txt"),
            OutputFolder = temp.File("adapter"),
            Steps = 50,
            BatchSize = 2,
            Context = 32,
        };
        var s = LoraFinetune.Run(options, p =>
        {
            if (p.Phase == "training" && p.Step == 2)
            {
                cts.Cancel(); // as Ctrl+C would, mid-run
            }
        }, cts.Token);
        Assert.True(s.Cancelled);
        Assert.Equal(2, s.Steps);
        using (var adapter = LoraAdapter.Load(temp.File("adapter"), ModelConfig.FromHuggingFace(Path.Combine(DefaultFolder, "config.json"))))
        {
            Assert.Equal(8, adapter.Modules.Count);
            Assert.Contains(adapter.Modules.Values, m => m.ScaledB.Any(v => v != 0)); // two steps moved B off zero
        }

        using var stop = new CancellationTokenSource();
        stop.Cancel();
        var result = CliHarness.Run(["finetune", DefaultFolder, "--data", temp.File("log.txt"), "--out", temp.File("cli"), "--context", "32"], stop.Token);
        Assert.True(result.ExitCode == 130, result.ToString());
        Assert.True(File.Exists(temp.File(Path.Combine("cli", "adapter_model.safetensors"))), result.ToString());
    }

    [Fact]
    public void Finetune_BadTargets_FailsWithOneClearLine()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("log.txt"), ShipsLog(5));
        CliHarness.AssertFails(["finetune", DefaultFolder, "--data", temp.File("log.txt"), "--out", temp.File("a"), "--targets", "q_proj,qkv"],
            "'qkv' is not a target module");
        CliHarness.AssertFails(["finetune", DefaultFolder, "--data", temp.File("missing.txt"), "--out", temp.File("a")], "data file not found");
    }
}
