using System.Text.Json;
using Minnow.Tokenizers;
using Minnow.Training;

namespace Minnow.Tests.Training;

public class BpeTokenizerTests
{
    private const string Corpus =
        "In the beginning God created the heaven and the earth. And the earth was without form, and void; and " +
        "darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.\n" +
        "And God said, Let there be light: and there was light. And God saw the light, that it was good: and God " +
        "divided the light from the darkness. It's 1611, they're here, we'll see!\n\n  Indented   text\ttabs\n";

    private static ByteLevelBpe Train(int vocab = 320) => BpeTokenizerTrainer.Train(string.Concat(Enumerable.Repeat(Corpus, 3)), vocab);

    [Fact]
    public void ByteMap_IsGpt2sBytesToUnicode()
    {
        Assert.Equal('!', ByteLevelBpe.ByteToChar['!']);
        Assert.Equal('Ġ', ByteLevelBpe.ByteToChar[' ']);
        Assert.Equal('Ċ', ByteLevelBpe.ByteToChar['\n']);
        Assert.Equal('Ā', ByteLevelBpe.ByteToChar[0]);
        Assert.Equal(256, ByteLevelBpe.ByteToChar.Distinct().Count());
    }

    [Fact]
    public void Train_LearnsFrequentMergesAndRoundTripsAnyText()
    {
        var bpe = Train();
        Assert.Equal(320, bpe.VocabSize);
        Assert.Equal(319, bpe.TokenId(BpeTokenizerTrainer.EndOfText));
        Assert.NotNull(bpe.TokenId("Ġthe"));
        Assert.NotNull(bpe.TokenId("ĠGod"));
        Assert.Equal(320 - 256 - 1, bpe.Merges.Count);

        string text = "And God said: héllo wörld 🙂 — it's 42!\n\tdone";
        var ids = bpe.Encode(text);
        Assert.Equal(text, bpe.Decode(ids));
        Assert.True(bpe.Encode("the light of God").Length < "the light of God".Length / 2);
        Assert.Equal([(int)'&', 319, (int)'\''], bpe.Encode("&<|endoftext|>'"));
    }

    [Fact]
    public void Train_IsDeterministic()
    {
        var a = Train();
        var b = Train();
        Assert.Equal(a.ToJson(), b.ToJson());
    }

    [Fact]
    public void TokenizerJson_IsAStandardByteLevelBpeThatLoadsBackAndInTheEngine()
    {
        var bpe = Train();
        string folder = Path.Combine(Path.GetTempPath(), "minnow-bpe-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            string path = Path.Combine(folder, "tokenizer.json");
            bpe.Save(path);
            File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), bpe.TokenizerConfigJson(BpeTokenizerTrainer.EndOfText, 128));

            using (var doc = JsonDocument.Parse(File.ReadAllText(path)))
            {
                var root = doc.RootElement;
                Assert.Equal("BPE", root.GetProperty("model").GetProperty("type").GetString());
                Assert.Equal("ByteLevel", root.GetProperty("pre_tokenizer").GetProperty("type").GetString());
                Assert.Equal("ByteLevel", root.GetProperty("decoder").GetProperty("type").GetString());
                Assert.Equal(320, root.GetProperty("model").GetProperty("vocab").EnumerateObject().Count());
                Assert.Equal(bpe.Merges.Count, root.GetProperty("model").GetProperty("merges").GetArrayLength());
                var added = root.GetProperty("added_tokens")[0];
                Assert.Equal("<|endoftext|>", added.GetProperty("content").GetString());
                Assert.True(added.GetProperty("special").GetBoolean());
            }

            var reloaded = ByteLevelBpe.Load(path);
            var engine = TokenizerLoader.FromTokenizerJson(path);
            Assert.Equal(320, engine.VocabSize);
            foreach (string text in new[] { Corpus, "And God said: héllo wörld 🙂 — it's 42!\n\tdone", "  leading spaces", "x<|endoftext|>y" })
            {
                var expected = bpe.Encode(text);
                Assert.Equal(expected, reloaded.Encode(text));
                Assert.Equal(expected, engine.Encode(text, addSpecial: false));
                Assert.Equal(text, engine.Decode(expected));
            }
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }
}
