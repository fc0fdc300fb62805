using Minnow.Tokenizers;

namespace Minnow.Serving;

/// <summary>
/// Prompts as a model expects them: plain text with the BOS its tokenizer adds, or a conversation rendered with the
/// model's chat template and ending with the assistant's turn opener. Shared by the command line and the server.
/// </summary>
public sealed class PromptEncoder(ITextTokenizer tokenizer)
{
    public ITextTokenizer Tokenizer { get; } = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));

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
