using Minnow.Models;
using Minnow.Tensors;
using Minnow.Training;
using Xunit.Abstractions;
using static Minnow.Tests.Training.GptBlockGradientTests;

namespace Minnow.Tests.Training;

/// <summary>
/// Each block of the Llama family's backward pass on its own (linear with bias, embedding, RMSNorm, RoPE, causal
/// attention with grouped-query heads, the SiLU-gated MLP, cross-entropy over the vocabulary) against central finite
/// differences over every input value. The whole-model checks are in <see cref="GradientTests"/>.
/// </summary>
public unsafe class LlamaBlockGradientTests(ITestOutputHelper output)
{
    private static WorkerPool Pool => WorkerPool.Shared;

    private void Check(string what, float[] values, float[] analytic, Func<double> loss, float step = 1e-2f)
    {
        var numeric = new double[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            numeric[i] = GradientTests.CentralDifference(values, i, loss, step);
        }

        double relative = RelativeError([.. analytic.Select(a => (double)a)], numeric);
        output.WriteLine($"{what}: relative error {relative:E2} over {values.Length} values");
        Assert.True(relative < MaxRelativeError, $"{what}: relative error {relative:E2}");
    }

    [Fact]
    public void Linear_InputWeightAndBiasGradientsMatchFiniteDifferences()
    {
        const int rows = 5, inDim = 9, outDim = 7;
        var x = Gaussian(rows * inDim, 1);
        var w = Gaussian(outDim * inDim, 2, std: 0.3);
        var b = Gaussian(outDim, 3);
        var c = Gaussian(rows * outDim, 4);
        var y = new float[rows * outDim];
        double Loss()
        {
            fixed (float* px = x, pw = w, pb = b, py = y)
            {
                LinearOp.Forward(px, rows, inDim, pw, outDim, pb, py, Pool);
            }

            return Projection(y, c);
        }

        var dx = new float[x.Length];
        var dw = new float[w.Length];
        var db = new float[b.Length];
        fixed (float* px = x, pw = w, pc = c, pdx = dx, pdw = dw, pdb = db)
        {
            LinearOp.Backward(px, pc, rows, inDim, pw, outDim, pdx, false, pdw, pdb, Pool);
        }

        Check("linear input", x, dx, Loss);
        Check("linear weight", w, dw, Loss);
        Check("linear bias", b, db, Loss);
    }

    [Fact]
    public void Embedding_TableGradientMatchesFiniteDifferences_WithRepeatedIds()
    {
        const int vocab = 6, dim = 8;
        int[] ids = [3, 1, 3, 0, 5, 3, 1];
        var table = Gaussian(vocab * dim, 5);
        var c = Gaussian(ids.Length * dim, 6);
        var x = new float[ids.Length * dim];
        double Loss()
        {
            fixed (float* pt = table, px = x)
            fixed (int* pi = ids)
            {
                EmbeddingOp.Forward(pt, pi, ids.Length, dim, px, Pool);
            }

            return Projection(x, c);
        }

        var dTable = new float[table.Length];
        fixed (float* pc = c, pd = dTable)
        fixed (int* pi = ids)
        {
            EmbeddingOp.Backward(pi, pc, ids.Length, dim, pd, Pool);
        }

        Check("embedding table", table, dTable, Loss);
        Assert.All(dTable.AsSpan(2 * dim, dim).ToArray(), g => Assert.Equal(0f, g)); // token 2 is never looked up
    }

    [Fact]
    public void RmsNorm_InputAndWeightGradientsMatchFiniteDifferences()
    {
        const int rows = 5, dim = 12;
        const float eps = 1e-5f;
        var x = Gaussian(rows * dim, 7, std: 1.5, mean: 0.3);
        var weight = Gaussian(dim, 8, std: 0.5, mean: 1);
        var c = Gaussian(rows * dim, 9);
        var y = new float[rows * dim];
        double Loss()
        {
            fixed (float* px = x, pw = weight, py = y)
            {
                RmsNormOp.Forward(px, pw, py, rows, dim, eps, Pool);
            }

            return Projection(y, c);
        }

        var dx = new float[x.Length];
        var dWeight = new float[dim];
        var rstd = new float[rows];
        fixed (float* px = x, pw = weight, pc = c, pdx = dx, pdw = dWeight, pr = rstd)
        {
            RmsNormOp.Backward(px, pw, pc, pdx, pdw, pr, rows, dim, eps, Pool);
        }

        Check("RMSNorm input", x, dx, Loss);
        Check("RMSNorm weight", weight, dWeight, Loss);
    }

    [Fact]
    public void Rope_FullRotaryGradientMatchesFiniteDifferences()
    {
        const int batch = 2, seqLen = 5, heads = 2, headDim = 8;
        var config = RopeConfig(Architecture.Llama, heads, headDim, headDim, seqLen);
        int rows = batch * seqLen, width = heads * headDim;
        CheckRope("RoPE input", config, batch, seqLen, Gaussian(rows * width, 10), Gaussian(rows * width, 11),
            (what, values, analytic, loss) => Check(what, values, analytic, loss));
    }

