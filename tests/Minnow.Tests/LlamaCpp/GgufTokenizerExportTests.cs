using System.Text;
using Minnow.Benchmarking;
using Minnow.Export;
using Minnow.Formats.Gguf;
using Minnow.LlamaCpp;
using Minnow.Loading;
using Minnow.Tensors;
using Minnow.Tokenizers;

namespace Minnow.Tests.LlamaCpp;

/// <summary>
/// The vocabulary written into an exported GGUF file is one llama.cpp loads and tokenizes with exactly as the
/// model's own tokenizer does. Models: tiny random ones with the vocabulary's size. Reads ../shared in place.
/// </summary>
public sealed class GgufTokenizerExportTests
{
    private static ModelShape TinyLlama(int vocab) => new()
    {
        Name = "tiny",
        Model = "test",
        ModelType = "llama",
        HiddenSize = 64,
        IntermediateSize = 128,
        Layers = 1,
        Heads = 4,
        KvHeads = 2,
        VocabSize = vocab,
        MaxPositions = 256,
        NormEps = 1e-5,
        RopeTheta = 10000,
        TieEmbeddings = true,
        BosTokenId = 1,
        EosTokenId = 2,
    };

    /// <summary>The texts of llama.cpp's tokenizer test vectors (<c>*.inp</c>) and their expected ids (<c>*.out</c>).</summary>
    private static List<(string Text, int[] Ids)> Vectors(string vocab)
    {
        string basePath = SharedData.Path("tokenizers", "llama.cpp-vocab", $"ggml-vocab-{vocab}.gguf");
        string raw = File.ReadAllText(basePath + ".inp", Encoding.UTF8);
        var texts = raw.Split("\n__ggml_vocab_test__\n").SkipLast(1).ToList();
        string[] lines = File.ReadAllLines(basePath + ".out");
        Assert.Equal(texts.Count, lines.Length);
        return [.. texts.Select((t, i) => (t, lines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray()))];
    }

