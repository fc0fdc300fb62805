using Minnow.Loading;
using Minnow.Tokenizers;

namespace Minnow.Cli.Commands;

/// <summary>The commands' view of a model's tokenizer: prompt encoding (with the chat template), streaming decode, stop ids.</summary>
internal sealed class TextCodec
{
    private readonly ITextTokenizer _tokenizer;

    private TextCodec(ITextTokenizer tokenizer) => _tokenizer = tokenizer;

    /// <summary>The ids that end generation (EOS and end-of-turn tokens).</summary>
    public IReadOnlyList<int> EndOfGenerationIds => _tokenizer.EosIds;

    /// <summary>The BOS id the tokenizer puts at the start of a text, or null when it adds none.</summary>
    public int? AddedBos => _tokenizer.AddsBos ? _tokenizer.BosId : null;

    public static TextCodec? For(LoadedModel model) => model.Tokenizer is null ? null : new TextCodec(model.Tokenizer);

    /// <summary>Why there is no tokenizer, e.g. "no tokenizer.json in its folder".</summary>
    public static string Missing(LoadedModel model) => model.Format switch
    {
        ModelFormat.Llama2c => "the model has no tokenizer (no tokenizer.bin beside the llama2.c checkpoint)",
        ModelFormat.Gguf => "the model has no tokenizer (the GGUF file has no tokenizer.ggml vocabulary)",
        _ => "the model has no tokenizer (no tokenizer.json in its folder)",
    };

    /// <summary>
    /// A prompt as the model expects it: BOS where the tokenizer adds one; with <paramref name="chat"/>, wrapped
    /// in the model's chat template as one user turn (after an optional system message) ending with the
    /// assistant's turn opener.
    /// </summary>
    public int[] EncodePrompt(string text, bool chat, string? system)
    {
        if (!chat)
        {
            return WithoutSuffix(_tokenizer.Encode(text, addSpecial: true, parseSpecial: false));
        }

        var messages = new List<ChatMessage>();
        if (!string.IsNullOrEmpty(system))
        {
            messages.Add(ChatMessage.System(system));
        }

        messages.Add(ChatMessage.User(text));
        string rendered = ChatTemplate.For(_tokenizer).Apply(messages, addGenerationPrompt: true);
        return WithoutSuffix(_tokenizer.Encode(rendered, addSpecial: true));
    }

    /// <summary>A prompt goes on: drop the end-of-text ids a tokenizer appends with its special tokens (if any).</summary>
    private int[] WithoutSuffix(IReadOnlyList<int> ids)
    {
        int keep = ids.Count;
        if (_tokenizer is TextTokenizer { SuffixIds.Count: > 0 } t && keep >= t.SuffixIds.Count &&
            ids.Skip(keep - t.SuffixIds.Count).SequenceEqual(t.SuffixIds))
        {
            keep -= t.SuffixIds.Count;
        }

        return [.. ids.Take(keep)];
    }

    /// <summary>A whole text for scoring, as llama.cpp's perplexity tool tokenizes it (BOS added where the tokenizer adds one).</summary>
    public int[] EncodeText(string text) => [.. _tokenizer.Encode(text, addSpecial: true, parseSpecial: false)];

    /// <summary>A decoder for generated ids that continue a prompt; control tokens are left out.</summary>
    public TokenStreamDecoder CreateStreamingDecoder() => new(_tokenizer, skipSpecialTokens: true, atStartOfText: false);

    /// <summary>The whole text of some ids (control tokens left out).</summary>
    public string Decode(IEnumerable<int> ids) => _tokenizer.Decode(ids, skipSpecialTokens: true);
}
