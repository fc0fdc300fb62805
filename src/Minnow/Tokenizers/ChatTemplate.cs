using System.Text;
using System.Text.RegularExpressions;

namespace Minnow.Tokenizers;

/// <summary>One chat message; <see cref="Role"/> is "system", "user" or "assistant".</summary>
public sealed record ChatMessage(string Role, string Content)
{
    public static ChatMessage System(string content) => new("system", content);

    public static ChatMessage User(string content) => new("user", content);

    public static ChatMessage Assistant(string content) => new("assistant", content);
}

/// <summary>The chat prompt formats Minnow knows (detected from a model's Jinja chat template by its markers).</summary>
public enum ChatFormat
{
    /// <summary>No known template: "User: …" / "Assistant: …" lines.</summary>
    Plain,

    /// <summary><c>&lt;|im_start|&gt;role\n…&lt;|im_end|&gt;\n</c> (Qwen2, SmolLM2, many others).</summary>
    ChatML,

    /// <summary><c>[INST] &lt;&lt;SYS&gt;&gt;…&lt;&lt;/SYS&gt;&gt; … [/INST]</c> (Llama 2 chat, Mistral).</summary>
    Llama2,

    /// <summary><c>&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\n…&lt;|eot_id|&gt;</c> (Llama 3).</summary>
    Llama3,

    /// <summary><c>&lt;|user|&gt;\n…&lt;/s&gt;\n&lt;|assistant|&gt;\n</c> (Zephyr, TinyLlama chat).</summary>
    Zephyr,

    /// <summary><c>&lt;|user|&gt;\n…&lt;|end|&gt;\n&lt;|assistant|&gt;\n</c> (Phi-3).</summary>
    Phi3,

    /// <summary><c>&lt;start_of_turn&gt;user\n…&lt;end_of_turn&gt;\n&lt;start_of_turn&gt;model\n</c> (Gemma).</summary>
    Gemma,
}

/// <summary>
/// Formats chat messages into a prompt string for the common template families, detected from the model's Jinja
/// template by its markers (no Jinja engine). The result does not include the BOS token: encode it with
/// <c>addSpecial: true</c>, which adds BOS where the model's tokenizer does. Special tokens in the result (such as
/// <c>&lt;|im_end|&gt;</c>) are recognised by <see cref="ITextTokenizer.Encode(string, bool)"/>.
/// </summary>
public sealed partial class ChatTemplate
{
    private ChatTemplate(ChatFormat format, string eosToken, string? defaultSystemPrompt)
    {
        Format = format;
        EosToken = eosToken;
        DefaultSystemPrompt = defaultSystemPrompt;
    }

    public ChatFormat Format { get; }

    /// <summary>The end-of-sequence text used by formats that close turns with it (Zephyr, Llama 2).</summary>
    public string EosToken { get; }

    /// <summary>The system prompt the template inserts when the conversation has none (ChatML templates such as SmolLM2's and Qwen2.5's).</summary>
    public string? DefaultSystemPrompt { get; }

    public static ChatTemplate Create(ChatFormat format, string eosToken = "</s>", string? defaultSystemPrompt = null) =>
        new(format, eosToken, defaultSystemPrompt);

    /// <summary>Detects the format of a Jinja chat template; null or unknown templates give <see cref="ChatFormat.Plain"/>.</summary>
    public static ChatTemplate Detect(string? template, string eosToken = "</s>")
    {
        if (string.IsNullOrWhiteSpace(template))
        {
            return new ChatTemplate(ChatFormat.Plain, eosToken, null);
        }

        ChatFormat format =
            template.Contains("<|im_start|>", StringComparison.Ordinal) ? ChatFormat.ChatML
            : template.Contains("<|start_header_id|>", StringComparison.Ordinal) ? ChatFormat.Llama3
            : template.Contains("<start_of_turn>", StringComparison.Ordinal) ? ChatFormat.Gemma
            : template.Contains("<|user|>", StringComparison.Ordinal) && template.Contains("<|end|>", StringComparison.Ordinal) ? ChatFormat.Phi3
            : template.Contains("<|user|>", StringComparison.Ordinal) ? ChatFormat.Zephyr
            : template.Contains("[INST]", StringComparison.Ordinal) ? ChatFormat.Llama2
            : ChatFormat.Plain;
        string? system = null;
        if (format == ChatFormat.ChatML)
        {
            var m = DefaultChatMLSystem().Match(template);
            if (m.Success)
            {
                system = m.Groups[1].Value;
            }
        }

        return new ChatTemplate(format, eosToken, system);
    }

    /// <summary>
    /// The template for a tokenizer: its own chat template when it has one, else a guess from its special tokens
    /// (<c>&lt;|im_start|&gt;</c> → ChatML, ...), else <see cref="ChatFormat.Plain"/>.
    /// </summary>
    public static ChatTemplate For(ITextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        string eos = tokenizer.EosId is int e ? tokenizer.TokenToString(e) : "</s>";
        if (tokenizer.ChatTemplate != null)
        {
            return Detect(tokenizer.ChatTemplate, eos);
        }

        bool Has(string token) => tokenizer.StringToToken(token) is int id && tokenizer.IsSpecial(id);
        ChatFormat format = Has("<|im_start|>") && Has("<|im_end|>") ? ChatFormat.ChatML
            : Has("<|start_header_id|>") ? ChatFormat.Llama3
            : Has("<start_of_turn>") ? ChatFormat.Gemma
            : Has("<|user|>") && Has("<|end|>") ? ChatFormat.Phi3
            : ChatFormat.Plain;
        return new ChatTemplate(format, eos, null);
    }

