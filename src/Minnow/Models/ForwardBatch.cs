namespace Minnow.Models;

/// <summary>Which rows of a segment produce logits.</summary>
public enum LogitRows
{
    /// <summary>None (a prefill chunk that is not the prompt's last).</summary>
    None,

    /// <summary>The segment's last row (the next token of a prompt or a decode step).</summary>
    Last,

    /// <summary>Every row (perplexity, calibration).</summary>
    All,
}

/// <summary>
/// The rows of one forward step: tokens of up to many sequences, each sequence's rows consecutive positions that
/// continue its cache (a decode step is one row; a prefill chunk several). Every linear layer runs once over all rows;
/// attention runs per segment against that sequence's own pages. Reused from step to step: <see cref="Clear"/>, then
/// <see cref="Add"/> each sequence's rows. Owned by whoever runs the step.
/// </summary>
public sealed class ForwardBatch
{
    /// <summary>One sequence's consecutive rows in a step.</summary>
    public struct Segment
    {
        public KvCache Cache;
        public int FirstRow;
        public int Count;
        public LoraAdapter? Adapter;
        public LogitRows Logits;

        /// <summary>The first of this segment's rows in the step's logits.</summary>
        public int FirstLogitRow;
    }

    private int[] _tokens;
    private int[] _positions;
    private Segment[] _segments;

    public ForwardBatch(int rowCapacity = 64, int segmentCapacity = 8)
    {
        _tokens = new int[Math.Max(1, rowCapacity)];
        _positions = new int[_tokens.Length];
        _segments = new Segment[Math.Max(1, segmentCapacity)];
    }

    public int RowCount { get; private set; }

    public int SegmentCount { get; private set; }

    /// <summary>Rows that produce logits.</summary>
    public int LogitRowCount { get; private set; }

    /// <summary>When set, sees the input of every linear layer (calibration for quantization and pruning).</summary>
    public ILinearInputObserver? Observer { get; set; }

    /// <summary>When set, times the parts of the steps run with this batch (<c>bench --profile</c>).</summary>
    public StepProfile? Profile { get; set; }

    public ReadOnlySpan<int> Tokens => _tokens.AsSpan(0, RowCount);

    public ReadOnlySpan<int> Positions => _positions.AsSpan(0, RowCount);

    public ReadOnlySpan<Segment> Segments => _segments.AsSpan(0, SegmentCount);

    /// <summary>Whether any segment carries an adapter.</summary>
    public bool HasAdapters { get; private set; }

    public void Clear()
    {
        RowCount = 0;
        SegmentCount = 0;
        LogitRowCount = 0;
        HasAdapters = false;
        Array.Clear(_segments);
    }

    /// <summary>Adds a sequence's next tokens, at positions cache.Length.., to the step.</summary>
    public void Add(KvCache cache, ReadOnlySpan<int> tokens, LogitRows logits, LoraAdapter? adapter = null)
    {
        if (tokens.IsEmpty)
        {
            return;
        }

        EnsureRoom(RowCount + tokens.Length, SegmentCount + 1);
        int start = cache.Length;
        for (int i = 0; i < tokens.Length; i++)
        {
            _tokens[RowCount + i] = tokens[i];
            _positions[RowCount + i] = start + i;
        }

        _segments[SegmentCount++] = new Segment
        {
            Cache = cache,
            FirstRow = RowCount,
            Count = tokens.Length,
            Adapter = adapter,
            Logits = logits,
            FirstLogitRow = LogitRowCount,
        };
        RowCount += tokens.Length;
        LogitRowCount += logits switch
        {
            LogitRows.All => tokens.Length,
            LogitRows.Last => 1,
            _ => 0,
        };
        HasAdapters |= adapter is not null;
    }

    private void EnsureRoom(int rows, int segments)
    {
        if (rows > _tokens.Length)
        {
            int size = Math.Max(rows, _tokens.Length * 2);
            Array.Resize(ref _tokens, size);
            Array.Resize(ref _positions, size);
        }

        if (segments > _segments.Length)
        {
            Array.Resize(ref _segments, Math.Max(segments, _segments.Length * 2));
        }
    }
}
