using Minnow.Export;
using Minnow.Inference;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Tensors;
using Minnow.Tests.Cli;
using Minnow.Tests.Models;
using Minnow.Tests.Training;
using Minnow.Training;
using Xunit.Abstractions;

namespace Minnow.Tests.Inference;

/// <summary>
/// The engine that many sequences share: a sequence decoded in a step with others gives the logits it gives alone,
/// bit for bit; pages are shared by common prefixes, bounded by the budget and all given back.
/// </summary>
public class EngineTests(ITestOutputHelper output)
{
    /// <summary>What a sequence produced: the logits of every sampled position and the tokens.</summary>
    private sealed class Trace
    {
        public List<float[]> Logits { get; } = [];

        public List<int> Tokens { get; } = [];
    }

    private static GenerationRequest Request(int[] prompt, int maxTokens, Trace trace, LoraAdapter? adapter = null) => new()
    {
        Prompt = prompt,
        MaxTokens = maxTokens,
        Adapter = adapter,
        OnLogits = (_, logits) => trace.Logits.Add(logits.ToArray()),
    };

    private static async Task Collect(EngineSequence sequence, Trace trace, int cancelAfter = -1)
    {
        await foreach (var token in sequence.ReadAllAsync())
        {
            trace.Tokens.Add(token.Id);
            if (trace.Tokens.Count == cancelAfter)
            {
                sequence.Cancel();
            }
        }
    }

    private static async Task<Trace> Solo(TransformerModel model, int[] prompt, int maxTokens, LoraAdapter? adapter, EngineOptions options)
    {
        using var engine = new Engine(model, options);
        var trace = new Trace();
        await Collect(engine.Submit(Request(prompt, maxTokens, trace, adapter)), trace);
        return trace;
    }

