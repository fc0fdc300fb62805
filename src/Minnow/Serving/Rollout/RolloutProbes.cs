using Minnow.Inference;
using Minnow.Models;

namespace Minnow.Serving.Rollout;

/// <summary>The rollout's quality guard measures, taken on each variant's model outside the serving engine.</summary>
public static class RolloutProbes
{
    /// <summary>Longest window the probe perplexity scores at once (the probe is a short fixed text).</summary>
    public const int MaxWindow = 256;

    /// <summary>
    /// Perplexity of <paramref name="model"/> (with <paramref name="adapter"/>, when a variant is an adapter) on the
    /// probe tokens: windows of up to <see cref="MaxWindow"/> tokens, the second half of each scored, as
    /// <see cref="PerplexityEvaluator"/> does.
    /// </summary>
    public static double Perplexity(TransformerModel model, IReadOnlyList<int> tokens, LoraAdapter? adapter = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokens);
        int vocab = model.Config.VocabSize;
        foreach (int id in tokens)
        {
            if (id < 0 || id >= vocab)
            {
                throw new MinnowException($"probe token id {id} is outside the model's vocabulary of {vocab}.");
            }
        }

        int ctx = Math.Min(tokens.Count, Math.Min(MaxWindow, model.Config.MaxPositions));
        if (ctx < 4)
        {
            throw new MinnowException($"the probe has {tokens.Count} tokens; the perplexity guard needs at least 4.");
        }

        return PerplexityEvaluator.Evaluate(model, tokens, ctx, cancellation: cancellation, adapter: adapter).Perplexity;
    }
}
