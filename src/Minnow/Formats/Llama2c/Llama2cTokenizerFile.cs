using System.Buffers.Binary;
using System.Text;
using Minnow.Tokenizers;

namespace Minnow.Formats.Llama2c;

/// <summary>
/// llama2.c's <c>tokenizer.bin</c>: int32 max_token_length, then for each token float32 score, int32 byte length
/// and the UTF-8 bytes. Pieces spell spaces as ' ' (not "▁"); ids 0, 1, 2 are &lt;unk&gt;, BOS and EOS, and
/// &lt;0xXX&gt; pieces are byte fallbacks. Encoding follows run.c: a dummy space prefix, greedy merges of the
/// adjacent pair whose concatenation has the highest score, unknown characters as bytes.
/// </summary>
public static class Llama2cTokenizerFile
{
    /// <summary>Reads a tokenizer.bin.</summary>
    /// <param name="path">The file.</param>
    /// <param name="vocabSize">The model's vocabulary size (from the checkpoint header); null reads tokens to the end of the file.</param>
    public static TextTokenizer Load(string path, int? vocabSize = null)
    {
        if (!File.Exists(path))
        {
            throw new MinnowException($"{path}: file not found.");
        }

        return Parse(File.ReadAllBytes(path), Path.GetFileName(path), vocabSize);
    }

    /// <summary>Reads a tokenizer.bin's bytes (<paramref name="name"/>: the file, for messages).</summary>
    public static TextTokenizer Parse(byte[] data, string name, int? vocabSize = null)
    {
        if (data.Length < 4)
        {
            throw new MinnowException($"{name}: too short for a llama2.c tokenizer.");
        }

        int maxTokenLength = BinaryPrimitives.ReadInt32LittleEndian(data);
        if (maxTokenLength <= 0 || maxTokenLength > 1 << 16)
        {
            throw new MinnowException($"{name}: not a llama2.c tokenizer (max_token_length {maxTokenLength}).");
        }

        var pieces = new List<string>();
        var scores = new List<float>();
        var bytes = new List<byte[]>();
        int pos = 4;
        while (vocabSize is int n ? pieces.Count < n : pos < data.Length)
        {
            if (pos + 8 > data.Length)
            {
                throw new MinnowException($"{name}: truncated file (token {pieces.Count} of {vocabSize?.ToString() ?? "?"} starts at byte {pos}, file has {data.Length}).");
            }

            float score = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(pos));
            int length = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(pos + 4));
            pos += 8;
            if (length < 0 || length > data.Length - pos)
            {
                throw new MinnowException($"{name}: corrupt token {pieces.Count} (length {length} at byte {pos - 4}, file has {data.Length}).");
            }

            byte[] raw = data.AsSpan(pos, length).ToArray();
            pos += length;
            pieces.Add(Encoding.UTF8.GetString(raw));
            scores.Add(score);
            bytes.Add(raw);
        }

        if (pieces.Count == 0)
        {
            throw new MinnowException($"{name}: the tokenizer has no tokens.");
        }

        return Build([.. pieces], [.. scores], [.. bytes]);
    }

    /// <summary>Writes a tokenizer.bin (for tests and exports).</summary>
    public static void Write(string path, IReadOnlyList<string> pieces, IReadOnlyList<float> scores)
    {
        ArgumentOutOfRangeException.ThrowIfNotEqual(scores.Count, pieces.Count, nameof(scores));
        byte[][] encoded = [.. pieces.Select(p => Encoding.UTF8.GetBytes(p))];
        Safetensors.AtomicFile.Write(path, stream =>
        {
            using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
            w.Write(encoded.Length == 0 ? 1 : Math.Max(1, encoded.Max(b => b.Length)));
            for (int i = 0; i < encoded.Length; i++)
            {
                w.Write(scores[i]);
                w.Write(encoded[i].Length);
                w.Write(encoded[i]);
            }
        });
    }

    private static TextTokenizer Build(string[] pieces, float[] scores, byte[][] rawBytes)
    {
        int n = pieces.Length;
        var kinds = new TokenKind[n];
        var tokenBytes = new byte[n][];
        var byteIds = new int[256];
        Array.Fill(byteIds, -1);
        var mergeable = new Dictionary<string, int>(n, StringComparer.Ordinal);
        for (int i = 0; i < n; i++)
        {
            if (i < 3 && n > 3)
            {
                kinds[i] = i == 0 ? TokenKind.Unknown : TokenKind.Control;
                tokenBytes[i] = rawBytes[i];
                continue;
            }

            if (GgufTokenizerBuilder.TryParseByteToken(pieces[i], out byte b))
            {
                kinds[i] = TokenKind.Byte;
                tokenBytes[i] = [b];
                if (byteIds[b] < 0)
                {
                    byteIds[b] = i;
                }

                continue;
            }

            kinds[i] = TokenKind.Normal;
            tokenBytes[i] = rawBytes[i];
            mergeable.TryAdd(pieces[i], i);
        }

        // run.c spells unknown bytes as id byte + 3 (the <0x00>..<0xFF> block after <unk>, <s>, </s>).
        for (int b = 0; b < 256; b++)
        {
            if (byteIds[b] < 0 && b + 3 < n)
            {
                byteIds[b] = b + 3;
            }
        }

        int? bos = n > 3 ? 1 : null;
        int? eos = n > 3 ? 2 : null;
        var model = new SentencePieceModel(mergeable, scores, byteIds, n > 3 ? 0 : null, meta: ' ');
        return new TextTokenizer("SentencePiece (llama2.c tokenizer.bin)", pieces, kinds, tokenBytes,
            new SentencePieceSegmentEncoder(model, addSpacePrefix: true, escapeSpaceAs: null), [], bos, eos, [],
            bos is int b1 ? [b1] : [], [], stripsLeadingSpace: true, chatTemplate: null);
    }
}