    private static int[] Prompt(int length, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(vocab)).ToArray();
    }

    /// <summary>
    /// Four sequences in one engine — prompts of different lengths (one longer than a step, so it is read in chunks
    /// beside the others' decode rows), one with a LoRA adapter, one cancelled midway — each give the logits they give
    /// alone, bit for bit.
    /// </summary>
    private static async Task AssertBatchedEqualsSolo(TransformerModel model, LoraAdapter? adapter)
    {
        int vocab = model.Config.VocabSize;
        int ctx = Math.Min(model.Config.MaxPositions, 96);
        var options = new EngineOptions { MaxSequences = 4, MaxStepTokens = 16, ContextSize = ctx, KvBudgetBytes = 4L << 20 };
        var prompts = new[] { Prompt(5, vocab, 1), Prompt(37, vocab, 2), Prompt(1, vocab, 3), Prompt(20, vocab, 4) };
        int[] maxTokens = [12, 9, 15, 40];
        var adapters = new[] { null, null, adapter, null };
        const int cancelled = 3, cancelAfter = 5;

        var traces = prompts.Select(_ => new Trace()).ToArray();
        using (var engine = new Engine(model, options))
        {
            // The cancelled one is cancelled from the step thread, at a fixed token, so the test does not race the engine.
            var cancel = new System.Runtime.CompilerServices.StrongBox<EngineSequence?>();
            var sequences = prompts.Select((p, i) => engine.Submit(i != cancelled ? Request(p, maxTokens[i], traces[i], adapters[i]) : Request(p, maxTokens[i], traces[i], adapters[i]) with
            {
                OnLogits = (index, logits) =>
                {
                    traces[i].Logits.Add(logits.ToArray());
                    if (index == cancelAfter)
                    {
                        cancel.Value!.Cancel();
                    }
                },
            })).ToArray();
            cancel.Value = sequences[cancelled];
            await Task.WhenAll(sequences.Select((s, i) => Collect(s, traces[i])));
            Assert.Equal(FinishReason.Cancelled, sequences[cancelled].FinishReason);
            Assert.Equal(0, engine.Pages.PagesInUse);
        }

        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = await Solo(model, prompts[i], maxTokens[i], adapters[i], options);
            var batched = traces[i];
            Assert.True(batched.Logits.Count > 0);
            Assert.True(batched.Logits.Count <= alone.Logits.Count, $"sequence {i}: {batched.Logits.Count} positions batched, {alone.Logits.Count} alone");
            for (int t = 0; t < batched.Logits.Count; t++)
            {
                Assert.True(batched.Logits[t].AsSpan().SequenceEqual(alone.Logits[t]), $"sequence {i}, token {t}: batched logits differ from solo");
            }

            Assert.Equal(alone.Tokens.Take(batched.Tokens.Count), batched.Tokens);
            if (i != cancelled)
            {
                Assert.Equal(alone.Tokens, batched.Tokens);
            }
        }
    }

    [Theory]
    [MemberData(nameof(GoldenReference.Names), MemberType = typeof(GoldenReference))]
    public async Task Golden_SequenceInABatch_EqualsItAlone_BitForBit(string name)
    {
        var golden = GoldenReference.Load(name);
        if (golden is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        if (model.Config.Architecture != Architecture.Llama)
        {
            await AssertBatchedEqualsSolo(model, null);
            return;
        }

        using var lora = LoraAdapterTests.RandomAdapter(model.Config, LoraTargets.All, rank: 4);
        using var temp = new TempFolder();
        lora.Save(temp.Path);
        using var adapter = LoraAdapter.Load(temp.Path, model.Config);
        await AssertBatchedEqualsSolo(model, adapter);
    }

    [Theory]
    [InlineData(DType.Q8_0)]
    [InlineData(DType.Q4_0)]
    [InlineData(DType.Q4_1_G64)]
    public async Task DefaultModelExport_SequenceInABatch_EqualsItAlone_BitForBit(DType type)
    {
        using var temp = new TempFolder();
        using (var original = ModelLoader.LoadModel(LoraAdapterTests.DefaultFolder))
        {
            GgufExporter.Export(original, temp.File("model.gguf"), type);
        }

        using var model = ModelLoader.LoadModel(temp.File("model.gguf"));
        using var lora = LoraAdapterTests.RandomAdapter(model.Config, LoraTargets.ParseList("q_proj,v_proj,down_proj"));
        lora.Save(temp.File("adapter"));
        using var adapter = LoraAdapter.Load(temp.File("adapter"), model.Config);
        await AssertBatchedEqualsSolo(model, adapter);
    }

    /// <summary>
    /// 64 sequences with the same 1,000-token prompt prefix (and their own last tokens) hold the prefix's pages once:
    /// the pool's pages in use peak at one prefix plus each sequence's own pages, not 64 prefixes.
    /// </summary>
    [Fact]
    public async Task CommonPrefix_IsHeldOnce()
    {
        var golden = GoldenReference.Load("llama3-rope-scaling");
        if (golden is null)
        {
            return;
        }

        using var model = ModelLoader.LoadModel(golden.WeightsFile("f32"));
        int vocab = model.Config.VocabSize;
        const int prefix = 1000, suffix = 8, sequences = 64, generate = 4;
        var shared = Prompt(prefix, vocab, 7);
        var options = new EngineOptions { MaxSequences = sequences, MaxStepTokens = 1024, ContextSize = 1100, KvBudgetBytes = 64L << 20 };
        using var engine = new Engine(model, options);
        int ps = engine.Pages.PageSize;

        // The first sequence computes the prefix; the others find it.
        await engine.Submit(new GenerationRequest { Prompt = [.. shared, .. Prompt(suffix, vocab, 100)], MaxTokens = 1 }).Completion;
        int peak = 0;
        var handles = Enumerable.Range(0, sequences)
            .Select(i => engine.Submit(new GenerationRequest { Prompt = [.. shared, .. Prompt(suffix, vocab, 200 + i)], MaxTokens = generate }))
            .ToArray();
        while (!handles.All(h => h.Completion.IsCompleted))
        {
            peak = Math.Max(peak, engine.Pages.PagesInUse);
            await Task.Delay(1);
        }

        int sharedPages = prefix / ps;
        int ownPages = ((prefix + suffix + generate + ps - 1) / ps) - sharedPages;
        foreach (var h in handles)
        {
            Assert.Equal(sharedPages * ps, h.CachedPromptTokens);
        }

        Assert.True(engine.Pages.PrefixHits >= sequences * sharedPages);
        Assert.InRange(peak, 1, sharedPages + (sequences * ownPages));
        Assert.Equal(0, engine.Pages.PagesInUse);
        long pageBytes = engine.Pages.PageBytes;
        output.WriteLine($"{sequences} sequences × ({prefix} shared + {suffix} own prompt tokens + {generate} generated): peak {peak} pages in use = " +
            $"{peak * pageBytes:N0} bytes; without sharing they would need {sequences * (sharedPages + ownPages)} pages = {(long)sequences * (sharedPages + ownPages) * pageBytes:N0} bytes");
    }

    /// <summary>
    /// The pool never holds more than its budget: with too few pages for all sequences at once, the youngest are
    /// preempted and recomputed, and every greedy sequence still equals its solo run.
    /// </summary>
    [Fact]
    public async Task UnderPagePressure_SequencesArePreemptedAndStillExact()
    {
        using var model = ModelLoader.LoadModel(LoraAdapterTests.DefaultFolder);
        int vocab = model.Config.VocabSize;
        long page = KvPagePool.BytesPerPage(model.Config);
        var options = new EngineOptions { MaxSequences = 6, MaxStepTokens = 32, ContextSize = 128, KvBudgetBytes = 12 * page, PrefixCaching = false };
        var prompts = Enumerable.Range(0, 6).Select(i => Prompt(10 + (3 * i), vocab, 50 + i)).ToArray();
        var traces = prompts.Select(_ => new Trace()).ToArray();
        long preemptions;
        using (var engine = new Engine(model, options))
        {
            Assert.Equal(12, engine.Pages.PageCount);
            var handles = prompts.Select((p, i) => engine.Submit(Request(p, 40, traces[i]))).ToArray();
            await Task.WhenAll(handles.Select((h, i) => Collect(h, traces[i])));
            preemptions = engine.Preemptions;
            Assert.Equal(0, engine.Pages.PagesInUse);
        }

        Assert.True(preemptions > 0, "the test should have run out of pages");
        var solo = options with { KvBudgetBytes = 64 * page };
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal((await Solo(model, prompts[i], 40, null, solo)).Tokens, traces[i].Tokens);
        }
    }

    /// <summary>
    /// 8 caller threads × random requests (random lengths, about a fifth cancelled) against one engine: no crash, no
    /// deadlock, no page left in use, and every completed greedy sequence equals its solo run.
    /// </summary>
    [Fact]
    public async Task Stress_ManyCallers_NoLeaksAndExact()
    {
        using var model = ModelLoader.LoadModel(LoraAdapterTests.DefaultFolder);
        int vocab = model.Config.VocabSize;
        var options = new EngineOptions { MaxSequences = 8, MaxStepTokens = 48, ContextSize = 96, KvBudgetBytes = 40 * KvPagePool.BytesPerPage(model.Config) };
        const int threads = 8, perThread = 200;
        var completed = new System.Collections.Concurrent.ConcurrentBag<(int[] Prompt, int Max, List<int> Tokens)>();
        using (var engine = new Engine(model, options))
        {
            var workers = Enumerable.Range(0, threads).Select(w => Task.Run(async () =>
            {
                var rng = new Random(1000 + w);
                for (int r = 0; r < perThread; r++)
                {
                    // Prompts often share a beginning, so prefix pages are shared and released under load too.
                    int[] prompt = rng.Next(3) == 0 ? [.. Prompt(32, vocab, 5), .. Prompt(rng.Next(1, 20), vocab, rng.Next())] : Prompt(rng.Next(1, 50), vocab, rng.Next());
                    int max = rng.Next(1, 30);
                    bool cancel = rng.Next(5) == 0;
                    using var cts = new CancellationTokenSource();
                    var sequence = engine.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = max }, cts.Token);
                    var tokens = new List<int>();
                    int cancelAt = cancel ? rng.Next(0, max) : -1;
                    if (cancelAt == 0)
                    {
                        cts.Cancel();
                    }

                    await foreach (var t in sequence.ReadAllAsync())
                    {
                        tokens.Add(t.Id);
                        if (tokens.Count == cancelAt)
                        {
                            cts.Cancel();
                        }
                    }

                    await sequence.Completion;
                    if (sequence.FinishReason is FinishReason.Length or FinishReason.Stop)
                    {
                        completed.Add((prompt, max, tokens));
                    }
                    else
                    {
                        Assert.Equal(FinishReason.Cancelled, sequence.FinishReason);
                    }
                }
            })).ToArray();
            var all = Task.WhenAll(workers);
            Assert.Same(all, await Task.WhenAny(all, Task.Delay(TimeSpan.FromMinutes(5))));
            await all;
            SpinWait.SpinUntil(() => engine.Running == 0, 2000);
            Assert.Equal(0, engine.Pages.PagesInUse);
            Assert.Equal(0, engine.Waiting);
        }

        Assert.True(completed.Count > threads * perThread / 2);
        var solo = options with { MaxSequences = 1 };
        using var check = new Engine(model, solo);
        foreach (var (prompt, max, tokens) in completed.Take(60))
        {
            var trace = new Trace();
            await Collect(check.Submit(new GenerationRequest { Prompt = prompt, MaxTokens = max }), trace);
            Assert.Equal(trace.Tokens, tokens);
        }
    }

    /// <summary>
    /// A profile attached to an engine counts exactly its decode steps (one row per sequence), and its parts add up
    /// within the forward step, which lies within the engine step.
    /// </summary>
    [Fact]
    public async Task Profile_CountsDecodeStepsAndItsPartsNest()
    {
        using var model = ModelLoader.LoadModel(LoraAdapterTests.DefaultFolder);
        var profile = new StepProfile();
        using var engine = new Engine(model, new EngineOptions { MaxSequences = 3, MaxStepTokens = 64, ContextSize = 64, Profile = profile });
        var handles = Enumerable.Range(0, 3).Select(i => engine.Submit(new GenerationRequest { Prompt = Prompt(5 + i, model.Config.VocabSize, 40 + i), MaxTokens = 12 })).ToArray();
        await Task.WhenAll(handles.Select(h => h.Completion));

        // All three prompts are read in one step (which also samples each first token), then 11 decode steps of three.
        Assert.Equal(11, profile.Steps);
        Assert.Equal(33, profile.Rows);
        double parts = new[] { StepPart.Linear, StepPart.Attention, StepPart.Rope, StepPart.Head }.Sum(profile.MsPerStep);
        Assert.All(Enum.GetValues<StepPart>(), part => Assert.True(profile.MsPerStep(part) > 0, $"{part} took no time"));
        Assert.True(parts <= profile.MsPerStep(StepPart.Forward), $"parts {parts} ms > forward {profile.MsPerStep(StepPart.Forward)} ms");
        Assert.True(profile.MsPerStep(StepPart.Forward) <= profile.MsPerStep(StepPart.Step));
        Assert.Equal(6, profile.Breakdown().Count);
    }

    /// <summary>Once warm, a step of the engine's forward pass allocates nothing.</summary>
    [Fact]
    public void BatchedStep_AllocatesNothingOnceWarm()
    {
        using var model = ModelLoader.LoadModel(LoraAdapterTests.DefaultFolder);
        using var pool = new KvPagePool(model.Config, 64);
        var caches = Enumerable.Range(0, 4).Select(_ => new KvCache(pool, 128)).ToArray();
        var batch = new ForwardBatch(16, 4);
        using var workspace = new ForwardWorkspace();
        int[] prompt = [5, 6, 7, 8];
        int[] next = [9];
        // Rounds from the third on are measured, and the least counts: the runtime may allocate once while a hot
        // loop tiers up, but a step that allocates per call never reaches zero.
        long least = long.MaxValue;
        for (int round = 0; round < 8 && least != 0; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            batch.Clear();
            foreach (var cache in caches)
            {
                batch.Add(cache, round == 0 ? prompt : next, LogitRows.Last);
            }

            model.Forward(batch, workspace);
            if (round >= 2)
            {
                least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
            }
        }

        Assert.Equal(0, least);

        foreach (var cache in caches)
        {
            cache.Dispose();
        }

        Assert.Equal(0, pool.PagesInUse);
    }
}