    [Fact]
    public void ByteLevelTokenizerJsonBecomesAGpt2VocabularyLlamaCppTokenizesTheSame()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        string folder = Path.Combine(Path.GetTempPath(), $"minnow-tokexport-{Guid.NewGuid():N}");
        try
        {
            SyntheticCheckpoint.Write(TinyLlama(49152), folder, seed: 1);
            File.Copy(SharedData.Path("tokenizers", "smollm2-135m", "tokenizer.json"), Path.Combine(folder, "tokenizer.json"));
            string gguf = Path.Combine(folder, "model.gguf");
            var source = GgufTokenizerMetadata.For(folder, ModelFormat.HuggingFace, 49152);
            Assert.True(source.HasVocabulary);
            using (var model = ModelLoader.LoadModel(folder))
            {
                GgufExporter.Export(model, gguf, DType.F16, source.Write);
            }

            var metadata = GgufFile.ReadMetadata(gguf);
            Assert.Equal("gpt2", metadata.GetString("tokenizer.ggml.model"));
            Assert.Equal("smollm", metadata.GetString("tokenizer.ggml.pre"));
            Assert.Equal(49152, metadata.GetStringArray("tokenizer.ggml.tokens").Length);
            Assert.Equal(48900, metadata.GetStringArray("tokenizer.ggml.merges").Length);
            Assert.False(metadata.GetBool("tokenizer.ggml.add_bos_token"));

            var hf = TokenizerLoader.Load(folder);
            var fromGguf = TokenizerLoader.FromGguf(metadata);
            using var llama = LlamaCppModel.Load(gguf, threads: 1, contextSize: 64);
            Assert.Equal(49152, llama.VocabSize);
            Assert.True(llama.IsControl(2), "<|im_end|> is a control token");
            Assert.False(llama.IsControl(1000));
            var texts = Vectors("gpt-2").Select(v => v.Text).Append("Hello world! It's 2024: 12345 apples, naïve café — <|im_start|>user\nhi<|im_end|>").ToList();
            foreach (string text in texts)
            {
                int[] expected = [.. hf.Encode(text, addSpecial: false, parseSpecial: true)];
                Assert.Equal(expected, llama.Tokenize(text, addSpecial: false, parseSpecial: true));
                Assert.Equal(expected, fromGguf.Encode(text, addSpecial: false, parseSpecial: true));
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void GgufVocabularyIsCopiedAndLlamaCppTokenizesItsTestVectors()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        string folder = Path.Combine(Path.GetTempPath(), $"minnow-tokexport-{Guid.NewGuid():N}");
        try
        {
            SyntheticCheckpoint.Write(TinyLlama(32000), folder, seed: 2);
            string gguf = Path.Combine(folder, "model.gguf");
            var vocab = GgufFile.ReadMetadata(SharedData.Path("tokenizers", "llama.cpp-vocab", "ggml-vocab-llama-spm.gguf"));
            using (var model = ModelLoader.LoadModel(folder))
            {
                GgufExporter.Export(model, gguf, DType.Q8_0, w => GgufTokenizerMetadata.CopyFromGguf(w, vocab, 32000));
            }

            // The exported file is itself a model whose vocabulary the exporter copies again.
            var again = GgufTokenizerMetadata.For(gguf, ModelFormat.Gguf, 32000);
            Assert.True(again.HasVocabulary);
            Assert.StartsWith("llama, 32000 tokens", again.Description);

            using var llama = LlamaCppModel.Load(gguf, threads: 1, contextSize: 64);
            foreach (var (text, ids) in Vectors("llama-spm"))
            {
                Assert.Equal(ids, llama.Tokenize(text, addSpecial: false, parseSpecial: false));
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void Llama2cTokenizerBinBecomesALlamaVocabulary()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        // A tokenizer.bin in llama2.c's layout built from the llama-spm vocabulary (spaces as ' ', as llama2.c writes them).
        var vocab = GgufFile.ReadMetadata(SharedData.Path("tokenizers", "llama.cpp-vocab", "ggml-vocab-llama-spm.gguf"));
        string[] tokens = vocab.GetStringArray("tokenizer.ggml.tokens");
        float[] scores = vocab.GetArray<float>("tokenizer.ggml.scores");
        string folder = Path.Combine(Path.GetTempPath(), $"minnow-tokexport-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            string bin = Path.Combine(folder, "tokenizer.bin");
            using (var w = new BinaryWriter(File.Create(bin)))
            {
                byte[][] pieces = [.. tokens.Select(t => Encoding.UTF8.GetBytes(t.Replace('\u2581', ' ')))];
                w.Write(pieces.Max(p => p.Length));
                for (int i = 0; i < pieces.Length; i++)
                {
                    w.Write(scores[i]);
                    w.Write(pieces[i].Length);
                    w.Write(pieces[i]);
                }
            }

            var v = GgufTokenizerMetadata.FromLlama2c(bin, 32000);
            Assert.Equal("llama", v.Model);
            Assert.Equal(tokens, v.Tokens);
            Assert.Equal(vocab.GetArray<int>("tokenizer.ggml.token_type"), v.TokenTypes);
            Assert.Equal(scores, v.Scores);

            string gguf = Path.Combine(folder, "model.gguf");
            SyntheticCheckpoint.Write(TinyLlama(32000), folder, seed: 3);
            using (var model = ModelLoader.LoadModel(folder))
            {
                GgufExporter.Export(model, gguf, DType.F32, v.Write);
            }

            using var llama = LlamaCppModel.Load(gguf, threads: 1, contextSize: 64);
            foreach (var (text, ids) in Vectors("llama-spm").Take(20))
            {
                Assert.Equal(ids, llama.Tokenize(text, addSpecial: false, parseSpecial: false));
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void ModelsWithoutATokenizerGetNone()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        var source = GgufTokenizerMetadata.For(SharedData.Path("reference", "golden", "llama"), ModelFormat.HuggingFace, 256);
        Assert.False(source.HasVocabulary);
        Assert.Equal("none", source.Description);
        var writer = new GgufWriter();
        source.Write(writer);
        Assert.Equal("none", writer.Metadata.GetString("tokenizer.ggml.model"));
    }
}
