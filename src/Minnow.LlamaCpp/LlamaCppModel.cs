using System.Diagnostics;
using LLama;
using LLama.Common;
using LLama.Native;

namespace Minnow.LlamaCpp;

/// <summary>How llama.cpp runs a model.</summary>
public sealed record LlamaCppOptions
{
    public int Threads { get; init; } = 2;

    /// <summary>Tokens the KV cache holds.</summary>
    public int ContextSize { get; init; } = 512;

    /// <summary>Most tokens per llama_decode call (default: the context size, so a prompt goes in one batch).</summary>
    public int? BatchSize { get; init; }

    /// <summary>
    /// Keep the KV cache in F32 and (unless <see cref="FlashAttention"/> says otherwise) attention unfused, so that
    /// llama.cpp computes in F32 throughout: for checking a file's layout to tight tolerances. Default: F16, as llama.cpp.
    /// </summary>
    public bool F32KvCache { get; init; }

    /// <summary>Flash attention on or off; null lets llama.cpp choose (it enables it on CPUs). On CPUs it works in F16.</summary>
    public bool? FlashAttention { get; init; }

    /// <summary>Sequences the context holds at once (for <see cref="LlamaCppModel.RunBatched"/>).</summary>
    public int Sequences { get; init; } = 1;
}

/// <summary>Times of several sequences decoded together (see <see cref="LlamaCppModel.RunBatched"/>).</summary>
public sealed record LlamaCppBatchedRun
{
    public required int Sequences { get; init; }

    public required int PromptTokens { get; init; }

    /// <summary>Tokens decoded per sequence after its prompt.</summary>
    public required int DecodedTokens { get; init; }

    public required double PrefillSeconds { get; init; }

    public required double DecodeSeconds { get; init; }

    /// <summary>Each sequence's greedy tokens (the first chosen after the prompt, then one per step).</summary>
    public required int[][] Tokens { get; init; }

    /// <summary>Decoded tokens of all sequences per second.</summary>
    public double AggregateDecodeTokensPerSecond => Sequences * DecodedTokens / DecodeSeconds;

    /// <summary>Milliseconds a step takes: the time between two tokens of one sequence.</summary>
    public double MsPerTokenPerSequence => DecodeSeconds * 1000 / DecodedTokens;
}

/// <summary>Times of one prefill + decode run (see <see cref="LlamaCppModel.Run"/>).</summary>
public sealed record LlamaCppRun
{
    public required int PromptTokens { get; init; }

    public required int DecodedTokens { get; init; }

    /// <summary>Seconds to evaluate the prompt in one batch (logits of its last token).</summary>
    public required double PrefillSeconds { get; init; }

    /// <summary>Seconds to decode <see cref="DecodedTokens"/> tokens one at a time.</summary>
    public required double DecodeSeconds { get; init; }

    /// <summary>From the start of the prefill to the first token chosen (argmax of the prompt's last logits).</summary>
    public required double TimeToFirstTokenMs { get; init; }

    /// <summary>The argmax after the prompt and after each decoded token (greedy choices, not fed back).</summary>
    public required int[] Argmax { get; init; }

    public double PrefillTokensPerSecond => PromptTokens / PrefillSeconds;

    public double DecodeTokensPerSecond => DecodedTokens / DecodeSeconds;
}

/// <summary>
/// A GGUF model running in llama.cpp (LLamaSharp's native CPU build, picked for this CPU at run time), used as the
/// peer Minnow is measured against: evaluate given token ids (prompt in one batch, then one token at a time) with
/// timings, or get the logits of every position for agreement checks. One sequence; not thread-safe.
/// </summary>
public sealed class LlamaCppModel : IDisposable
{
    private static readonly Lock InitLock = new();
    private static bool s_initialised;

    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;
    private readonly LLamaBatch _batch = new();

    private LlamaCppModel(string path, LLamaWeights weights, LLamaContext context, int threads)
    {
        Path = path;
        _weights = weights;
        _context = context;
        Threads = threads;
        VocabSize = weights.Vocab.Count;
        ContextSize = (int)context.ContextSize;
        BatchSize = (int)context.BatchSize;
    }

    public string Path { get; }

    public int Threads { get; }

    public int VocabSize { get; }

    public int ContextSize { get; }

    /// <summary>Most tokens one llama_decode call takes; longer inputs are fed in several batches.</summary>
    public int BatchSize { get; }

    /// <summary>Parameters as llama.cpp counts them.</summary>
    public long ParameterCount => (long)_weights.NativeHandle.ParameterCount;

    /// <summary>Bytes of the weights as llama.cpp counts them.</summary>
    public long WeightBytes => (long)_weights.NativeHandle.SizeInBytes;

    /// <summary>The tokens llama.cpp treats as control tokens (BOS, EOS, &lt;|im_end|&gt;...) — empty without a vocabulary.</summary>
    public bool IsControl(int id) => ((LLamaToken)id).IsControl(_weights.Vocab);

