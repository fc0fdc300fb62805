using Minnow.Export.Onnx;
using Minnow.Loading;
using Minnow.Models;
using Minnow.OnnxRuntime;
using Minnow.Tests.Cli;
using Minnow.Tests.Models;

namespace Minnow.Tests.OnnxRuntime;

/// <summary>
/// Every golden checkpoint exported to ONNX (F32) and run in ONNX Runtime gives Minnow's logits at every position —
/// a prefill, then one token at a time through present → past — and the same greedy continuation.
/// </summary>
public unsafe class OnnxGoldenTests
{
    internal static float[] MinnowLogits(TransformerModel model, int[] ids)
    {
        using var cache = new KvCache(model.Config, ids.Length);
        var logits = new float[ids.Length * model.Config.VocabSize];
        fixed (float* p = logits)
        {
            model.Forward(ids, cache, p, allLogits: true);
        }

        return logits;
    }

    internal static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string where)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            float tolerance = 1e-4f * MathF.Max(1, MathF.Abs(expected[i]));
            Assert.True(MathF.Abs(actual[i] - expected[i]) <= tolerance, $"{where} logit {i}: ONNX Runtime {actual[i]} vs Minnow {expected[i]}");
        }
    }

    internal static int ArgMax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++)
        {
            if (row[i] > row[best])
            {
                best = i;
            }
        }

        return best;
    }

    [Theory]
    [MemberData(nameof(GoldenReference.Names), MemberType = typeof(GoldenReference))]
    public void OnnxExport_F32_RunsInOnnxRuntimeWithMinnowsLogitsAndGreedyTokens(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        using var folder = new TempFolder();
        OnnxExporter.Export(model, folder.Path, new OnnxExportOptions { Type = OnnxWeightType.F32 });
        using var ort = OrtDecoder.Open(folder.Path, threads: 1);
        int vocab = model.Config.VocabSize;
        var ids = golden.InputIds;
        var expected = MinnowLogits(model, ids);

        // Prefill of 8 tokens (all their logits), then one token per step.
        const int prefill = 8;
        var first = ort.Forward(ids.AsSpan(0, prefill), allLogits: true);
        AssertClose(expected.AsSpan(0, prefill * vocab), first, $"{name} prefill");
        for (int t = prefill; t < ids.Length; t++)
        {
            var step = ort.Forward(ids.AsSpan(t, 1), allLogits: false);
            AssertClose(expected.AsSpan(t * vocab, vocab), step, $"{name} position {t}");
        }

        // Greedy continuation from the reference prompt: the same 16 tokens as Minnow's.
        var prompt = GoldenReference.Ints(golden.For("f32").GetProperty("greedy_prompt"));
        var minnowTokens = new List<int>();
        using (var cache = new KvCache(model.Config, prompt.Length + 16))
        {
            var logits = new float[vocab];
            fixed (float* p = logits)
            {
                model.Forward(prompt, cache, p, allLogits: false);
                for (int i = 0; i < 16; i++)
                {
                    minnowTokens.Add(ArgMax(logits));
                    model.Forward([minnowTokens[^1]], cache, p, allLogits: false);
                }
            }
        }

        ort.Reset();
        var ortTokens = new List<int>();
        var row = ort.Forward(prompt, allLogits: false);
        for (int i = 0; i < 16; i++)
        {
            ortTokens.Add(ArgMax(row));
            row = ort.Forward([ortTokens[^1]], allLogits: false);
        }

        Assert.Equal(minnowTokens, ortTokens);
    }
}
