using System.Text;
using Minnow.Formats.Llama2c;
using Minnow.Tokenizers;

namespace Minnow.Tests.Tokenizers;

/// <summary>llama2.c tokenizer.bin: written by the test (no real file is available), encoded as run.c does.</summary>
public sealed class Llama2cTokenizerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("minnow-l2c-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A llama2.c-style vocabulary: &lt;unk&gt;, BOS, EOS, 256 byte tokens, then pieces with scores.</summary>
    private static (List<string> Pieces, List<float> Scores) Vocabulary(IEnumerable<(string Piece, float Score)> pieces)
    {
        var p = new List<string> { "<unk>", "\n<s>\n", "\n</s>\n" };
        var s = new List<float> { 0, 0, 0 };
        for (int b = 0; b < 256; b++)
        {
            p.Add($"<0x{b:X2}>");
            s.Add(0);
        }

        foreach (var (piece, score) in pieces)
        {
            p.Add(piece);
            s.Add(score);
        }

        return (p, s);
    }

    private TextTokenizer Write(List<string> pieces, List<float> scores, bool passVocabSize = true)
    {
        string path = Path.Combine(_dir, "tokenizer.bin");
        Llama2cTokenizerFile.Write(path, pieces, scores);
        return passVocabSize ? Llama2cTokenizerFile.Load(path, pieces.Count) : (TextTokenizer)TokenizerLoader.Load(path);
    }

    /// <summary>run.c's encode(), transcribed: dummy prefix, code points or bytes + 3, greedy best-score merges.</summary>
    private static List<int> RunCEncode(List<string> vocab, List<float> scores, string text, bool bos)
    {
        int Lookup(string s) => vocab.IndexOf(s);
        var tokens = new List<int>();
        if (bos)
        {
            tokens.Add(1);
        }

        var work = new List<int>();
        if (text.Length > 0)
        {
            work.Add(Lookup(" "));
        }

        for (int i = 0; i < text.Length;)
        {
            int len = char.IsHighSurrogate(text[i]) ? 2 : 1;
            string cp = text.Substring(i, len);
            i += len;
            int id = Lookup(cp);
            if (id >= 0)
            {
                work.Add(id);
            }
            else
            {
                foreach (byte b in Encoding.UTF8.GetBytes(cp))
                {
                    work.Add(b + 3);
                }
            }
        }

        while (true)
        {
            float best = -1e10f;
            int bestId = -1, bestIdx = -1;
            for (int i = 0; i + 1 < work.Count; i++)
            {
                int id = Lookup(vocab[work[i]] + vocab[work[i + 1]]);
                if (id != -1 && scores[id] > best)
                {
                    best = scores[id];
                    bestId = id;
                    bestIdx = i;
                }
            }

            if (bestIdx == -1)
            {
                break;
            }

            work[bestIdx] = bestId;
            work.RemoveAt(bestIdx + 1);
        }

        tokens.AddRange(work);
        return tokens;
    }

    [Fact]
    public void EncodesLikeRunC()
    {
        var (pieces, scores) = Vocabulary([
            (" ", -20), ("h", -30), ("e", -30), ("l", -30), ("o", -30), ("w", -30), ("r", -30), ("d", -30),
            ("he", -1), ("ll", -2), ("hell", -3), ("hello", -4), (" hello", -5), (" h", -10), (" w", -6), ("or", -7), (" wor", -8), (" world", -9), ("ld", -9.5f),
        ]);
        var tok = Write(pieces, scores);
        int Id(string p) => pieces.IndexOf(p);

        Assert.Equal(pieces.Count, tok.VocabSize);
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
        Assert.True(tok.AddsBos);
        Assert.Equal([1, Id(" hello")], tok.Encode("hello", addSpecial: true));
        Assert.Equal([Id(" hello"), Id(" world")], tok.Encode("hello world", addSpecial: false));

        // Characters missing from the vocabulary become byte tokens (id = byte + 3).
        Assert.Equal([Id(" h"), 0xC3 + 3, 0xA9 + 3], tok.Encode("hé", addSpecial: false));
        Assert.Empty(tok.Encode("", addSpecial: false));
        Assert.Equal([1], tok.Encode("", addSpecial: true));

        // Decoding drops the dummy prefix's space and turns byte tokens back into bytes.
        Assert.Equal("hello world", tok.Decode([1, Id(" hello"), Id(" world")], skipSpecialTokens: true));
        Assert.Equal("hé", tok.Decode(tok.Encode("hé", true), skipSpecialTokens: true));
        foreach (string text in (string[])["hello", "hello world", "hé", "world hello ☃", "olleh  dlrow"])
        {
            Assert.Equal(RunCEncode(pieces, scores, text, bos: true), tok.Encode(text, addSpecial: true));
        }
    }

    [Fact]
    public void MatchesRunCOnRandomVocabulariesAndTexts()
    {
        var random = new Random(1234);
        const string alphabet = "ab c";
        for (int trial = 0; trial < 30; trial++)
        {
            var pieces = new List<(string, float)>();
            var seen = new HashSet<string>();
            foreach (char c in alphabet)
            {
                pieces.Add((c.ToString(), -100));
                seen.Add(c.ToString());
            }

            for (int i = 0; i < 40; i++)
            {
                int length = random.Next(2, 6);
                string piece = new([.. Enumerable.Range(0, length).Select(_ => alphabet[random.Next(alphabet.Length)])]);
                if (seen.Add(piece))
                {
                    pieces.Add((piece, -random.Next(0, 10))); // integer scores: plenty of ties
                }
            }

            var (vocab, scores) = Vocabulary(pieces);
            var tok = Write(vocab, scores);
            for (int t = 0; t < 20; t++)
            {
                string text = new([.. Enumerable.Range(0, random.Next(0, 30)).Select(_ => "ab cé"[random.Next(5)])]);
                Assert.Equal(RunCEncode(vocab, scores, text, bos: false), tok.Encode(text, addSpecial: false));
                Assert.Equal(text, tok.Decode(tok.Encode(text, addSpecial: true), skipSpecialTokens: true));
            }
        }
    }

    [Fact]
    public void LoadsWithoutVocabSizeAndRejectsBadFiles()
    {
        var (pieces, scores) = Vocabulary([(" ", -1), ("a", -1), (" a", -0.5f)]);
        var tok = Write(pieces, scores, passVocabSize: false);
        Assert.Equal(pieces.Count, tok.VocabSize);

        string path = Path.Combine(_dir, "tokenizer.bin");
        var truncated = Assert.Throws<MinnowException>(() => Llama2cTokenizerFile.Load(path, pieces.Count + 5));
        Assert.Contains("tokenizer.bin: truncated file", truncated.Message);

        byte[] bytes = File.ReadAllBytes(path);
        BitConverter.GetBytes(-1).CopyTo(bytes, 0);
        File.WriteAllBytes(path, bytes);
        Assert.Contains("not a llama2.c tokenizer", Assert.Throws<MinnowException>(() => Llama2cTokenizerFile.Load(path, pieces.Count)).Message);
        Assert.Throws<MinnowException>(() => Llama2cTokenizerFile.Load(Path.Combine(_dir, "missing.bin")));
    }
}