    /// <summary>Detects the template and applies it (see <see cref="Apply(IReadOnlyList{ChatMessage}, bool)"/>).</summary>
    public static string Apply(string? template, IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, string eosToken = "</s>") =>
        Detect(template, eosToken).Apply(messages, addGenerationPrompt);

    /// <summary>
    /// Formats the conversation. With <paramref name="addGenerationPrompt"/>, ends with the header of an assistant
    /// turn so that the model writes the reply.
    /// </summary>
    public string Apply(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var sb = new StringBuilder();
        switch (Format)
        {
            case ChatFormat.ChatML:
                if (DefaultSystemPrompt != null && (messages.Count == 0 || messages[0].Role != "system"))
                {
                    sb.Append("<|im_start|>system\n").Append(DefaultSystemPrompt).Append("<|im_end|>\n");
                }

                foreach (var m in messages)
                {
                    sb.Append("<|im_start|>").Append(m.Role).Append('\n').Append(m.Content).Append("<|im_end|>\n");
                }

                if (addGenerationPrompt)
                {
                    sb.Append("<|im_start|>assistant\n");
                }

                break;

            case ChatFormat.Llama3:
                foreach (var m in messages)
                {
                    sb.Append("<|start_header_id|>").Append(m.Role).Append("<|end_header_id|>\n\n").Append(m.Content.Trim()).Append("<|eot_id|>");
                }

                if (addGenerationPrompt)
                {
                    sb.Append("<|start_header_id|>assistant<|end_header_id|>\n\n");
                }

                break;

            case ChatFormat.Zephyr:
                foreach (var m in messages)
                {
                    sb.Append("<|").Append(m.Role).Append("|>\n").Append(m.Content).Append(EosToken).Append('\n');
                }

                if (addGenerationPrompt)
                {
                    sb.Append("<|assistant|>\n");
                }

                break;

            case ChatFormat.Phi3:
                foreach (var m in messages)
                {
                    sb.Append("<|").Append(m.Role).Append("|>\n").Append(m.Content).Append("<|end|>\n");
                }

                if (addGenerationPrompt)
                {
                    sb.Append("<|assistant|>\n");
                }

                break;

            case ChatFormat.Gemma:
                {
                    string? system = null;
                    foreach (var m in messages)
                    {
                        if (m.Role == "system")
                        {
                            system = system == null ? m.Content : system + "\n\n" + m.Content;
                            continue;
                        }

                        string role = m.Role == "assistant" ? "model" : m.Role;
                        string content = m.Content.Trim();
                        if (system != null && m.Role == "user")
                        {
                            content = system + "\n\n" + content;
                            system = null;
                        }

                        sb.Append("<start_of_turn>").Append(role).Append('\n').Append(content).Append("<end_of_turn>\n");
                    }

                    if (addGenerationPrompt)
                    {
                        sb.Append("<start_of_turn>model\n");
                    }

                    break;
                }

            case ChatFormat.Llama2:
                {
                    // <s> is added by the tokenizer; later turns are closed with "</s>" and reopened with "<s>".
                    string? system = null;
                    bool first = true;
                    foreach (var m in messages)
                    {
                        switch (m.Role)
                        {
                            case "system":
                                system = m.Content;
                                break;
                            case "assistant":
                                sb.Append(' ').Append(m.Content.Trim()).Append(' ').Append(EosToken);
                                break;
                            default:
                                if (!first)
                                {
                                    sb.Append("<s>");
                                }

                                sb.Append("[INST] ");
                                if (system != null)
                                {
                                    sb.Append("<<SYS>>\n").Append(system).Append("\n<</SYS>>\n\n");
                                    system = null;
                                }

                                sb.Append(m.Content.Trim()).Append(" [/INST]");
                                first = false;
                                break;
                        }
                    }

                    break;
                }

            default:
                foreach (var m in messages)
                {
                    string role = m.Role.Length == 0 ? m.Role : char.ToUpperInvariant(m.Role[0]) + m.Role[1..];
                    sb.Append(role).Append(": ").Append(m.Content).Append('\n');
                }

                if (addGenerationPrompt)
                {
                    sb.Append("Assistant:");
                }

                break;
        }

        return sb.ToString();
    }

    public override string ToString() => Format.ToString();

    // '<|im_start|>system\n…<|im_end|>' with a literal system prompt inside a Jinja string ("\n" escaped or not).
    [GeneratedRegex(@"<\|im_start\|>system(?:\\n|\n)([^'""{}<>\\]+)<\|im_end\|>")]
    private static partial Regex DefaultChatMLSystem();
}
