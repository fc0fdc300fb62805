using Minnow.Models;
using Minnow.Quantization;
using Minnow.Tensors;

namespace Minnow.Optimization;

/// <summary>A model with some or all of its tensors stored in another type (values converted through float32).</summary>
internal static class ModelConversion
{
    /// <summary>
    /// Converts each tensor to <paramref name="typeOf"/>(tensor). Tensors already in that type are shared with
    /// <paramref name="model"/> when <paramref name="shareUnchanged"/> (the source must then outlive the copy), else copied.
    /// </summary>
    public static TransformerModel Convert(TransformerModel model, Func<Tensor, DType> typeOf, bool shareUnchanged, WorkerPool? pool)
    {
        var owner = new ModelQuantizer.BufferOwner();
        try
        {
            var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var (name, t) in model.Weights.All)
            {
                var type = typeOf(t);
                tensors[name] = shareUnchanged && type == t.Type ? t : owner.Store(name, type, t.Shape, Dequantize.FromFloats(type, t.ToFloatArray()));
            }

            var set = new WeightSet(tensors, model.Weights.Source, owner);
            try
            {
                return ModelFactory.Create(model.Config, set, pool);
            }
            catch
            {
                set.Dispose();
                throw;
            }
        }
        catch
        {
            owner.Dispose();
            throw;
        }
    }
}
