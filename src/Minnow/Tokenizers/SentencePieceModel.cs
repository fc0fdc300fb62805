using System.Collections.Concurrent;
using System.Text;

namespace Minnow.Tokenizers;

/// <summary>
/// Score-based SentencePiece BPE, as llama.cpp's SPM tokenizer and llama2.c's <c>encode</c>: start from single
/// characters, repeatedly merge the adjacent pair whose concatenation is the vocabulary piece with the highest
/// score (leftmost on ties), and spell the characters that are not pieces with <c>&lt;0xXX&gt;</c> byte tokens.
/// The input must already be escaped (spaces as "▁" or whatever the vocabulary uses) and prefixed.
/// </summary>
internal sealed class SentencePieceModel
{
    private const int MaxCachedChunkLength = 64;
    private const int MaxCacheEntries = 200_000;

    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _pieces;
    private readonly float[] _scores;
    private readonly int[] _byteIds = new int[256];
    private readonly int? _unknownId;
    private readonly char _meta;
    private readonly bool _chunked;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheLookup;

    /// <param name="pieces">The pieces that merges may produce (normal tokens), by string.</param>
    /// <param name="scores">Score of every id (higher merges first).</param>
    /// <param name="byteIds">Id of the byte token for each byte value, -1 when absent.</param>
    /// <param name="unknownId">Emitted for bytes without a byte token.</param>
    /// <param name="meta">The character that spells a space in the pieces ('▁', or ' ' for llama2.c).</param>
    public SentencePieceModel(Dictionary<string, int> pieces, float[] scores, int[] byteIds, int? unknownId, char meta)
    {
        _pieces = pieces.GetAlternateLookup<ReadOnlySpan<char>>();
        _cacheLookup = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        _scores = scores;
        byteIds.AsSpan(0, 256).CopyTo(_byteIds);
        _unknownId = unknownId;
        _meta = meta;

        // When no piece has a space after another character (SentencePiece's split_by_whitespace, true for the
        // Llama family), no merge can cross the start of a word: words are encoded separately, and cached.
        _chunked = !pieces.Keys.Any(p => HasInnerMeta(p, meta));
    }

    internal static bool HasInnerMeta(string piece, char meta)
    {
        for (int i = 1; i < piece.Length; i++)
        {
            if (piece[i] == meta && piece[i - 1] != meta)
            {
                return true;
            }
        }

        return false;
    }

    private struct Symbol
    {
        public int Start;
        public int Length; // 0 once merged into its left neighbour
        public int Prev;
        public int Next;
    }

    private readonly record struct Bigram(int Left, int Right, int Size);

    private sealed class BigramOrder : IComparer<(float Score, int Left)>
    {
        public static readonly BigramOrder Instance = new();

        // The queue dequeues the smallest: order by score descending, then by position ascending.
        public int Compare((float Score, int Left) x, (float Score, int Left) y)
        {
            int c = y.Score.CompareTo(x.Score);
            return c != 0 ? c : x.Left.CompareTo(y.Left);
        }
    }

    public void Encode(string text, List<int> output)
    {
        if (!_chunked)
        {
            EncodeChunk(text, output);
            return;
        }

        int start = 0;
        for (int i = 1; i <= text.Length; i++)
        {
            if (i == text.Length || (text[i] == _meta && text[i - 1] != _meta))
            {
                var chunk = text.AsSpan(start, i - start);
                if (chunk.Length > MaxCachedChunkLength)
                {
                    EncodeChunk(chunk, output);
                }
                else if (_cacheLookup.TryGetValue(chunk, out int[]? cached))
                {
                    output.AddRange(cached);
                }
                else
                {
                    int before = output.Count;
                    EncodeChunk(chunk, output);
                    if (_cache.Count >= MaxCacheEntries)
                    {
                        _cache.Clear();
                    }

                    _cache.TryAdd(chunk.ToString(), [.. System.Runtime.InteropServices.CollectionsMarshal.AsSpan(output)[before..]]);
                }

                start = i;
            }
        }
    }

    private void EncodeChunk(ReadOnlySpan<char> text, List<int> output)
    {
        if (text.Length == 0)
        {
            return;
        }

        var symbols = new Symbol[text.Length];
        int count = 0;
        for (int i = 0; i < text.Length;)
        {
            int length = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            symbols[count] = new Symbol { Start = i, Length = length, Prev = count - 1, Next = i + length < text.Length ? count + 1 : -1 };
            count++;
            i += length;
        }

        var sym = symbols.AsSpan(0, count);
        var queue = new PriorityQueue<Bigram, (float, int)>(count, BigramOrder.Instance);
        for (int i = 1; i < sym.Length; i++)
        {
            TryAddBigram(text, sym, queue, i - 1, i);
        }

        while (queue.TryDequeue(out var bigram, out _))
        {
            ref var left = ref sym[bigram.Left];
            ref var right = ref sym[bigram.Right];
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != bigram.Size)
            {
                continue;
            }

            left.Length += right.Length;
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0)
            {
                sym[right.Next].Prev = bigram.Left;
            }

            TryAddBigram(text, sym, queue, left.Prev, bigram.Left);
            TryAddBigram(text, sym, queue, bigram.Left, left.Next);
        }

        Span<byte> utf8 = stackalloc byte[8];
        for (int i = 0; i >= 0; i = sym[i].Next)
        {
            var piece = text.Slice(sym[i].Start, sym[i].Length);
            if (_pieces.TryGetValue(piece, out int id))
            {
                output.Add(id);
                continue;
            }

            int n = Encoding.UTF8.GetBytes(piece, utf8);
            for (int k = 0; k < n; k++)
            {
                int b = _byteIds[utf8[k]];
                if (b >= 0)
                {
                    output.Add(b);
                }
                else if (_unknownId is int unk)
                {
                    output.Add(unk);
                }
            }
        }
    }

    private void TryAddBigram(ReadOnlySpan<char> text, Span<Symbol> sym, PriorityQueue<Bigram, (float, int)> queue, int left, int right)
    {
        if (left < 0 || right < 0)
        {
            return;
        }

        int size = sym[left].Length + sym[right].Length;
        if (_pieces.TryGetValue(text.Slice(sym[left].Start, size), out int id))
        {
            queue.Enqueue(new Bigram(left, right, size), (_scores[id], left));
        }
    }
}
