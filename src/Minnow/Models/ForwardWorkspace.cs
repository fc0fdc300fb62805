using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>
/// The activation buffers of forward steps ([rows, width] row-major) and the logits they produce, owned by whoever
/// runs the steps (an engine's step loop, a session, a thread): never by the model, so any number of workspaces run
/// one model at once. Grows to the largest step it has seen (and the widest model), then allocates nothing.
/// </summary>
public sealed unsafe class ForwardWorkspace : IDisposable
{
    [ThreadStatic]
    private static ForwardWorkspace? t_current;

    private readonly List<NativeBuffer> _buffers = [];
    private NativeBuffer? _logits;
    private int _wide, _q, _kv, _ff, _rotary, _vocab;

    public int RowCapacity { get; private set; }

    public int LogitRowCapacity { get; private set; }

    public float* X, Xb, Xb2, Q, K, V, Qkv, AttnOut, Hb, Hb2, Cos, Sin;

    /// <summary>[LogitRowCount, vocab]: the logits of the last step's logit rows, in segment order.</summary>
    public float* Logits => _logits is null ? null : _logits.FloatPointer;

    /// <summary>The calling thread's own workspace (for callers that run one step at a time on their thread).</summary>
    public static ForwardWorkspace ForCurrentThread => t_current ??= new ForwardWorkspace();

    /// <summary>Makes room for <paramref name="rows"/> rows of <paramref name="config"/>'s model and <paramref name="logitRows"/> rows of logits.</summary>
    public void EnsureCapacity(ModelConfig config, int rows, int logitRows)
    {
        var c = config;
        int wide = Math.Max(c.HiddenSize, c.MaxQDim);
        if (rows > RowCapacity || wide > _wide || c.MaxQDim > _q || c.MaxKvDim > _kv || c.MaxIntermediate > _ff || c.RotaryDim > _rotary)
        {
            foreach (var b in _buffers)
            {
                b.Dispose();
            }

            _buffers.Clear();
            rows = Math.Max(rows, RowCapacity);
            _wide = Math.Max(_wide, wide);
            _q = Math.Max(_q, c.MaxQDim);
            _kv = Math.Max(_kv, c.MaxKvDim);
            _ff = Math.Max(_ff, c.MaxIntermediate);
            _rotary = Math.Max(_rotary, c.RotaryDim);
            X = Alloc(rows, _wide);
            Xb = Alloc(rows, _wide);
            Xb2 = Alloc(rows, _wide);
            Q = Alloc(rows, _q);
            K = Alloc(rows, _kv);
            V = Alloc(rows, _kv);
            Qkv = Alloc(rows, _q + (2 * _kv));
            AttnOut = Alloc(rows, _q);
            Hb = Alloc(rows, _ff);
            Hb2 = Alloc(rows, _ff);
            Cos = Alloc(1, Math.Max(1, _rotary / 2));
            Sin = Alloc(1, Math.Max(1, _rotary / 2));
            RowCapacity = rows;
        }

        if (logitRows > LogitRowCapacity || c.VocabSize > _vocab)
        {
            _logits?.Dispose();
            LogitRowCapacity = Math.Max(logitRows, LogitRowCapacity);
            _vocab = Math.Max(_vocab, c.VocabSize);
            _logits = NativeBuffer.Floats((long)Math.Max(1, LogitRowCapacity) * _vocab);
        }
    }

    private float* Alloc(int rows, int width)
    {
        var b = NativeBuffer.Floats((long)Math.Max(1, rows) * Math.Max(1, width));
        _buffers.Add(b);
        return b.FloatPointer;
    }

    public void Dispose()
    {
        foreach (var b in _buffers)
        {
            b.Dispose();
        }

        _buffers.Clear();
        _logits?.Dispose();
        _logits = null;
        RowCapacity = 0;
        LogitRowCapacity = 0;
        _wide = _q = _kv = _ff = _rotary = _vocab = 0;
    }
}