    /// <summary>A metadata value of the GGUF file as llama.cpp read it, or null.</summary>
    public string? Metadata(string key) => _weights.Metadata.TryGetValue(key, out string? value) ? value : null;

    /// <summary>
    /// Loads a GGUF file with <paramref name="threads"/> threads and a context of <paramref name="contextSize"/>
    /// tokens, with llama.cpp's defaults otherwise (KV cache in F16, flash attention chosen by llama.cpp).
    /// llama.cpp's log goes nowhere except errors, to stderr.
    /// </summary>
    public static LlamaCppModel Load(string path, int threads, int contextSize) =>
        Load(path, new LlamaCppOptions { Threads = threads, ContextSize = contextSize });

    public static LlamaCppModel Load(string path, LlamaCppOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Threads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.ContextSize, 1);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: file not found.", path);
        }

        Initialise();
        uint batch = (uint)Math.Max(1, options.BatchSize ?? options.ContextSize);
        var parameters = new ModelParams(System.IO.Path.GetFullPath(path))
        {
            ContextSize = (uint)options.ContextSize,
            BatchSize = batch,
            UBatchSize = Math.Min(batch, 512u),
            Threads = options.Threads,
            BatchThreads = options.Threads,
            GpuLayerCount = 0,
            SeqMax = (uint)Math.Max(1, options.Sequences),
            FlashAttention = options.FlashAttention ?? (options.F32KvCache ? false : null),
        };
        if (options.F32KvCache)
        {
            parameters.TypeK = GGMLType.GGML_TYPE_F32;
            parameters.TypeV = GGMLType.GGML_TYPE_F32;
        }

        LLamaWeights weights;
        try
        {
            weights = LLamaWeights.LoadFromFile(parameters);
        }
        catch (Exception e) when (e is LLama.Exceptions.LoadWeightsFailedException or LLama.Exceptions.RuntimeError)
        {
            throw new InvalidDataException($"{path}: llama.cpp could not load the model ({e.Message}).", e);
        }

        try
        {
            var context = weights.CreateContext(parameters);
            return new LlamaCppModel(path, weights, context, options.Threads);
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    /// <summary>Forgets the tokens evaluated so far (clears the KV cache).</summary>
    public void Reset() => _context.NativeHandle.MemoryClear(data: true);

    /// <summary>
    /// From an empty cache: evaluates <paramref name="prompt"/> in one batch (logits of its last token only), then
    /// feeds <paramref name="decode"/> one token at a time, timing both phases.
    /// </summary>
    public LlamaCppRun Run(ReadOnlySpan<int> prompt, ReadOnlySpan<int> decode)
    {
        if (prompt.IsEmpty)
        {
            throw new ArgumentException("the prompt is empty.", nameof(prompt));
        }

        CheckFits(prompt.Length + decode.Length);
        Reset();
        var argmax = new int[decode.Length + 1];
        var watch = Stopwatch.StartNew();
        int position = 0;
        for (int start = 0; start < prompt.Length; start += BatchSize)
        {
            int count = Math.Min(BatchSize, prompt.Length - start);
            _batch.Clear();
            for (int i = 0; i < count; i++)
            {
                _batch.Add(prompt[start + i], position++, LLamaSeqId.Zero, logits: start + i == prompt.Length - 1);
            }

            Decode();
        }

        argmax[0] = ArgMax(_context.NativeHandle.GetLogitsIth(_batch.TokenCount - 1));
        double prefill = watch.Elapsed.TotalSeconds;
        double ttft = watch.Elapsed.TotalMilliseconds;
        watch.Restart();
        for (int i = 0; i < decode.Length; i++)
        {
            _batch.Clear();
            _batch.Add(decode[i], position++, LLamaSeqId.Zero, logits: true);
            Decode();
            argmax[i + 1] = ArgMax(_context.NativeHandle.GetLogitsIth(0));
        }

        double decodeSeconds = watch.Elapsed.TotalSeconds;
        return new LlamaCppRun
        {
            PromptTokens = prompt.Length,
            DecodedTokens = decode.Length,
            PrefillSeconds = prefill,
            DecodeSeconds = decodeSeconds,
            TimeToFirstTokenMs = ttft,
            Argmax = argmax,
        };
    }

    /// <summary>
    /// llama.cpp's own batched decoding (as its <c>llama-batched</c> example): the prompts of several sequences
    /// (sequence ids 0..n-1) evaluated together, then one greedy token per sequence per <c>llama_decode</c> call, all
    /// sequences in one batch. The context must hold them (<see cref="LlamaCppOptions.Sequences"/>, context size).
    /// </summary>
    public LlamaCppBatchedRun RunBatched(IReadOnlyList<int[]> prompts, int decode)
    {
        int n = prompts.Count;
        Reset();
        var tokens = prompts.Select(_ => new int[decode + 1]).ToArray();
        var watch = Stopwatch.StartNew();

        // Prompts, in batches of up to BatchSize tokens, each sequence's last token with logits.
        var logitIndex = new int[n];
        Array.Fill(logitIndex, -1);
        _batch.Clear();
        for (int s = 0; s < n; s++)
        {
            for (int i = 0; i < prompts[s].Length; i++)
            {
                if (_batch.TokenCount == BatchSize)
                {
                    Decode();
                    _batch.Clear();
                }

                bool last = i == prompts[s].Length - 1;
                if (last)
                {
                    logitIndex[s] = _batch.TokenCount;
                }

                _batch.Add(prompts[s][i], i, (LLamaSeqId)s, logits: last);
            }

            // A sequence's logits must be read before its batch is replaced.
            if (s == n - 1 || _batch.TokenCount + prompts[s + 1].Length > BatchSize)
            {
                Decode();
                for (int k = 0; k <= s; k++)
                {
                    if (logitIndex[k] >= 0)
                    {
                        tokens[k][0] = ArgMax(_context.NativeHandle.GetLogitsIth(logitIndex[k]));
                        logitIndex[k] = -1;
                    }
                }

                _batch.Clear();
            }
        }

        double prefill = watch.Elapsed.TotalSeconds;
        watch.Restart();
        for (int step = 0; step < decode; step++)
        {
            _batch.Clear();
            for (int s = 0; s < n; s++)
            {
                _batch.Add(tokens[s][step], prompts[s].Length + step, (LLamaSeqId)s, logits: true);
            }

            Decode();
            for (int s = 0; s < n; s++)
            {
                tokens[s][step + 1] = ArgMax(_context.NativeHandle.GetLogitsIth(s));
            }
        }

        return new LlamaCppBatchedRun
        {
            Sequences = n,
            PromptTokens = prompts[0].Length,
            DecodedTokens = decode,
            PrefillSeconds = prefill,
            DecodeSeconds = watch.Elapsed.TotalSeconds,
            Tokens = tokens,
        };
    }

    /// <summary>
    /// From an empty cache: evaluates <paramref name="ids"/> (in batches of <see cref="BatchSize"/>) with logits
    /// requested at every position; returns them as [ids.Length, VocabSize] row-major.
    /// </summary>
    public float[] EvaluateAllLogits(ReadOnlySpan<int> ids)
    {
        CheckFits(ids.Length);
        Reset();
        var logits = new float[(long)ids.Length * VocabSize];
        for (int start = 0; start < ids.Length; start += BatchSize)
        {
            int count = Math.Min(BatchSize, ids.Length - start);
            _batch.Clear();
            for (int i = 0; i < count; i++)
            {
                _batch.Add(ids[start + i], start + i, LLamaSeqId.Zero, logits: true);
            }

            Decode();
            for (int i = 0; i < count; i++)
            {
                _context.NativeHandle.GetLogitsIth(i).CopyTo(logits.AsSpan((start + i) * VocabSize, VocabSize));
            }
        }

        return logits;
    }

    /// <summary>
    /// Feeds one token after those already evaluated (start with <see cref="Reset"/>) and returns the logits that
    /// follow it.
    /// </summary>
    public float[] Next(int token, int position)
    {
        CheckFits(position + 1);
        _batch.Clear();
        _batch.Add(token, position, LLamaSeqId.Zero, logits: true);
        Decode();
        return _context.NativeHandle.GetLogitsIth(0).ToArray();
    }

    /// <summary>Tokenizes text with the vocabulary in the GGUF file (llama.cpp's tokenizer).</summary>
    public int[] Tokenize(string text, bool addSpecial, bool parseSpecial)
    {
        var tokens = _weights.Tokenize(text, addSpecial, parseSpecial, System.Text.Encoding.UTF8);
        return Array.ConvertAll(tokens, t => (int)t);
    }

    private void Decode()
    {
        var result = _context.NativeHandle.Decode(_batch);
        if (result != DecodeResult.Ok)
        {
            throw new InvalidOperationException($"{Path}: llama_decode failed ({result}).");
        }
    }

    private void CheckFits(int tokens)
    {
        if (tokens > ContextSize)
        {
            throw new ArgumentException($"{tokens} tokens do not fit in the llama.cpp context of {ContextSize}.");
        }
    }

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }

        return best;
    }

    /// <summary>Quiets llama.cpp's log (errors still go to stderr). Runs once, before the native library loads.</summary>
    private static void Initialise()
    {
        lock (InitLock)
        {
            if (s_initialised)
            {
                return;
            }

            if (!NativeLibraryConfig.LLama.LibraryHasLoaded)
            {
                NativeLibraryConfig.All.WithLogCallback((level, message) =>
                {
                    if (level == LLamaLogLevel.Error)
                    {
                        Console.Error.Write("llama.cpp: " + message);
                    }
                });
            }

            s_initialised = true;
        }
    }

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }
}
