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
