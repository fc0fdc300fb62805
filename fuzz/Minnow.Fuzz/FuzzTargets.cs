using Minnow.Benchmarking;
using Minnow.Formats.Llama2c;
using Minnow.Formats.Safetensors;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Optimization;
using Minnow.Tensors;
using Minnow.Tokenizers;

namespace Minnow.Fuzz;

/// <summary>
/// What one fuzz input is fed to: each target writes the bytes where a user's file would be (beside valid
/// companions, e.g. a fuzzed config.json beside valid weights) and runs what the command line runs on it: open,
/// load, one forward pass, encode and decode. A <see cref="MinnowException"/> (or an I/O error) is the clean
/// refusal the CLI prints as one <c>error:</c> line; anything else escaping is a finding, and so is a refusal whose
/// message carries control characters or undecodable bytes. Shared by the fuzz harness (fuzz/Minnow.Fuzz) and the
/// regression test that replays tests/fuzz-regressions on every CI run.
/// </summary>
public static unsafe class FuzzTargets
{
    /// <summary>The targets, by the name scripts/fuzz.sh and tests/fuzz-regressions use.</summary>
    public static readonly IReadOnlyList<string> Names =
    [
        "safetensors", "gguf", "config", "tokenizer-json", "tokenizer-config", "peft-config", "peft-safetensors",
        "llama2c", "llama2c-tokenizer", "optimize-cache",
    ];

    /// <summary>The small Llama of the fixtures and seeds: a few kilobytes, so AFL mutates structure, not weights.</summary>
    public static readonly ModelShape TinyShape = new()
    {
        Name = "fuzz-tiny",
        Model = "minnow/fuzz-tiny",
        ModelType = "llama",
        HiddenSize = 16,
        IntermediateSize = 32,
        Layers = 2,
        Heads = 2,
        KvHeads = 1,
        VocabSize = 64,
        MaxPositions = 32,
        NormEps = 1e-5,
        RopeTheta = 10000,
        TieEmbeddings = true,
        BosTokenId = 1,
        EosTokenId = 2,
    };

    public const string CacheKey = "fuzz-cache-key";

    private static readonly string[] s_texts = ["Once upon a time, a little fish swam.", "  héllo\t wörld 🐟 <|im_start|>user\n", "", new string('a', 40) + "!"];

