using System.Text;
using Minnow.Loading;
using Minnow.Tests.Cli;
using Minnow.Tokenizers;
using Minnow.Training;
using CliHarness = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Training;

public class TrainCommandTests
{
    private static string SampleText()
    {
        var sb = new StringBuilder();
        string[] words = ["the", "light", "was", "good", "and", "God", "said", "let", "there", "be", "waters", "earth", "heaven", "form"];
        var rng = new SplitMix64(17);
        for (int line = 0; line < 300; line++)
        {
            int n = 4 + rng.NextInt(8);
            for (int w = 0; w < n; w++)
            {
                sb.Append(w == 0 ? "" : " ").Append(words[rng.NextInt(words.Length)]);
            }

            sb.Append(".\n");
        }

        return sb.ToString();
    }

    private static readonly string[] TinyShape =
        ["--vocab", "300", "--hidden", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--ctx", "16", "--batch", "2"];

    [Fact]
    public void Train_MissingDataFile_FailsWithOneClearLine()
    {
        using var temp = new TempFolder();
        CliHarness.AssertFails(["train", "--data", temp.File("nope.txt"), "--out", temp.File("out")], "data file not found");
    }

    [Fact]
    public void Train_EmptyText_FailsWithOneClearLine()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("empty.txt"), " \n\n ");
        CliHarness.AssertFails(["train", "--data", temp.File("empty.txt"), "--out", temp.File("out")], "no text");
    }

    [Fact]
    public void Train_BadShape_FailsWithOneClearLine()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("t.txt"), SampleText());
        CliHarness.AssertFails(["train", "--data", temp.File("t.txt"), "--out", temp.File("out"), "--hidden", "30", "--heads", "4"], "--hidden 30");
    }

    [Fact]
    public void Train_TinyRun_WritesALoadableHuggingFaceFolder()
    {
        using var temp = new TempFolder();
        string text = SampleText();
        File.WriteAllText(temp.File("t.txt"), text);
        string output = temp.File("model");
        var result = CliHarness.Run(["train", "--data", temp.File("t.txt"), "--out", output, .. TinyShape, "--steps", "6", "--json"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        var json = result.Json();
        Assert.Equal(6, json.GetProperty("steps").GetInt32());
        Assert.True(json.GetProperty("held_out_loss").GetDouble() > 0);

        foreach (string f in new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "held-out.txt", "checkpoint.safetensors" })
        {
            Assert.True(File.Exists(Path.Combine(output, f)), f);
        }

        string heldOut = File.ReadAllText(Path.Combine(output, "held-out.txt"));
        Assert.True(heldOut.Length > 0 && text.EndsWith(heldOut, StringComparison.Ordinal));
        Assert.InRange(heldOut.Length, text.Length * 0.04, text.Length * 0.06);

        using var model = ModelLoader.LoadModel(output);
        Assert.Equal("llama", model.Config.ModelType);
        Assert.Equal(32, model.Config.HiddenSize);
        Assert.True(model.Config.TieEmbeddings);
        var tokenizer = TokenizerLoader.FromTokenizerJson(Path.Combine(output, "tokenizer.json"));
        Assert.Equal(model.Config.VocabSize, tokenizer.VocabSize);
        Assert.Equal(heldOut, tokenizer.Decode(tokenizer.Encode(heldOut, addSpecial: false)));
    }

    [Fact]
    public void Run_CancelledThenResumed_EndsWithTheSameWeightsAsAStraightRun()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("t.txt"), SampleText());
        TrainingRunOptions Options(string folder) => new()
        {
            DataPath = temp.File("t.txt"),
            OutputFolder = folder,
            VocabSize = 300,
            HiddenSize = 32,
            Layers = 1,
            Heads = 2,
            IntermediateSize = 64,
            Context = 16,
            Training = new TrainingOptions { Steps = 8, BatchSize = 2, Seed = 5 },
            CheckpointEvery = 3,
        };

        var straight = TrainingRun.Run(Options(temp.File("straight")));
        Assert.False(straight.Cancelled);

        using var cts = new CancellationTokenSource();
        var stopped = TrainingRun.Run(Options(temp.File("split")), p =>
        {
            if (p.Phase == "training" && p.Step == 5)
            {
                cts.Cancel(); // as Ctrl+C would, mid-run
            }
        }, cts.Token);
        Assert.True(stopped.Cancelled);
        Assert.Equal(5, stopped.Steps);
        Assert.True(File.Exists(temp.File("split/checkpoint.safetensors")));
        Assert.True(File.Exists(temp.File("split/model.safetensors")));

        var resumed = TrainingRun.Run(Options(temp.File("split")) with { Resume = true });
        Assert.False(resumed.Cancelled);
        Assert.Equal(8, resumed.Steps);
        Assert.Equal(File.ReadAllBytes(temp.File("straight/model.safetensors")), File.ReadAllBytes(temp.File("split/model.safetensors")));
    }

    [Fact]
    public void Resume_WithoutACheckpoint_FailsClearly()
    {
        using var temp = new TempFolder();
        File.WriteAllText(temp.File("t.txt"), SampleText());
        CliHarness.AssertFails(["train", "--data", temp.File("t.txt"), "--out", temp.File("out"), .. TinyShape, "--resume"], "no checkpoint.safetensors to resume");
    }
}
