using System.Text;
using Minnow.Tests.Models;
using Minnow.Tokenizers;
using Minnow.Training;

namespace Minnow.Tests.Cli;

/// <summary>
/// The text paths of the commands (-p TEXT, --text FILE, --stop, --chat): a golden checkpoint (vocabulary 256)
/// copied with a byte-level tokenizer.json whose 256 tokens are the bytes, so every text is encodable.
/// </summary>
public class TokenizerCliTests
{
    /// <summary>A copy of a golden model with a bytes-only tokenizer.json beside it, or null without ../shared.</summary>
    private static (TempFolder Temp, string Model, ITextTokenizer Tokenizer)? ModelWithTokenizer(string golden = "gpt2")
    {
        if (SharedData.Root is null)
        {
            return null;
        }

        var temp = new TempFolder();
        string model = temp.CopyGolden(golden);
        var bytes = Enumerable.Range(0, 256).Select(b => ByteLevelBpe.ByteToChar[b].ToString()).ToList();
        string path = Path.Combine(model, "tokenizer.json");
        new ByteLevelBpe(bytes, [], []).Save(path);
        return (temp, model, TokenizerLoader.FromTokenizerJson(path));
    }

    [Fact]
    public void Info_DescribesTheTokenizer()
    {
        if (ModelWithTokenizer() is not var (temp, model, _))
        {
            return;
        }

        using (temp)
        {
            var json = Cli.Run("info", model, "--json").Json();
            Assert.Equal(256, json.GetProperty("tokenizer").GetProperty("vocab_size").GetInt32());
            Assert.Contains("BPE", json.GetProperty("tokenizer").GetProperty("kind").GetString());
            Assert.Contains("vocab 256", Cli.Run("info", model).Stdout);
        }
    }

    [Fact]
    public void Generate_TextPromptStreamsTheDecodedText()
    {
        if (ModelWithTokenizer() is not var (temp, model, tokenizer))
        {
            return;
        }

        using (temp)
        {
            const string prompt = "Hello, wörld";
            var json = Cli.Run("generate", model, "-p", prompt, "-n", "12", "--temperature", "0", "--json").Json();
            var ids = json.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            Assert.Equal(Encoding.UTF8.GetByteCount(prompt), json.GetProperty("prompt_tokens").GetInt32());
            Assert.Equal(12, ids.Length);
            string text = json.GetProperty("text").GetString()!;
            Assert.Equal(tokenizer.Decode(ids, skipSpecialTokens: true), text);

            var streamed = Cli.Run("generate", model, "-p", prompt, "-n", "12", "--temperature", "0");
            Assert.True(streamed.ExitCode == 0, streamed.ToString());
            Assert.Equal(text + Environment.NewLine, streamed.Stdout);
            Assert.Contains("tok/s", streamed.Stderr);

            // A stop string taken from the middle of that output cuts it there.
            string stop = text.Substring(4, 2);
            var stopped = Cli.Run("generate", model, "-p", prompt, "-n", "12", "--temperature", "0", "--stop", stop, "--json").Json();
            Assert.Equal("stop_string", stopped.GetProperty("stop_reason").GetString());
            Assert.Equal(text[..text.IndexOf(stop, StringComparison.Ordinal)], stopped.GetProperty("text").GetString());
        }
    }

    [Fact]
    public void Generate_ChatWrapsThePromptInTheTemplate()
    {
        if (ModelWithTokenizer("qwen2") is not var (temp, model, tokenizer))
        {
            return;
        }

        using (temp)
        {
            var plain = Cli.Run("generate", model, "-p", "Hi", "-n", "4", "--temperature", "0", "--json").Json();
            var chat = Cli.Run("generate", model, "-p", "Hi", "-n", "4", "--temperature", "0", "--chat", "--system", "Be brief.", "--json");
            Assert.True(chat.ExitCode == 0, chat.ToString());
            string rendered = ChatTemplate.For(tokenizer).Apply([ChatMessage.System("Be brief."), ChatMessage.User("Hi")], addGenerationPrompt: true);
            Assert.Equal(tokenizer.Encode(rendered, addSpecial: true).Count, chat.Json().GetProperty("prompt_tokens").GetInt32());
            Assert.True(chat.Json().GetProperty("prompt_tokens").GetInt32() > plain.GetProperty("prompt_tokens").GetInt32());
        }
    }

    [Fact]
    public void Perplexity_OnTextEqualsPerplexityOnItsIds()
    {
        if (ModelWithTokenizer("llama") is not var (temp, model, tokenizer))
        {
            return;
        }

        using (temp)
        {
            string text = "The quick brown fox jumps over the lazy dog. " + string.Concat(Enumerable.Repeat("Once upon a time, there was a minnow. ", 4));
            string textFile = temp.File("text.txt");
            File.WriteAllText(textFile, text);
            string idsFile = temp.File("ids.txt");
            File.WriteAllText(idsFile, string.Join(" ", tokenizer.Encode(text, addSpecial: true)));

            var fromText = Cli.Run("perplexity", model, "--text", textFile, "--ctx", "32", "--json");
            var fromIds = Cli.Run("perplexity", model, "--ids", idsFile, "--ctx", "32", "--json");
            Assert.True(fromText.ExitCode == 0, fromText.ToString());
            Assert.Equal(fromIds.Json().GetProperty("ppl").GetDouble(), fromText.Json().GetProperty("ppl").GetDouble());
            Assert.Equal(Encoding.UTF8.GetByteCount(text), fromText.Json().GetProperty("tokens").GetInt32());
            Assert.Equal(Encoding.UTF8.GetByteCount(text) / 32, fromText.Json().GetProperty("chunks").GetInt32());
        }
    }

    [Fact]
    public void Generate_PromptLongerThanTheContextIsOneLine()
    {
        if (ModelWithTokenizer() is not var (temp, model, _))
        {
            return;
        }

        using (temp)
        {
            // GPT-2 golden: 128 learned positions; 200 bytes of prompt do not fit.
            Cli.AssertFails(["generate", model, "-p", new string('a', 200)], "200 tokens", "context of 128");
        }
    }
}
