using Minnow.Loading;
using Minnow.Tokenizers;

namespace Minnow.Serving;

/// <summary>
/// Prompts as a model expects them: plain text with the BOS its tokenizer adds, or a conversation rendered with the
/// model's chat template and ending with the assistant's turn opener; texts to score; generated ids back to text.
/// The one implementation the command line and the server share.
/// </summary>
public sealed class PromptEncoder(ITextTokenizer tokenizer)
{
    public ITextTokenizer Tokenizer { get; } = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));

    /// <summary>The ids that end generation (EOS and end-of-turn tokens).</summary>
    public IReadOnlyList<int> EndOfGenerationIds => Tokenizer.EosIds;

    /// <summary>The BOS id the tokenizer puts at the start of a text, or null when it adds none.</summary>
    public int? AddedBos => Tokenizer.AddsBos ? Tokenizer.BosId : null;

    /// <summary>The model's encoder, or null when it has no tokenizer (see <see cref="Missing"/>).</summary>
    public static PromptEncoder? For(LoadedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.Tokenizer is null ? null : new PromptEncoder(model.Tokenizer);
    }

    /// <summary>Why a model has no tokenizer, e.g. "the model has no tokenizer (no tokenizer.json in its folder)".</summary>
    public static string Missing(LoadedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.Format switch
        {
            ModelFormat.Llama2c => "the model has no tokenizer (no tokenizer.bin beside the llama2.c checkpoint)",
            ModelFormat.Gguf => "the model has no tokenizer (the GGUF file has no tokenizer.ggml vocabulary)",
            _ => "the model has no tokenizer (no tokenizer.json in its folder)",
        };
    }

    /// <summary>
    /// A prompt as the command line takes it: the text to continue, or with <paramref name="chat"/> one user turn
    /// (after an optional <paramref name="system"/> message) in the chat template.
    /// </summary>
    public int[] EncodePrompt(string text, bool chat, string? system = null)
    {
        if (!chat)
        {
            return EncodeText(text);
        }

        var messages = new List<ChatMessage>();
        if (!string.IsNullOrEmpty(system))
        {
            messages.Add(ChatMessage.System(system));
        }

        messages.Add(ChatMessage.User(text));
        return EncodeChat(messages);
    }

    /// <summary>A whole text for scoring, as llama.cpp's perplexity tool tokenizes it (BOS and any end-of-text ids the tokenizer adds kept).</summary>
    public int[] EncodeForScoring(string text) => [.. Tokenizer.Encode(text, addSpecial: true, parseSpecial: false)];

    /// <summary>A decoder for generated ids that continue a prompt; control tokens are left out.</summary>
    public TokenStreamDecoder CreateStreamingDecoder() => new(Tokenizer, skipSpecialTokens: true, atStartOfText: false);

    /// <summary>The whole text of some ids (control tokens left out).</summary>
    public string Decode(IEnumerable<int> ids) => Tokenizer.Decode(ids, skipSpecialTokens: true);

    /// <summary>A text to continue; control tokens written in it are encoded as plain text.</summary>
    public int[] EncodeText(string text) => WithoutSuffix(Tokenizer.Encode(text, addSpecial: true, parseSpecial: false));

    /// <summary>A conversation the model answers (the chat template, with the generation prompt).</summary>
    public int[] EncodeChat(IReadOnlyList<ChatMessage> messages)
    {
        string rendered = ChatTemplate.For(Tokenizer).Apply(messages, addGenerationPrompt: true);
        return WithoutSuffix(Tokenizer.Encode(rendered, addSpecial: true));
    }

    /// <summary>A prompt goes on: drop the end-of-text ids a tokenizer appends with its special tokens (if any).</summary>
    private int[] WithoutSuffix(IReadOnlyList<int> ids)
    {
        int keep = ids.Count;
        if (Tokenizer is TextTokenizer { SuffixIds.Count: > 0 } t && keep >= t.SuffixIds.Count &&
            ids.Skip(keep - t.SuffixIds.Count).SequenceEqual(t.SuffixIds))
        {
            keep -= t.SuffixIds.Count;
        }

        return [.. ids.Take(keep)];
    }

    /// <summary>The text a token adds to the output (UTF-8 bytes, a broken character shown as U+FFFD): for log-probabilities.</summary>
    public string TokenText(int id) => System.Text.Encoding.UTF8.GetString(Tokenizer.TokenBytes(id));
}
