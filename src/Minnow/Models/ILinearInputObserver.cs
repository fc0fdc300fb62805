using Minnow.Tensors;

namespace Minnow.Models;

/// <summary>Receives the activations entering each linear layer during a forward pass.</summary>
public interface ILinearInputObserver
{
    /// <param name="weight">The layer's weight [outputs, inputs] (its <see cref="Tensor.Name"/> identifies it).</param>
    /// <param name="input">[tokens, inputs] row-major.</param>
    void OnLinearInput(Tensor weight, ReadOnlySpan<float> input, int tokens);
}
