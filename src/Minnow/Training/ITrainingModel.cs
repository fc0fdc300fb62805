using Minnow.Models;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>What <see cref="Trainer"/> needs of a trainable model (<see cref="LlamaTrainingModel"/>, <see cref="GptTrainingModel"/>).</summary>
public interface ITrainingModel : IDisposable
{
    ModelConfig Config { get; }

    ParameterStore Parameters { get; }

    /// <summary>
    /// Runs the batch and adds <paramref name="lossScale"/> × ∂(mean NLL)/∂θ to the gradients; returns the mean NLL
    /// over positions whose target is not negative, and their number.
    /// </summary>
    (double MeanLoss, int Targets) ForwardBackward(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, int batch, int seqLen, float lossScale = 1f);

    /// <summary>Forward only: the summed NLL over positions with a target, and their number.</summary>
    (double TotalLoss, int Targets) Evaluate(ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, int batch, int seqLen);

    /// <summary>Allocates activations for batches up to [batch, seqLen].</summary>
    void EnsureCapacity(int batch, int seqLen);

    /// <summary>Writes config.json and model.safetensors in Hugging Face layout.</summary>
    void SaveHuggingFace(string folder, DType dtype = DType.F32);

    /// <summary>The Hugging Face config.json of the model (stored in training checkpoints).</summary>
    string HuggingFaceConfigJson();
}

/// <summary>Creates the trainable model class for a config's architecture.</summary>
public static class TrainingModels
{
    public static ITrainingModel Create(ModelConfig config, WorkerPool? pool = null) => config.Architecture switch
    {
        Architecture.Llama => new LlamaTrainingModel(config, pool),
        Architecture.GptNeoX or Architecture.Gpt2 => new GptTrainingModel(config, pool),
        _ => throw new MinnowException($"training does not support {config.ModelType}."),
    };
}

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