    [Theory]
    [InlineData(4, 4)] // multi-head
    [InlineData(4, 2)] // grouped-query: two query heads per kv head
    [InlineData(3, 1)] // multi-query
    public void CausalAttention_QueryKeyValueGradientsMatchFiniteDifferences(int heads, int kvHeads)
    {
        const int batch = 2, seqLen = 5, headDim = 4;
        int rows = batch * seqLen;
        var q = Gaussian(rows * heads * headDim, 12);
        var k = Gaussian(rows * kvHeads * headDim, 13);
        var v = Gaussian(rows * kvHeads * headDim, 14);
        var c = Gaussian(rows * heads * headDim, 15);
        var probs = new float[AttentionOp.ProbsLength(batch, seqLen, heads)];
        var o = new float[q.Length];
        double Loss()
        {
            fixed (float* pq = q, pk = k, pv = v, pp = probs, po = o)
            {
                AttentionOp.Forward(pq, pk, pv, pp, po, batch, seqLen, heads, kvHeads, headDim, Pool);
            }

            return Projection(o, c);
        }

        Loss(); // the probabilities the backward pass reads
        var dq = new float[q.Length];
        var dk = new float[k.Length];
        var dv = new float[v.Length];
        fixed (float* pq = q, pk = k, pv = v, pp = probs, pc = c, pdq = dq, pdk = dk, pdv = dv)
        {
            AttentionOp.Backward(pq, pk, pv, pp, pc, pdq, pdk, pdv, batch, seqLen, heads, kvHeads, headDim, Pool);
        }

        Check("attention queries", q, dq, Loss);
        Check("attention keys", k, dk, Loss);
        Check("attention values", v, dv, Loss);

        // Causality: with a gradient on the first position's output only, no later key or value gets any.
        Array.Clear(c, heads * headDim, c.Length - (heads * headDim));
        Loss();
        fixed (float* pq = q, pk = k, pv = v, pp = probs, pc = c, pdq = dq, pdk = dk, pdv = dv)
        {
            AttentionOp.Backward(pq, pk, pv, pp, pc, pdq, pdk, pdv, batch, seqLen, heads, kvHeads, headDim, Pool);
        }

        Assert.Contains(dv.AsSpan(0, kvHeads * headDim).ToArray(), g => g != 0); // (its key has none: one key, probability 1)
        Assert.All(dk.AsSpan(kvHeads * headDim).ToArray(), g => Assert.Equal(0f, g));
        Assert.All(dv.AsSpan(kvHeads * headDim).ToArray(), g => Assert.Equal(0f, g));
    }

    [Fact]
    public void SwiGlu_GateAndUpGradientsMatchFiniteDifferences()
    {
        const int count = 4099; // more than one parallel chunk, and a tail
        var gate = Gaussian(count, 16, std: 3);
        var up = Gaussian(count, 17);
        var c = Gaussian(count, 18);
        var y = new float[count];
        double Loss()
        {
            fixed (float* pg = gate, pu = up, py = y)
            {
                SwiGluOp.Forward(pg, pu, py, count, Pool);
            }

            return Projection(y, c);
        }

        var dGate = new float[count];
        var dUp = new float[count];
        fixed (float* pg = gate, pu = up, pc = c, pdg = dGate, pdu = dUp)
        {
            SwiGluOp.Backward(pg, pu, pc, pdg, pdu, count, Pool);
        }

        Check("SwiGLU gate", gate, dGate, Loss, step: 1e-3f);
        Check("SwiGLU up", up, dUp, Loss, step: 1e-3f);
    }

    [Fact]
    public void CrossEntropy_LogitGradientMatchesFiniteDifferences_AndSkipsMaskedRows()
    {
        const int rows = 4, vocab = 13;
        var logits = Gaussian(rows * vocab, 19, std: 2);
        int[] targets = [5, -1, 0, 12];
        var rowLoss = new float[rows];
        double Loss()
        {
            var copy = (float[])logits.Clone();
            fixed (float* pl = copy, pr = rowLoss)
            fixed (int* pt = targets)
            {
                return CrossEntropyOp.Compute(pl, pt, rows, vocab, pr, false, 1f, Pool);
            }
        }

        var gradient = (float[])logits.Clone();
        fixed (float* pl = gradient, pr = rowLoss)
        fixed (int* pt = targets)
        {
            CrossEntropyOp.Compute(pl, pt, rows, vocab, pr, true, 1f, Pool);
        }

        Check("cross-entropy logits", logits, gradient, Loss);
        Assert.All(gradient.AsSpan(vocab, vocab).ToArray(), g => Assert.Equal(0f, g));
    }
}