    /// <summary>Runs one input through a target. Throws only for a finding (never for a clean refusal).</summary>
    public static void Run(string target, ReadOnlySpan<byte> data, FuzzFixtures fixtures)
    {
        string dir = fixtures.FreshCase();
        try
        {
            switch (target)
            {
                case "safetensors":
                    Write(dir, "model.safetensors", data);
                    File.Copy(fixtures.TinyConfig, Path.Combine(dir, "config.json"));
                    Refused(() =>
                    {
                        using (var file = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors")))
                        {
                            foreach (var t in file.Tensors.Values)
                            {
                                TouchTensor(t);
                            }
                        }

                        RunModel(dir);
                    });
                    break;

                case "gguf":
                    Write(dir, "model.gguf", data);
                    Refused(() => RunModel(Path.Combine(dir, "model.gguf")));
                    break;

                case "config":
                    Write(dir, "config.json", data);
                    File.Copy(fixtures.TinyWeights, Path.Combine(dir, "model.safetensors"));
                    Refused(() => RunModel(dir));
                    break;

                case "tokenizer-json":
                    Write(dir, "tokenizer.json", data);
                    File.Copy(fixtures.TokenizerConfig, Path.Combine(dir, "tokenizer_config.json"));
                    Refused(() => RunTokenizer(TokenizerLoader.Load(dir)));
                    break;

                case "tokenizer-config":
                    Write(dir, "tokenizer_config.json", data);
                    File.Copy(fixtures.TokenizerJson, Path.Combine(dir, "tokenizer.json"));
                    Refused(() => RunTokenizer(TokenizerLoader.Load(dir)));
                    break;

                case "peft-config":
                    Write(dir, LoraConfig.ConfigFile, data);
                    File.Copy(fixtures.AdapterWeights, Path.Combine(dir, LoraConfig.WeightsFile));
                    Refused(() => RunAdapter(dir, fixtures));
                    break;

                case "peft-safetensors":
                    Write(dir, LoraConfig.WeightsFile, data);
                    File.Copy(fixtures.AdapterConfig, Path.Combine(dir, LoraConfig.ConfigFile));
                    Refused(() => RunAdapter(dir, fixtures));
                    break;

                case "llama2c":
                    Write(dir, "model.bin", data);
                    Refused(() => RunModel(Path.Combine(dir, "model.bin")));
                    break;

                case "llama2c-tokenizer":
                    Write(dir, "tokenizer.bin", data);
                    Refused(() => RunTokenizer(Llama2cTokenizerFile.Load(Path.Combine(dir, "tokenizer.bin"))));
                    Refused(() => RunTokenizer(Llama2cTokenizerFile.Load(Path.Combine(dir, "tokenizer.bin"), 512)));
                    break;

                case "optimize-cache":
                    Write(dir, "cache.json", data);
                    Refused(() =>
                    {
                        var cache = new CandidateCache(Path.Combine(dir, "cache.json"), CacheKey);
                        _ = cache.TryGet("q4_0");
                        cache.Put(new Measurement { Name = "q8_0", WeightBytes = 1, Parameters = 1, QuickPerplexity = 2 });
                        _ = new CandidateCache(Path.Combine(dir, "cache.json"), CacheKey).TryGet("q8_0")
                            ?? throw new FuzzFindingException("the cache lost the measurement it had just saved");
                    });
                    break;

                default:
                    throw new ArgumentException($"unknown fuzz target '{target}' (targets: {string.Join(", ", Names)})", nameof(target));
            }
        }
        finally
        {
            fixtures.EndCase(dir);
        }
    }

    /// <summary>
    /// Runs <paramref name="action"/>; a clean refusal is swallowed after its message is checked, anything else
    /// (an unexpected exception type) propagates as a finding.
    /// </summary>
    private static void Refused(Action action)
    {
        try
        {
            action();
        }
        catch (Exception e) when (e is MinnowException or IOException or UnauthorizedAccessException)
        {
            CheckMessage(e.Message);
        }
    }

    /// <summary>A refusal's message must be printable text: no raw bytes, no control characters but spaces.</summary>
    public static void CheckMessage(string message)
    {
        for (int i = 0; i < message.Length; i++)
        {
            char c = message[i];
            if (char.IsHighSurrogate(c) && i + 1 < message.Length && char.IsLowSurrogate(message[i + 1]))
            {
                i++;
                continue;
            }

            if ((char.IsControl(c) && c != '\n') || c == '\uFFFD' || char.IsSurrogate(c))
            {
                throw new FuzzFindingException($"the error message prints raw bytes (U+{(int)c:X4} at {i}): {FuzzFixtures.Printable(message)}");
            }
        }

        if (message.Length > 2000)
        {
            throw new FuzzFindingException($"the error message is {message.Length} characters long: {FuzzFixtures.Printable(message[..200])}...");
        }
    }

    private static void Write(string dir, string name, ReadOnlySpan<byte> data)
    {
        using var f = new FileStream(Path.Combine(dir, name), FileMode.CreateNew, FileAccess.Write);
        f.Write(data);
    }

    private static void TouchTensor(Tensor t)
    {
        if (t.ElementCount > 0 && t.ElementCount <= 1 << 22)
        {
            _ = t.ToFloatArray();
        }
    }

    /// <summary>What `minnow info` and `minnow generate` do: open the model and its tokenizer, run two tokens.</summary>
    private static void RunModel(string path)
    {
        using var loaded = LoadedModel.Open(path);
        var model = loaded.Model;
        using var cache = new KvCache(model.Config, Math.Min(4, model.Config.MaxPositions));
        int vocab = model.Config.VocabSize;
        var logits = new float[vocab];
        int[] tokens = [0, vocab - 1];
        fixed (float* p = logits)
        {
            model.Forward(tokens.AsSpan(0, Math.Min(tokens.Length, cache.Capacity)), cache, p, allLogits: false);
        }

        if (loaded.Tokenizer is { } tokenizer)
        {
            RunTokenizer(tokenizer);
        }
    }

    private static void RunTokenizer(ITextTokenizer tokenizer)
    {
        foreach (string text in s_texts)
        {
            var ids = tokenizer.Encode(text, addSpecial: true);
            _ = tokenizer.Decode(ids);
        }

        var all = new int[Math.Min(tokenizer.VocabSize, 4096)];
        for (int i = 0; i < all.Length; i++)
        {
            all[i] = i;
        }

        _ = tokenizer.Decode(all);
        _ = ChatTemplate.For(tokenizer).Apply([ChatMessage.System("Be brief."), ChatMessage.User("Hi!")], addGenerationPrompt: true);
    }

    private static void RunAdapter(string dir, FuzzFixtures fixtures)
    {
        using var model = ModelLoader.LoadModel(fixtures.TinyFolder);
        using var adapter = LoraAdapter.Load(dir, model.Config);
        using var cache = new KvCache(model.Config, 2);
        var logits = new float[model.Config.VocabSize];
        fixed (float* p = logits)
        {
            model.Forward([1, 2], cache, p, allLogits: false, adapter);
        }
    }
}

/// <summary>A finding of a fuzz target that is not an exception of the library (e.g. an error message with raw bytes).</summary>
public sealed class FuzzFindingException(string message) : Exception(message);

/// <summary>
/// The valid companion files the targets put beside a fuzzed one (made once per process in a scratch folder from
/// the project's own generators and models/default's tokenizer), and a fresh folder per case.
/// </summary>
public sealed class FuzzFixtures : IDisposable
{
    private readonly string _root;
    private long _case;

