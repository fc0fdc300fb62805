using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Text;

namespace Minnow.Tokenizers;

/// <summary>
/// Rank-based BPE over one pre-tokenized word, as Hugging Face's <c>tokenizers</c> BPE model: start from single
/// characters (or, for byte-level vocabularies, single bytes spelled with <see cref="ByteLevelMapping"/>), then
/// repeatedly apply the lowest-ranked merge present, leftmost first. Characters missing from the vocabulary become
/// <c>&lt;0xXX&gt;</c> tokens with byte fallback, else the unknown token (or are dropped). Results are cached per word.
/// </summary>
internal sealed class BpeModel : WordEncoder
{
    private const int MaxCachedWordLength = 64;
    private const int MaxCacheEntries = 200_000;
    private const int SmallWord = 48;
    private const char Metaspace = '▁';

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabLookup;
    private readonly Dictionary<long, int> _mergeRanks;
    private readonly int[] _mergeResults;
    private readonly int[] _byteCharIds = new int[256];
    private readonly int[] _fallbackIds = new int[256];
    private readonly bool _chunkAtMetaspace;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheLookup;

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, bool byteLevel, bool byteFallback,
        int? unknownId, bool fuseUnknown, bool ignoreMerges)
    {
        _vocab = vocab;
        _vocabLookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _cacheLookup = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        ByteLevel = byteLevel;
        ByteFallback = byteFallback;
        UnknownId = unknownId;
        FuseUnknown = fuseUnknown;
        IgnoreMerges = ignoreMerges;

        _mergeRanks = new Dictionary<long, int>(merges.Count, PairComparer.Instance);
        var results = new List<int>(merges.Count);
        bool innerMetaspace = false;
        bool anyMetaspace = false;
        foreach (var (left, right) in merges)
        {
            string joined = left + right;
            if (vocab.TryGetValue(left, out int a) && vocab.TryGetValue(right, out int b) && vocab.TryGetValue(joined, out int merged)
                && _mergeRanks.TryAdd(Key(a, b), results.Count))
            {
                results.Add(merged);
                anyMetaspace |= joined.Contains(Metaspace);
                innerMetaspace |= SentencePieceModel.HasInnerMeta(joined, Metaspace);
            }
        }

        _mergeResults = [.. results];

        // SentencePiece-style vocabularies (no pre-tokenizer: the whole text is one "word") never merge across the
        // start of a "▁word" when no merge result has a "▁" after another character: encode such words separately.
        _chunkAtMetaspace = !byteLevel && !ignoreMerges && anyMetaspace && !innerMetaspace;
        for (int b = 0; b < 256; b++)
        {
            _byteCharIds[b] = vocab.TryGetValue(ByteLevelMapping.ByteToChar((byte)b).ToString(), out int id) ? id : -1;
            _fallbackIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int fid) ? fid : -1;
        }
    }

    public bool ByteLevel { get; }

    public bool ByteFallback { get; }

    public int? UnknownId { get; }

    public bool FuseUnknown { get; }

    public bool IgnoreMerges { get; }

    public int MergeCount => _mergeResults.Length;

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>Hashes a pair key well (long.GetHashCode would collide for all pairs with the same left ^ right).</summary>
    private sealed class PairComparer : IEqualityComparer<long>
    {
        public static readonly PairComparer Instance = new();

        public bool Equals(long x, long y) => x == y;

        public int GetHashCode(long key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> 32);
    }

    public override void Encode(ReadOnlySpan<char> word, List<int> output)
    {
        if (!_chunkAtMetaspace)
        {
            EncodeCached(word, output);
            return;
        }

        int start = 0;
        for (int i = 1; i <= word.Length; i++)
        {
            if (i == word.Length || (word[i] == Metaspace && word[i - 1] != Metaspace))
            {
                EncodeCached(word[start..i], output);
                start = i;
            }
        }
    }

    private void EncodeCached(ReadOnlySpan<char> word, List<int> output)
    {
        if (word.Length == 0)
        {
            return;
        }

        if (word.Length > MaxCachedWordLength)
        {
            EncodeUncached(word, output);
            return;
        }

        if (_cacheLookup.TryGetValue(word, out int[]? cached))
        {
            output.AddRange(cached);
            return;
        }

        int before = output.Count;
        EncodeUncached(word, output);
        if (_cache.Count >= MaxCacheEntries)
        {
            _cache.Clear();
        }

        _cache.TryAdd(word.ToString(), [.. CollectionsMarshal.AsSpan(output)[before..]]);
    }

    private void EncodeUncached(ReadOnlySpan<char> word, List<int> output)
    {
        // Symbols are ids; ~id marks a symbol that never merges (byte fallback, unknown).
        int capacity = ByteLevel ? Encoding.UTF8.GetByteCount(word) : word.Length * 4;
        Span<int> symbols = capacity <= 256 ? stackalloc int[256] : new int[capacity];
        int n = 0;
        if (ByteLevel)
        {
            Span<byte> bytes = capacity <= 1024 ? stackalloc byte[capacity] : new byte[capacity];
            Encoding.UTF8.GetBytes(word, bytes);
            if (IgnoreMerges)
            {
                Span<char> mapped = capacity <= 1024 ? stackalloc char[capacity] : new char[capacity];
                for (int i = 0; i < bytes.Length; i++)
                {
                    mapped[i] = ByteLevelMapping.ByteToChar(bytes[i]);
                }

                if (_vocabLookup.TryGetValue(mapped, out int whole))
                {
                    output.Add(whole);
                    return;
                }
            }

            foreach (byte b in bytes)
            {
                int id = _byteCharIds[b];
                if (id >= 0)
                {
                    symbols[n++] = id;
                }
                else if (UnknownId is int unk)
                {
                    symbols[n++] = ~unk;
                }
            }
        }
        else
        {
            if (IgnoreMerges && _vocabLookup.TryGetValue(word, out int whole))
            {
                output.Add(whole);
                return;
            }

            bool previousUnknown = false;
            Span<byte> utf8 = stackalloc byte[4];
            for (int i = 0; i < word.Length;)
            {
                int length = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
                var ch = word.Slice(i, length);
                i += length;
                if (_vocabLookup.TryGetValue(ch, out int id))
                {
                    symbols[n++] = id;
                    previousUnknown = false;
                    continue;
                }

                if (ByteFallback)
                {
                    int count = Encoding.UTF8.GetBytes(ch, utf8);
                    bool all = true;
                    for (int k = 0; k < count; k++)
                    {
                        all &= _fallbackIds[utf8[k]] >= 0;
                    }

                    if (all)
                    {
                        for (int k = 0; k < count; k++)
                        {
                            symbols[n++] = ~_fallbackIds[utf8[k]];
                        }

                        previousUnknown = false;
                        continue;
                    }
                }

                if (UnknownId is int unk && !(FuseUnknown && previousUnknown))
                {
                    symbols[n++] = ~unk;
                }

                previousUnknown = UnknownId != null;
            }
        }

        symbols = symbols[..n];
        if (n <= SmallWord)
        {
            n = MergeSmall(symbols);
            symbols = symbols[..n];
        }
        else
        {
            n = MergeLarge(symbols);
            symbols = symbols[..n];
        }

        foreach (int id in symbols)
        {
            output.Add(id < 0 ? ~id : id);
        }
    }

    /// <summary>Short words: scan for the lowest-ranked (then leftmost) pair, merge, repeat. Returns the new length.</summary>
    private int MergeSmall(Span<int> ids)
    {
        int n = ids.Length;
        while (n > 1)
        {
            int bestRank = int.MaxValue, bestPos = -1;
            for (int i = 0; i + 1 < n; i++)
            {
                if (ids[i] >= 0 && ids[i + 1] >= 0 && _mergeRanks.TryGetValue(Key(ids[i], ids[i + 1]), out int rank) && rank < bestRank)
                {
                    bestRank = rank;
                    bestPos = i;
                }
            }

            if (bestPos < 0)
            {
                break;
            }

            ids[bestPos] = _mergeResults[bestRank];
            ids[(bestPos + 2)..n].CopyTo(ids[(bestPos + 1)..]);
            n--;
        }

        return n;
    }

    /// <summary>Long words: a priority queue of (rank, position), as Hugging Face's <c>Word::merge_all</c>. Returns the new length.</summary>
    private int MergeLarge(Span<int> ids)
    {
        int n = ids.Length;
        int[] next = new int[n];
        int[] prev = new int[n];
        for (int i = 0; i < n; i++)
        {
            next[i] = i + 1 < n ? i + 1 : -1;
            prev[i] = i - 1;
        }

        var queue = new PriorityQueue<int, long>(n);
        for (int i = 0; i + 1 < n; i++)
        {
            if (ids[i] >= 0 && ids[i + 1] >= 0 && _mergeRanks.TryGetValue(Key(ids[i], ids[i + 1]), out int rank))
            {
                queue.Enqueue(i, ((long)rank << 32) | (uint)i);
            }
        }

        while (queue.TryDequeue(out int pos, out long priority))
        {
            int rank = (int)(priority >> 32);
            int right = next[pos];
            if (right < 0 || ids[pos] < 0 || ids[right] < 0)
            {
                continue;
            }

            // Skip stale entries: the pair at pos must still be the one this entry was queued for.
            if (!_mergeRanks.TryGetValue(Key(ids[pos], ids[right]), out int currentRank) || currentRank != rank)
            {
                continue;
            }

            ids[pos] = _mergeResults[rank];
            ids[right] = int.MinValue; // removed (never a valid id, and never merges)
            int after = next[right];
            next[pos] = after;
            if (after >= 0)
            {
                prev[after] = pos;
            }

            int before = prev[pos];
            if (before >= 0 && ids[before] >= 0 && _mergeRanks.TryGetValue(Key(ids[before], ids[pos]), out int r1))
            {
                queue.Enqueue(before, ((long)r1 << 32) | (uint)before);
            }

            if (after >= 0 && ids[after] >= 0 && _mergeRanks.TryGetValue(Key(ids[pos], ids[after]), out int r2))
            {
                queue.Enqueue(pos, ((long)r2 << 32) | (uint)pos);
            }
        }

        int count = 0;
        for (int i = 0; i >= 0; i = next[i])
        {
            ids[count++] = ids[i];
        }

        return count;
    }
}
