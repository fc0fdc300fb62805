using Minnow.Tokenizers;
using static Minnow.Tests.Tokenizers.TokenizerTestData;

namespace Minnow.Tests.Tokenizers;

public class ChatTemplateTests
{
    private static readonly ChatMessage[] Conversation =
    [
        ChatMessage.System("Be brief."),
        ChatMessage.User("Hi"),
        ChatMessage.Assistant("Hello!"),
        ChatMessage.User("How are you?"),
    ];

    // Fragments with the markers of real templates (the detection looks only at markers).
    private const string ChatMLWithDefaultSystem =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    private const string Llama3 = "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}";

    private const string Zephyr = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + eos_token }}\n{% endif %}{% endfor %}";

    private const string Llama2 = "{% if messages[0]['role'] == 'system' %}{{ '<<SYS>>\\n' }}{% endif %}{{ bos_token + '[INST] ' + content + ' [/INST]' }}";

    [Fact]
    public void DetectsFormatsByMarkers()
    {
        Assert.Equal(ChatFormat.ChatML, ChatTemplate.Detect(ChatMLWithDefaultSystem).Format);
        Assert.Equal(ChatFormat.Llama3, ChatTemplate.Detect(Llama3).Format);
        Assert.Equal(ChatFormat.Zephyr, ChatTemplate.Detect(Zephyr).Format);
        Assert.Equal(ChatFormat.Llama2, ChatTemplate.Detect(Llama2).Format);
        Assert.Equal(ChatFormat.Gemma, ChatTemplate.Detect("{{ '<start_of_turn>' + role + '\\n' }}").Format);
        Assert.Equal(ChatFormat.Plain, ChatTemplate.Detect(null).Format);
        Assert.Equal(ChatFormat.Plain, ChatTemplate.Detect("{{ messages }}").Format);
    }

    [Fact]
    public void ChatMLUsesTheTemplatesDefaultSystemPrompt()
    {
        var template = ChatTemplate.Detect(ChatMLWithDefaultSystem);
        Assert.Equal("You are a helpful AI assistant named SmolLM, trained by Hugging Face", template.DefaultSystemPrompt);
        Assert.Equal(
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            template.Apply([ChatMessage.User("Hi")], addGenerationPrompt: true));
        Assert.Equal(
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n",
            template.Apply(Conversation, addGenerationPrompt: false));
        Assert.Null(ChatTemplate.Detect("{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}").DefaultSystemPrompt);
    }

    [Fact]
    public void FormatsEachFamily()
    {
        Assert.Equal(
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            ChatTemplate.Apply(Llama3, Conversation, addGenerationPrompt: true));
        Assert.Equal(
            "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nHow are you?</s>\n<|assistant|>\n",
            ChatTemplate.Apply(Zephyr, Conversation, addGenerationPrompt: true));
        Assert.Equal(
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] How are you? [/INST]",
            ChatTemplate.Apply(Llama2, Conversation, addGenerationPrompt: true));
        Assert.Equal(
            "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nHow are you?<|end|>\n<|assistant|>\n",
            ChatTemplate.Create(ChatFormat.Phi3).Apply(Conversation, addGenerationPrompt: true));
        Assert.Equal(
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n",
            ChatTemplate.Create(ChatFormat.Gemma).Apply(Conversation, addGenerationPrompt: true));
        Assert.Equal(
            "System: Be brief.\nUser: Hi\nAssistant: Hello!\nUser: How are you?\nAssistant:",
            ChatTemplate.Create(ChatFormat.Plain).Apply(Conversation, addGenerationPrompt: true));
    }

    [Fact]
    public void SharedData_Phi3TemplateFromGgufAndEncoding()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var phi3 = Gguf("phi-3");
        var template = ChatTemplate.For(phi3);
        Assert.Equal(ChatFormat.Phi3, template.Format);
        string prompt = template.Apply([ChatMessage.User("Hi")], addGenerationPrompt: true);
        Assert.Equal("<|user|>\nHi<|end|>\n<|assistant|>\n", prompt);
        var ids = phi3.Encode(prompt, addSpecial: true);
        Assert.Equal(1, ids[0]);
        Assert.Equal(32010, ids[1]);
        Assert.Equal(32001, ids[^1]);
    }

    [Fact]
    public void SharedData_SmolLM2ChatPromptEncodesSpecialTokens()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var tok = SmolLM2();
        string prompt = ChatTemplate.For(tok).Apply([ChatMessage.User("Hi")], addGenerationPrompt: true);
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", prompt);
        var ids = tok.Encode(prompt, addSpecial: true);
        Assert.Equal(1, ids[0]);
        Assert.Equal(3, ids.Count(id => id is 1 or 2)); // <|im_start|> twice, <|im_end|> once
        Assert.Contains(2, tok.EosIds);
    }
}
