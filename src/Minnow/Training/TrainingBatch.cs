using Minnow.Models;

namespace Minnow.Training;

/// <summary>Checks a batch of token ids and copies it into a model's native input buffers.</summary>
internal static unsafe class TrainingBatch
{
    public static void Validate(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, int batch, int seqLen, ModelConfig config)
    {
        int n = batch * seqLen;
        if (batch <= 0 || seqLen <= 0 || inputs.Length != n || targets.Length != n)
        {
            throw new ArgumentException($"expected {batch}×{seqLen} inputs and targets, got {inputs.Length} and {targets.Length}.");
        }

        if (seqLen > config.MaxPositions)
        {
            throw new MinnowException($"sequence length {seqLen} is longer than the model's {config.MaxPositions} positions.");
        }

        for (int i = 0; i < n; i++)
        {
            if ((uint)inputs[i] >= (uint)config.VocabSize || targets[i] >= config.VocabSize)
            {
                throw new MinnowException($"token id {Math.Max(inputs[i], targets[i])} is outside the vocabulary of {config.VocabSize}.");
            }
        }
    }

    /// <summary>Copies the ids; returns the number of targets that are not negative.</summary>
    public static int Stage(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, int* inputBuffer, int* targetBuffer)
    {
        int count = 0;
        for (int i = 0; i < inputs.Length; i++)
        {
            inputBuffer[i] = inputs[i];
            targetBuffer[i] = targets[i];
            if (targets[i] >= 0)
            {
                count++;
            }
        }

        return count;
    }
}
