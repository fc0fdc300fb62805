using Minnow.Models;

namespace Minnow.Training;

/// <summary>The model a student is distilled from: its next-token logits for a batch of sequences.</summary>
public unsafe interface IDistillationTeacher
{
    /// <summary>
    /// Writes the logits [batch · seqLen, vocab] of <paramref name="batch"/> sequences of <paramref name="seqLen"/>
    /// tokens ([batch · seqLen] row-major, each sequence starting at position 0) to <paramref name="logits"/>.
    /// </summary>
    void Logits(ReadOnlySpan<int> inputs, int batch, int seqLen, float* logits);
}

/// <summary>An inference model as a teacher: each sequence is run from an empty KV cache, all logits kept.</summary>
public sealed unsafe class InferenceTeacher(TransformerModel model) : IDistillationTeacher, IDisposable
{
    private KvCache? _cache;

    public void Logits(ReadOnlySpan<int> inputs, int batch, int seqLen, float* logits)
    {
        if (_cache is null || _cache.Capacity < seqLen)
        {
            _cache?.Dispose();
            _cache = new KvCache(model.Config, seqLen);
        }

        long stride = (long)seqLen * model.Config.VocabSize;
        for (int b = 0; b < batch; b++)
        {
            _cache.Clear();
            model.Forward(inputs.Slice(b * seqLen, seqLen), _cache, logits + (b * stride), allLogits: true);
        }
    }

    public void Dispose() => _cache?.Dispose();
}
