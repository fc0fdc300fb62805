using Minnow.Formats.Gguf;
using Minnow.Tokenizers;
using static Minnow.Tests.Tokenizers.TokenizerTestData;

namespace Minnow.Tests.Tokenizers;

public sealed class TokenizerLoaderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("minnow-loader-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void FolderWithoutTokenizerJson()
    {
        Assert.Null(TokenizerLoader.TryLoadFromFolder(_dir));
        var ex = Assert.Throws<MinnowException>(() => TokenizerLoader.LoadFromFolder(_dir));
        Assert.Equal($"{_dir}: no tokenizer.json found; pass --tokenizer or use a model folder that has one.", ex.Message);
        Assert.Throws<MinnowException>(() => TokenizerLoader.Load(_dir));
        Assert.Throws<MinnowException>(() => TokenizerLoader.Load(Path.Combine(_dir, "missing")));

        string other = Path.Combine(_dir, "notes.txt");
        File.WriteAllText(other, "hello");
        Assert.Contains("not a tokenizer", Assert.Throws<MinnowException>(() => TokenizerLoader.Load(other)).Message);
    }

    [Fact]
    public void SharedData_LoadsEveryKindOfPath()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        Assert.StartsWith("byte-level BPE (tokenizer.json", TokenizerLoader.Load(SmolLM2Folder!).Description);
        Assert.StartsWith("byte-level BPE (tokenizer.json", TokenizerLoader.Load(Path.Combine(SmolLM2Folder!, "tokenizer.json")).Description);
        Assert.NotNull(TokenizerLoader.TryLoadFromFolder(SmolLM2Folder!));
        Assert.StartsWith("SentencePiece (GGUF)", TokenizerLoader.Load(GgufPath("llama-spm")).Description);
        using var file = GgufFile.Open(GgufPath("gpt-2"));
        Assert.NotNull(TokenizerLoader.TryFromGguf(file));
        Assert.True(TokenizerLoader.HasVocabulary(file.Metadata));
    }

    [Fact]
    public void GgufWithoutOrWithUnsupportedVocabulary()
    {
        string none = Path.Combine(_dir, "none.gguf");
        new GgufWriter().Set("general.architecture", "llama").Write(none);
        using (var file = GgufFile.Open(none))
        {
            Assert.Null(TokenizerLoader.TryFromGguf(file));
            Assert.Contains("has no tokenizer", Assert.Throws<MinnowException>(() => TokenizerLoader.FromGguf(file)).Message);
        }

        string bert = Path.Combine(_dir, "bert.gguf");
        new GgufWriter().Set("tokenizer.ggml.model", "bert").Set("tokenizer.ggml.tokens", new[] { "a" }).Write(bert);
        Assert.Contains("tokenizer type \"bert\" is not supported", Assert.Throws<MinnowException>(() => TokenizerLoader.Load(bert)).Message);

        string pre = Path.Combine(_dir, "pre.gguf");
        new GgufWriter().Set("tokenizer.ggml.model", "gpt2").Set("tokenizer.ggml.pre", "mystery").Set("tokenizer.ggml.tokens", new[] { "a" })
            .Set("tokenizer.ggml.merges", Array.Empty<string>()).Write(pre);
        Assert.Contains("pre-tokenizer \"mystery\"", Assert.Throws<MinnowException>(() => TokenizerLoader.Load(pre)).Message);
    }

    [Fact]
    public void MinimalGgufSentencePieceVocabulary()
    {
        // <unk>, <s>, </s>, byte tokens for 'x' only, then pieces with scores.
        string[] tokens = ["<unk>", "<s>", "</s>", "<0x78>", "▁", "a", "b", "▁a", "ab", "▁ab"];
        float[] scores = [0, 0, 0, 0, -5, -5, -5, -1, -2, -3];
        int[] types = [2, 3, 3, 6, 1, 1, 1, 1, 1, 1];
        string path = Path.Combine(_dir, "spm.gguf");
        new GgufWriter()
            .Set("tokenizer.ggml.model", "llama")
            .Set("tokenizer.ggml.tokens", tokens)
            .Set("tokenizer.ggml.scores", scores)
            .Set("tokenizer.ggml.token_type", types)
            .Set("tokenizer.ggml.bos_token_id", 1u)
            .Set("tokenizer.ggml.eos_token_id", 2u)
            .Set("tokenizer.chat_template", "{{ '<|im_start|>' }}")
            .Write(path);
        var tok = TokenizerLoader.Load(path);
        Assert.Equal([1, 9], tok.Encode("ab", addSpecial: true)); // "▁ab": ▁a (-1) first, then ▁ab (-3)
        Assert.Equal([9, 4, 3], tok.Encode("ab x", addSpecial: false)); // "▁ab", "▁", then "x" as the byte token <0x78>
        Assert.Equal("ab x", tok.Decode(tok.Encode("ab x", addSpecial: true), skipSpecialTokens: true));
        Assert.Equal(ChatFormat.ChatML, ChatTemplate.For(tok).Format);
    }
}
