using System.Text.RegularExpressions;

namespace Minnow.Tokenizers;

/// <summary>
/// The pre-tokenizer regular expressions of common byte-level BPE tokenizers, and the mapping from GGUF's
/// <c>tokenizer.ggml.pre</c> names to them (following llama.cpp and the models' own tokenizer.json files).
/// </summary>
internal static class PreTokenizerPatterns
{
    /// <summary>GPT-2 (also GPT-NeoX/Pythia, SmolLM after splitting digits, Phi-2, OLMo, MPT...).</summary>
    public const string Gpt2 = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>Llama 3 (numbers in groups of up to three digits).</summary>
    public const string Llama3 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Qwen2 / Qwen2.5 (single digits).</summary>
    public const string Qwen2 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    public const string SingleDigit = @"\p{N}";

    public const string Falcon1 = @"[\p{P}\$\+<=>\^~\|`]+";

    public const string ThreeDigits = "[0-9][0-9][0-9]";

    public const string Bloom = @" ?[^(\s|.,!?…。，、।۔،)]+";

    public const string DeepSeekCoderLetters = @"\s?\p{L}+";

    public const string DeepSeekCoderPunct = @"\s?\p{P}+";

    public const string DeepSeekCjk = "[一-龥ࠀ-一가-퟿]+";

    public const string Newline = "[\r\n]";

    public const string Tekken = @"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private static readonly Dictionary<string, Regex> Cache = [];

    private const int MaxCached = 64;

    /// <summary>Longest one pre-tokenizer match may take (real patterns take microseconds).</summary>
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);

    /// <summary>Compiles (and caches) a pre-tokenizer pattern; throws <see cref="ArgumentException"/> for syntax .NET does not support.</summary>
    public static Regex Create(string pattern)
    {
        lock (Cache)
        {
            if (!Cache.TryGetValue(pattern, out var regex))
            {
                // Patterns come from tokenizer files: a match timeout bounds a pathological one, and the cache is
                // bounded so that many different files do not keep compiled patterns alive forever.
                regex = new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant, MatchTimeout);
                if (Cache.Count >= MaxCached)
                {
                    Cache.Clear();
                }

                Cache[pattern] = regex;
            }

            return regex;
        }
    }

    /// <summary>
    /// The regex sequence for a GGUF <c>tokenizer.ggml.pre</c> value (applied one after the other, each splitting
    /// the pieces of the previous one, keeping matches and gaps), or null for an unknown name.
    /// A missing or "default" pre-tokenizer uses GPT-2's regex, as Hugging Face's GPT-2 and GPT-NeoX tokenizers do.
    /// </summary>
    public static string[]? ForGgufPre(string? pre) => (pre ?? "default") switch
    {
        "default" or "gpt-2" or "gpt2" or "mpt" or "olmo" or "jais" or "phi-2" or "stablelm" => [Gpt2],
        "llama3" or "llama-v3" or "llama-bpe" or "dbrx" or "smaug-bpe" or "chatglm-bpe" or "falcon3" or "pixtral" or "superbpe"
            or "exaone4" => [Llama3],
        "qwen2" or "stablelm2" or "deepseek-r1-qwen" or "megrez" or "hunyuan" => [Qwen2],
        "starcoder" or "refact" or "command-r" or "smollm" or "codeshell" or "exaone" or "minerva-7b" => [SingleDigit, Gpt2],
        "falcon" => [Falcon1, Gpt2, ThreeDigits],
        "poro-chat" or "bloom" or "gpt3-finnish" => [Bloom],
        "viking" => [Bloom, SingleDigit],
        "deepseek-coder" => [Newline, DeepSeekCoderLetters, DeepSeekCoderPunct, DeepSeekCjk, SingleDigit],
        "tekken" => [Tekken],
        _ => null,
    };

    /// <summary>GGUF pre-tokenizer names whose Hugging Face tokenizer sets <c>ignore_merges</c> (whole words in the vocabulary are used as is).</summary>
    public static bool IgnoresMerges(string? pre) => pre is "llama3" or "llama-v3" or "llama-bpe" or "falcon3" or "pixtral" or "superbpe";
}
