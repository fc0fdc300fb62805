using Minnow.Tensors;

namespace Minnow.Models;

public static class ModelFactory
{
    /// <summary>Builds the architecture the config names over the given weights.</summary>
    public static TransformerModel Create(ModelConfig config, WeightSet weights, WorkerPool? pool = null) => config.Architecture switch
    {
        Architecture.Llama => new LlamaModel(config, weights, pool),
        Architecture.GptNeoX => new GptNeoXModel(config, weights, pool),
        Architecture.Gpt2 => new Gpt2Model(config, weights, pool),
        _ => throw new MinnowException($"{weights.Source}: architecture {config.Architecture} is not supported."),
    };
}
