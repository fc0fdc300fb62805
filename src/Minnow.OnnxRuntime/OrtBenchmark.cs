using System.Diagnostics;
using Minnow.Benchmarking;

namespace Minnow.OnnxRuntime;

/// <summary>One measured run of an exported model in ONNX Runtime: the prompt in one call, then one token per call.</summary>
public static class OrtBenchmark
{
    public static EngineRun Run(OrtDecoder decoder, ReadOnlySpan<int> prompt, ReadOnlySpan<int> decode, CancellationToken ct)
    {
        decoder.Reset();
        var watch = Stopwatch.StartNew();
        decoder.Forward(prompt, allLogits: false);
        double prefill = watch.Elapsed.TotalSeconds;
        watch.Restart();
        for (int i = 0; i < decode.Length; i++)
        {
            ct.ThrowIfCancellationRequested();
            decoder.Forward(decode.Slice(i, 1), allLogits: false);
        }

        double decodeSeconds = watch.Elapsed.TotalSeconds;
        decoder.Reset();
        return new EngineRun
        {
            PromptTokens = prompt.Length,
            DecodedTokens = decode.Length,
            PrefillSeconds = prefill,
            DecodeSeconds = decodeSeconds,
            TimeToFirstTokenMs = prefill * 1000,
        };
    }

    /// <summary>The logits of every position of <paramref name="ids"/> (one prefill call).</summary>
    public static float[] AllLogits(OrtDecoder decoder, ReadOnlySpan<int> ids)
    {
        decoder.Reset();
        var logits = decoder.Forward(ids, allLogits: true);
        decoder.Reset();
        return logits;
    }
}