    public FuzzFixtures(string repositoryRoot, string? scratch = null)
    {
        _root = scratch ?? Path.Combine(Path.GetTempPath(), $"minnow-fuzz-{Environment.ProcessId}");
        Directory.CreateDirectory(_root);
        TinyFolder = Path.Combine(_root, "tiny");
        SyntheticCheckpoint.Write(FuzzTargets.TinyShape, TinyFolder, seed: 7);
        string tokenizerFolder = Path.Combine(repositoryRoot, "models", "default");
        TokenizerJson = Path.Combine(tokenizerFolder, "tokenizer.json");
        TokenizerConfig = Path.Combine(tokenizerFolder, "tokenizer_config.json");

        string adapter = Path.Combine(_root, "adapter");
        var config = FuzzTargets.TinyShape;
        var lora = new LoraConfig { Rank = 2, Alpha = 4, Targets = [LoraTarget.QProj, LoraTarget.VProj], BaseModel = "fuzz-tiny" };
        var tensors = new SafetensorsWriter();
        var random = new Random(3);
        for (int layer = 0; layer < config.Layers; layer++)
        {
            foreach (var (target, outDim) in new[] { (LoraTarget.QProj, config.Heads * config.HeadDim), (LoraTarget.VProj, config.KvHeads * config.HeadDim) })
            {
                float[] a = [.. Enumerable.Range(0, lora.Rank * config.HiddenSize).Select(_ => (float)random.NextDouble() - 0.5f)];
                float[] b = [.. Enumerable.Range(0, outDim * lora.Rank).Select(_ => (float)random.NextDouble() - 0.5f)];
                tensors.Add(LoraTargets.PeftName(layer, target, a: true), [lora.Rank, config.HiddenSize], a);
                tensors.Add(LoraTargets.PeftName(layer, target, a: false), [outDim, lora.Rank], b);
            }
        }

        lora.Save(adapter, tensors);
        AdapterConfig = Path.Combine(adapter, LoraConfig.ConfigFile);
        AdapterWeights = Path.Combine(adapter, LoraConfig.WeightsFile);
    }

    public string TinyFolder { get; }

    public string TinyConfig => Path.Combine(TinyFolder, SyntheticCheckpoint.ConfigFile);

    public string TinyWeights => Path.Combine(TinyFolder, SyntheticCheckpoint.WeightsFile);

    public string TokenizerJson { get; }

    public string TokenizerConfig { get; }

    public string AdapterConfig { get; }

    public string AdapterWeights { get; }

    /// <summary>An empty folder for one case.</summary>
    public string FreshCase()
    {
        string dir = Path.Combine(_root, "case-" + Interlocked.Increment(ref _case).ToString(System.Globalization.CultureInfo.InvariantCulture));
        Directory.CreateDirectory(dir);
        return dir;
    }

    public void EndCase(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Text that the regression corpus and reports can quote safely.</summary>
    public static string Printable(string s) => new(s.Select(c => char.IsControl(c) || char.IsSurrogate(c) ? '?' : c).ToArray());
}
