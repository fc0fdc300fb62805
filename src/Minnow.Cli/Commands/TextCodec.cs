using Minnow.Loading;

namespace Minnow.Cli.Commands;

/// <summary>The commands' view of a model's tokenizer: prompt encoding (with the chat template), streaming decode, stop ids.</summary>
internal sealed class TextCodec
{
    private TextCodec()
    {
    }

    public IReadOnlyList<int> EndOfGenerationIds { get; } = [];

    /// <summary>The BOS id the tokenizer puts at the start of a text, or null when it adds none.</summary>
    public int? AddedBos => null;

    public static TextCodec? For(LoadedModel model) => null;

    /// <summary>Why there is no tokenizer, e.g. "no tokenizer.json beside config.json".</summary>
    public static string Missing(LoadedModel model) => model.Format switch
    {
        ModelFormat.Llama2c => "the model has no tokenizer (no tokenizer.bin beside the llama2.c checkpoint)",
        ModelFormat.Gguf => "the model has no tokenizer (the GGUF file has no tokenizer.ggml vocabulary)",
        _ => "the model has no tokenizer (no tokenizer.json in its folder)",
    };

    public int[] EncodePrompt(string text, bool chat, string? system) => throw new NotImplementedException();

    public int[] EncodeText(string text) => throw new NotImplementedException();

    public Func<int, string> CreateStreamingDecoder() => throw new NotImplementedException();
}
