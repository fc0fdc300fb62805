using Microsoft.ML.OnnxRuntimeGenAI;

namespace Minnow.OnnxRuntime;

/// <summary>An exported folder opened by onnxruntime-genai (its genai_config.json, model.onnx and tokenizer).</summary>
public sealed class GenAiRunner : IDisposable
{
    private readonly Model _model;
    private Tokenizer? _tokenizer;

    private GenAiRunner(Model model) => _model = model;

    public static GenAiRunner Open(string folder)
    {
        try
        {
            return new GenAiRunner(new Model(folder));
        }
        catch (OnnxRuntimeGenAIException e)
        {
            throw new MinnowException($"{folder}: onnxruntime-genai cannot open it ({e.Message.Split('\n')[0]}).");
        }
    }

    /// <summary>The prompt's ids by onnxruntime-genai's own tokenizer (from the folder's tokenizer.json).</summary>
    public int[] Encode(string text)
    {
        _tokenizer ??= new Tokenizer(_model);
        using var sequences = _tokenizer.Encode(text);
        return sequences[0].ToArray();
    }

    /// <summary>Greedy continuation of <paramref name="prompt"/>: up to <paramref name="maxNewTokens"/> new ids (fewer when the model ends).</summary>
    public int[] GreedyTokens(ReadOnlySpan<int> prompt, int maxNewTokens)
    {
        using var parameters = new GeneratorParams(_model);
        parameters.SetSearchOption("max_length", prompt.Length + maxNewTokens);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new Generator(_model, parameters);
        generator.AppendTokens(prompt);
        while (!generator.IsDone())
        {
            generator.GenerateNextToken();
        }

        return generator.GetSequence(0)[prompt.Length..].ToArray();
    }

    public void Dispose()
    {
        _tokenizer?.Dispose();
        _model.Dispose();
    }
}
