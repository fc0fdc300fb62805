using System.Text;
using Minnow.Tokenizers;
using static Minnow.Tests.Tokenizers.TokenizerTestData;

namespace Minnow.Tests.Tokenizers;

public class TokenStreamDecoderTests
{
    private static string Stream(ITextTokenizer tok, IEnumerable<int> ids, bool skipSpecial = true, List<string>? pieces = null)
    {
        var decoder = new TokenStreamDecoder(tok, skipSpecial);
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            string piece = decoder.Add(id);
            pieces?.Add(piece);
            sb.Append(piece);
        }

        return sb.Append(decoder.Flush()).ToString();
    }

    [Theory]
    [InlineData("gpt-2")]
    [InlineData("llama-spm")]
    public void SharedData_StreamingGivesTheSameTextAsDecode(string vocab)
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var tok = Gguf(vocab);
        foreach (var (text, _) in Vectors(vocab))
        {
            var ids = tok.Encode(text, addSpecial: true);
            Assert.Equal(tok.Decode(ids, skipSpecialTokens: true), Stream(tok, ids));
            Assert.Equal(tok.Decode(ids, skipSpecialTokens: false), Stream(tok, ids, skipSpecial: false));
            Assert.Equal(text, Stream(tok, ids));
        }
    }

    [Fact]
    public void SharedData_HoldsBackIncompleteCharacters()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        // GPT-2 spells the llama emoji (4 UTF-8 bytes) with three byte-level tokens.
        var tok = Gguf("gpt-2");
        var ids = tok.Encode(" this is 🦙.cpp", addSpecial: false);
        Assert.Equal([428, 318, 12520, 99, 247, 13, 20322], ids);
        var pieces = new List<string>();
        Assert.Equal(" this is 🦙.cpp", Stream(tok, ids, pieces: pieces));
        Assert.Contains("", pieces.Take(ids.Count)); // a token that ends inside the emoji yields nothing yet
        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD'));

        var decoder = new TokenStreamDecoder(tok);
        string first = decoder.Add(12520);
        Assert.True(decoder.HasPendingBytes);
        string rest = decoder.Flush(); // an unfinished character at the end becomes U+FFFD, as in Decode
        Assert.EndsWith("\uFFFD", rest);
        Assert.False(decoder.HasPendingBytes);
        Assert.Equal(tok.Decode([12520]), first + rest);

        // SentencePiece byte fallback: "\t" is <0x09>, a complete character on its own.
        var spm = Gguf("llama-spm");
        var spmDecoder = new TokenStreamDecoder(spm);
        Assert.Equal("", spmDecoder.Add(1)); // BOS skipped
        Assert.Equal("Hello", spmDecoder.Add(spm.StringToToken("▁Hello")!.Value)); // leading space of the text dropped
        Assert.Equal(" world", spmDecoder.Add(spm.StringToToken("▁world")!.Value));
        Assert.Equal("\t", spmDecoder.Add(3 + 9));
    }

    [Fact]
    public void SharedData_ContinuationKeepsTheLeadingSpace()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var spm = Gguf("llama-spm");
        var decoder = new TokenStreamDecoder(spm, atStartOfText: false);
        Assert.Equal(" world", decoder.Add(spm.StringToToken("▁world")!.Value));
    }
}
