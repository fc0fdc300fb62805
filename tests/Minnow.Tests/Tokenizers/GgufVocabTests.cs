using System.Diagnostics;
using Minnow.Tokenizers;
using static Minnow.Tests.Tokenizers.TokenizerTestData;

namespace Minnow.Tests.Tokenizers;

/// <summary>llama.cpp's tokenizer test vectors and round trips on the vocabularies in ../shared (read in place).</summary>
public class GgufVocabTests
{
    [Theory]
    [InlineData("gpt-2")]
    [InlineData("llama-spm")]
    [InlineData("phi-3")]
    public void SharedData_MatchesLlamaCppTestVectors(string vocab)
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var tokenizer = Gguf(vocab);
        var vectors = Vectors(vocab);
        Assert.Equal(46, vectors.Count);
        var failures = new List<string>();
        foreach (var (text, expected) in vectors)
        {
            // test-tokenizer-0 encodes with add_special = false and parse_special = false.
            var ids = tokenizer.Encode(text, addSpecial: false, parseSpecial: false);
            if (!ids.SequenceEqual(expected))
            {
                failures.Add($"{Show(text)}: expected [{string.Join(' ', expected)}], got [{string.Join(' ', ids)}]");
            }
        }

        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Theory]
    [InlineData("gpt-2")]
    [InlineData("gpt-neox")]
    [InlineData("llama-spm")]
    [InlineData("phi-3")]
    public void SharedData_TestTextsRoundTrip(string vocab)
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var tokenizer = Gguf(vocab);
        foreach (var (text, _) in Vectors("gpt-2"))
        {
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text, addSpecial: false)));
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text, addSpecial: true), skipSpecialTokens: true));
        }
    }

    [Theory]
    [InlineData("gpt-2")]
    [InlineData("gpt-neox")]
    [InlineData("llama-spm")]
    [InlineData("phi-3")]
    public void SharedData_WikiTextRoundTripsQuickly(string vocab)
    {
        if (SharedData.Root is null)
        {
            return;
        }

        // A fresh tokenizer (empty caches), timed: perplexity runs encode the whole corpus.
        var tokenizer = TokenizerLoader.FromGguf(Minnow.Formats.Gguf.GgufFile.ReadMetadata(GgufPath(vocab)));
        string wiki = WikiText!;
        var watch = Stopwatch.StartNew();
        var ids = tokenizer.Encode(wiki, addSpecial: false);
        var elapsed = watch.Elapsed;
        Assert.InRange(ids.Count, wiki.Length / 6, wiki.Length / 2);
        Assert.Equal(wiki, tokenizer.Decode(ids));

        // Well under a second of CPU on a quiet machine; the bound is loose because tests run in parallel on shared runners.
        Assert.True(elapsed < TimeSpan.FromSeconds(30), $"{vocab}: encoding took {elapsed.TotalSeconds:F1} s");
    }

    [Fact]
    public void SharedData_EncodingIsThreadSafe()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        string[] lines = WikiText!.Split('\n')[..3000];
        foreach (string vocab in (string[])["gpt-2", "llama-spm"])
        {
            var expected = lines.Select(l => Gguf(vocab).Encode(l, false).ToArray()).ToArray();
            var fresh = TokenizerLoader.FromGguf(Minnow.Formats.Gguf.GgufFile.ReadMetadata(GgufPath(vocab)));
            var actual = new int[lines.Length][];
            Parallel.For(0, lines.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => actual[i] = [.. fresh.Encode(lines[i], false)]);
            for (int i = 0; i < lines.Length; i++)
            {
                Assert.Equal(expected[i], actual[i]);
            }
        }
    }

    [Fact]
    public void SharedData_SpecialIdsAndFlags()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var gpt2 = Gguf("gpt-2");
        Assert.Equal(50257, gpt2.VocabSize);
        Assert.Equal(50256, gpt2.BosId);
        Assert.Equal(50256, gpt2.EosId);
        Assert.Equal([50256], gpt2.EosIds);
        Assert.False(gpt2.AddsBos);
        Assert.False(gpt2.StripsLeadingSpace);
        Assert.Equal([15496, 995], gpt2.Encode("Hello world", addSpecial: true));
        Assert.Equal([15496, 50256, 995], gpt2.Encode("Hello<|endoftext|> world", addSpecial: false));
        Assert.Equal("Hello<|endoftext|> world", gpt2.Decode([15496, 50256, 995]));
        Assert.Equal("Hello world", gpt2.Decode([15496, 50256, 995], skipSpecialTokens: true));
        Assert.Equal("Ġworld", gpt2.TokenToString(995));
        Assert.Equal(995, gpt2.StringToToken("Ġworld"));
        Assert.Null(gpt2.StringToToken("not a token"));

        var spm = Gguf("llama-spm");
        Assert.Equal(1, spm.BosId);
        Assert.Equal(2, spm.EosId);
        Assert.True(spm.AddsBos);
        Assert.True(spm.StripsLeadingSpace);
        var withBos = spm.Encode("Hello world", addSpecial: true);
        Assert.Equal(1, withBos[0]);
        Assert.Equal(spm.Encode("Hello world", addSpecial: false), withBos.Skip(1));
        Assert.Equal("<s> Hello world", spm.Decode(withBos));
        Assert.Equal("Hello world", spm.Decode(withBos, skipSpecialTokens: true));
        Assert.True(spm.IsSpecial(1));
        Assert.False(spm.IsSpecial(3));
        Assert.Equal(TokenKind.Byte, spm.KindOf(3 + 0x0A));
        Assert.Equal([(byte)'\n'], spm.TokenBytes(3 + 0x0A).ToArray());

        // Control tokens written in the text are parsed by default, not with parseSpecial = false.
        Assert.Equal([1, .. spm.Encode("x", false)], spm.Encode("<s>x", addSpecial: false));
        Assert.NotEqual(1, spm.Encode("<s>x", addSpecial: false, parseSpecial: false)[0]);

        var phi3 = Gguf("phi-3");
        Assert.Equal(32000, phi3.EosId);
        Assert.Contains(32007, phi3.EosIds); // <|end|>
        Assert.NotNull(phi3.ChatTemplate);
    }

    [Fact]
    public void SharedData_Phi3SpecialTokensStripTheWhitespaceAfterThem()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var phi3 = Gguf("phi-3");
        var ids = phi3.Encode("<|user|>\nHi<|end|>\n<|assistant|>\n", addSpecial: true);
        Assert.Equal([1, 32010, .. phi3.Encode("Hi", false), 32007, 32001], ids);
    }
}
