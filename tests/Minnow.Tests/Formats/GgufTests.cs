using System.Text;
using Minnow.Formats.Gguf;
using Minnow.Tensors;

namespace Minnow.Tests.Formats;

public sealed class GgufTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("minnow-gguf-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string TempPath(string name) => Path.Combine(_dir, name);

    private static float[] Ramp(int n, float scale = 0.37f)
    {
        var values = new float[n];
        for (int i = 0; i < n; i++)
        {
            values[i] = MathF.Sin(i * scale) * (1 + (i % 7));
        }

        return values;
    }

    [Fact]
    public void RoundTripsEveryMetadataType()
    {
        var writer = new GgufWriter()
            .Set("u8", (byte)200)
            .Set("i8", (sbyte)-100)
            .Set("u16", (ushort)60000)
            .Set("i16", (short)-30000)
            .Set("u32", 4000000000u)
            .Set("i32", -2000000000)
            .Set("f32", 1.5f)
            .Set("bool.t", true)
            .Set("bool.f", false)
            .Set("str", "héllo ▁ 🦙")
            .Set("empty", "")
            .Set("u64", ulong.MaxValue)
            .Set("i64", long.MinValue)
            .Set("f64", Math.PI)
            .Set("arr.u8", new byte[] { 1, 2, 255 })
            .Set("arr.i8", new sbyte[] { -1, 2 })
            .Set("arr.u16", new ushort[] { 1, 65535 })
            .Set("arr.i16", new short[] { -5, 5 })
            .Set("arr.u32", new uint[] { 7, 8, 9 })
            .Set("arr.i32", new[] { -1, 0, 1 })
            .Set("arr.f32", new[] { 0.5f, -2f })
            .Set("arr.bool", new[] { true, false, true })
            .Set("arr.str", new[] { "a", "", "b c", "<0x0A>" })
            .Set("arr.u64", new ulong[] { 1, ulong.MaxValue })
            .Set("arr.i64", new long[] { -1, long.MaxValue })
            .Set("arr.f64", new[] { 1e300, -0.25 })
            .Set("arr.empty", Array.Empty<int>())
            .Set("arr.nested", new object[] { new[] { 1, 2 }, new[] { 3 } });
        string path = TempPath("meta.gguf");
        writer.Write(path);

        using var file = GgufFile.Open(path);
        var m = file.Metadata;
        Assert.Equal(3u, file.Version);
        Assert.Equal(28, m.Count);
        Assert.Equal(writer.Metadata.Keys, m.Keys);
        Assert.Equal(GgufValueType.UInt8, m["u8"].Type);
        Assert.Equal((byte)200, m["u8"].Value);
        Assert.Equal((sbyte)-100, m["i8"].Value);
        Assert.Equal((ushort)60000, m["u16"].Value);
        Assert.Equal((short)-30000, m["i16"].Value);
        Assert.Equal(4000000000u, m["u32"].Value);
        Assert.Equal(-2000000000, m.GetInt("i32"));
        Assert.Equal(4000000000L, m.GetLong("u32"));
        Assert.Equal(200, m.GetInt("u8"));
        Assert.Equal(1.5f, m.GetFloat("f32"));
        Assert.True(m.GetBool("bool.t"));
        Assert.False(m.GetBool("bool.f"));
        Assert.Equal("héllo ▁ 🦙", m.GetString("str"));
        Assert.Equal("", m.GetString("empty"));
        Assert.Equal(ulong.MaxValue, m["u64"].Value);
        Assert.False(m.TryGetLong("u64", out _));
        Assert.Equal(long.MinValue, m.GetLong("i64"));
        Assert.Equal(Math.PI, m.GetDouble("f64"));
        Assert.Equal(new byte[] { 1, 2, 255 }, m.GetArray<byte>("arr.u8"));
        Assert.Equal(new sbyte[] { -1, 2 }, m.GetArray<sbyte>("arr.i8"));
        Assert.Equal(new ushort[] { 1, 65535 }, m.GetArray<ushort>("arr.u16"));
        Assert.Equal(new short[] { -5, 5 }, m.GetArray<short>("arr.i16"));
        Assert.Equal(new uint[] { 7, 8, 9 }, m.GetArray<uint>("arr.u32"));
        Assert.Equal(new[] { 7, 8, 9 }, m.GetArray<int>("arr.u32"));
        Assert.Equal(new[] { -1, 0, 1 }, m.GetArray<int>("arr.i32"));
        Assert.Equal(new[] { 0.5f, -2f }, m.GetArray<float>("arr.f32"));
        Assert.Equal(new[] { true, false, true }, m.GetArray<bool>("arr.bool"));
        Assert.Equal(new[] { "a", "", "b c", "<0x0A>" }, m.GetStringArray("arr.str"));
        Assert.Equal(GgufValueType.String, m["arr.str"].ElementType);
        Assert.Equal(new ulong[] { 1, ulong.MaxValue }, m.GetArray<ulong>("arr.u64"));
        Assert.Equal(new long[] { -1, long.MaxValue }, m.GetArray<long>("arr.i64"));
        Assert.Equal(new[] { 1e300, -0.25 }, m.GetArray<double>("arr.f64"));
        Assert.Empty(m.GetArray<int>("arr.empty"));
        var nested = Assert.IsType<object[]>(m["arr.nested"].Value);
        Assert.Equal(new[] { 1, 2 }, nested[0]);
        Assert.Equal(new[] { 3 }, nested[1]);
        Assert.Empty(file.Tensors);
    }

    [Fact]
    public void TypedAccessorsReportMissingKeysAndWrongTypes()
    {
        string path = TempPath("acc.gguf");
        new GgufWriter().Set("name", "x").Set("n", 3).Write(path);
        using var file = GgufFile.Open(path);
        var m = file.Metadata;
        var missing = Assert.Throws<MinnowException>(() => m.GetInt("nope"));
        Assert.Equal("acc.gguf: metadata key 'nope' is missing.", missing.Message);
        var wrong = Assert.Throws<MinnowException>(() => m.GetString("n"));
        Assert.Contains("'n' has type Int32, expected a string", wrong.Message);
        Assert.Equal(7, m.GetInt("nope", 7));
        Assert.Null(m.GetString("nope", null));
        Assert.False(m.TryGetString("n", out _));
        Assert.True(m.TryGetInt("n", out int n) && n == 3);
        Assert.False(m.TryGetArray<int>("name", out _));
    }

    [Theory]
    [InlineData(32)]
    [InlineData(64)]
    public unsafe void RoundTripsTensorsOfEveryType(int alignment)
    {
        var f32 = Ramp(6 * 5);
        var f16 = Ramp(3 * 7);
        var bf16 = Ramp(2 * 3 * 4);
        var q8 = Ramp(3 * 64, 0.11f);
        var q4 = Ramp(2 * 96, 0.23f);
        var bias = Ramp(5);
        var writer = new GgufWriter(alignment).Set("general.architecture", "test");
        writer.AddTensor("f32", DType.F32, [6, 5], Dequantize.FromFloats(DType.F32, f32));
        writer.AddTensor("f16", DType.F16, [3, 7], Dequantize.FromFloats(DType.F16, f16));
        writer.AddTensor("bf16", DType.BF16, [2, 3, 4], Dequantize.FromFloats(DType.BF16, bf16));
        writer.AddTensor("q8", DType.Q8_0, [3, 64], Dequantize.FromFloats(DType.Q8_0, q8));
        writer.AddTensor("q4", DType.Q4_0, [2, 96], Dequantize.FromFloats(DType.Q4_0, q4));
        byte[] biasBytes = Dequantize.FromFloats(DType.F32, bias);
        fixed (byte* p = biasBytes)
        {
            writer.AddTensor(new Tensor("bias", DType.F32, [5], p, null));
            writer.Write(TempPath("t.gguf"));
        }

        using var file = GgufFile.Open(TempPath("t.gguf"));
        Assert.Equal(alignment, file.Alignment);
        Assert.Equal(0, file.DataOffset % alignment);
        Assert.Equal(["f32", "f16", "bf16", "q8", "q4", "bias"], file.Tensors.Select(t => t.Name));
        void Check(string name, DType type, long[] shape, float[] source)
        {
            var t = file.GetTensor(name);
            Assert.Equal(type, t.Type);
            Assert.Equal(shape, t.Shape);
            Assert.Same(file, t.Owner);
            Assert.Equal(0, (t.Data - file.Tensors[0].Data) % alignment);
            byte[] expectedBytes = Dequantize.FromFloats(type, source);
            Assert.Equal(expectedBytes, new ReadOnlySpan<byte>(t.Data, (int)t.ByteSize).ToArray());
            var expected = new float[source.Length];
            fixed (byte* e = expectedBytes)
            {
                Dequantize.Row(type, e, expected);
            }

            Assert.Equal(expected, t.ToFloatArray());
        }

        Check("f32", DType.F32, [6, 5], f32);
        Check("f16", DType.F16, [3, 7], f16);
        Check("bf16", DType.BF16, [2, 3, 4], bf16);
        Check("q8", DType.Q8_0, [3, 64], q8);
        Check("q4", DType.Q4_0, [2, 96], q4);
        Check("bias", DType.F32, [5], bias);
        Assert.Equal(f32, file.GetTensor("f32").ToFloatArray());
        Assert.Equal(6, file.GetTensor("f32").Rows);
        Assert.Equal(5, file.GetTensor("f32").Columns);
        Assert.False(file.TryGetTensor("nope", out _));
        Assert.Contains("tensor 'nope' not found", Assert.Throws<MinnowException>(() => file.GetTensor("nope")).Message);
    }

    [Fact]
    public void StoresDimensionsInnermostFirst()
    {
        string path = TempPath("dims.gguf");
        new GgufWriter().AddTensor("m", DType.F32, [2, 3], new byte[24]).Write(path);
        byte[] bytes = File.ReadAllBytes(path);

        // header 24 bytes, then name (8 + 1), n_dims (4), dims (8 each): ne0 = 3 (columns), ne1 = 2 (rows).
        int dims = 24 + 8 + 1 + 4;
        Assert.Equal(3UL, BitConverter.ToUInt64(bytes, dims));
        Assert.Equal(2UL, BitConverter.ToUInt64(bytes, dims + 8));
    }

    [Fact]
    public void WriterReplacesExistingFileAtomically()
    {
        string path = TempPath("atomic.gguf");
        File.WriteAllText(path, "old");
        new GgufWriter().Set("k", 1).Write(path);
        using (var file = GgufFile.Open(path))
        {
            Assert.Equal(1, file.Metadata.GetInt("k"));
        }

        Assert.Equal(["atomic.gguf"], Directory.GetFiles(_dir).Select(Path.GetFileName));
    }

    [Fact]
    public void ReadsRealVocabularyFiles()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        string dir = SharedData.Path("tokenizers", "llama.cpp-vocab");
        using (var gpt2 = GgufFile.Open(Path.Combine(dir, "ggml-vocab-gpt-2.gguf")))
        {
            var m = gpt2.Metadata;
            Assert.Equal("gpt2", gpt2.Architecture);
            Assert.Equal("gpt2", m.GetString("tokenizer.ggml.model"));
            Assert.Equal("gpt-2", m.GetString("tokenizer.ggml.pre"));
            var tokens = m.GetStringArray("tokenizer.ggml.tokens");
            Assert.Equal(50257, tokens.Length);
            Assert.Equal("!", tokens[0]);
            Assert.Equal("<|endoftext|>", tokens[50256]);
            Assert.Equal("Ġt", tokens[256]);
            var merges = m.GetStringArray("tokenizer.ggml.merges");
            Assert.Equal(50000, merges.Length);
            Assert.Equal("Ġ t", merges[0]);
            Assert.Equal(50256, m.GetInt("tokenizer.ggml.bos_token_id"));
            Assert.Equal(3, m.GetArray<int>("tokenizer.ggml.token_type")[50256]);
            Assert.Equal(12, m.GetInt("gpt2.block_count"));
            Assert.Equal(1e-5f, m.GetFloat("gpt2.attention.layer_norm_epsilon"));
            Assert.Empty(gpt2.Tensors);
        }

        using (var spm = GgufFile.Open(Path.Combine(dir, "ggml-vocab-llama-spm.gguf")))
        {
            var m = spm.Metadata;
            Assert.Equal("llama", m.GetString("tokenizer.ggml.model"));
            var tokens = m.GetStringArray("tokenizer.ggml.tokens");
            var scores = m.GetArray<float>("tokenizer.ggml.scores");
            Assert.Equal(32000, tokens.Length);
            Assert.Equal(32000, scores.Length);
            Assert.Equal(["<unk>", "<s>", "</s>", "<0x00>"], tokens[..4]);
            Assert.Equal(1, m.GetInt("tokenizer.ggml.bos_token_id"));
            Assert.Equal(2, m.GetInt("tokenizer.ggml.eos_token_id"));
            Assert.True(m.GetBool("tokenizer.ggml.add_bos_token"));
            Assert.Equal(32000, m.GetInt("llama.vocab_size"));
        }

        using (var phi3 = GgufFile.Open(Path.Combine(dir, "ggml-vocab-phi-3.gguf")))
        {
            Assert.Contains("<|assistant|>", phi3.Metadata.GetString("tokenizer.chat_template"));
        }

        var neox = GgufFile.ReadMetadata(Path.Combine(dir, "ggml-vocab-gpt-neox.gguf"));
        Assert.Equal(50432, neox.GetStringArray("tokenizer.ggml.tokens").Length);
    }

    // ---- bad input -------------------------------------------------------------------------------------------

    /// <summary>Builds a GGUF file by hand, so that tests can corrupt any field.</summary>
    private sealed class RawGguf
    {
        private readonly MemoryStream _stream = new();

        public RawGguf(uint magic = GgufFile.Magic, uint version = 3, ulong tensors = 0, ulong kvs = 0)
        {
            W = new BinaryWriter(_stream);
            W.Write(magic);
            W.Write(version);
            W.Write(tensors);
            W.Write(kvs);
        }

        public BinaryWriter W { get; }

        public RawGguf Str(string s)
        {
            byte[] b = Encoding.UTF8.GetBytes(s);
            W.Write((ulong)b.Length);
            W.Write(b);
            return this;
        }

        public RawGguf Tensor(string name, uint type, ulong offset, params ulong[] dims)
        {
            Str(name);
            W.Write((uint)dims.Length);
            foreach (ulong d in dims)
            {
                W.Write(d);
            }

            W.Write(type);
            W.Write(offset);
            return this;
        }

        public RawGguf PadTo(int alignment)
        {
            while (_stream.Length % alignment != 0)
            {
                W.Write((byte)0);
            }

            return this;
        }

        public byte[] Bytes()
        {
            W.Flush();
            return _stream.ToArray();
        }
    }

    private string Expect(byte[] bytes, string name = "bad.gguf")
    {
        string path = TempPath(name);
        File.WriteAllBytes(path, bytes);
        var ex = Assert.Throws<MinnowException>(() => GgufFile.Open(path).Dispose());
        Assert.StartsWith(name + ": ", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        return ex.Message;
    }

    [Fact]
    public void RejectsWrongMagic()
    {
        Assert.Contains("not a GGUF file", Expect(new RawGguf(magic: 0x4C4C4747).Bytes()));
        Assert.Contains("not a GGUF file", Expect([0x47, 0x47]));
        Assert.Contains("not a GGUF file", Expect(Encoding.ASCII.GetBytes("{\"json\": true}")));
    }

    [Theory]
    [InlineData(1u)]
    [InlineData(4u)]
    public void RejectsUnsupportedVersions(uint version) =>
        Assert.Contains($"unsupported GGUF version {version}", Expect(new RawGguf(version: version).Bytes()));

    [Fact]
    public void AcceptsVersion2()
    {
        string path = TempPath("v2.gguf");
        var raw = new RawGguf(version: 2, kvs: 1).Str("k");
        raw.W.Write((uint)GgufValueType.UInt32);
        raw.W.Write(5u);
        File.WriteAllBytes(path, raw.Bytes());
        using var file = GgufFile.Open(path);
        Assert.Equal(2u, file.Version);
        Assert.Equal(5, file.Metadata.GetInt("k"));
    }

    [Fact]
    public void RejectsTruncatedFilesAtEveryPoint()
    {
        string path = TempPath("full.gguf");
        new GgufWriter().Set("name", "truncation").Set("list", new[] { "a", "bb" })
            .AddTensor("w", DType.F32, [4, 8], new byte[128]).Write(path);
        byte[] full = File.ReadAllBytes(path);
        for (int length = 1; length < full.Length; length++)
        {
            string message = Expect(full[..length], "cut.gguf");
            Assert.True(message.Contains("truncated") || message.Contains("not a GGUF file") || message.Contains("corrupt"), message);
        }
    }

    [Fact]
    public void RejectsTensorDataOutsideTheFile()
    {
        byte[] bytes = new RawGguf(tensors: 1).Tensor("w", GgmlType.F32, 64, 8, 2).PadTo(32).Bytes();
        bytes = [.. bytes, .. new byte[64]];
        string message = Expect(bytes);
        Assert.Contains("truncated tensor data (tensor 'w' ends at byte", message);
        Assert.Contains($"file has {bytes.Length})", message);
    }

    [Fact]
    public void RejectsMisalignedTensorOffsets() =>
        Assert.Contains("not a multiple of the alignment", Expect(new RawGguf(tensors: 1).Tensor("w", GgmlType.F32, 4, 1).PadTo(32).Bytes().Concat(new byte[64]).ToArray()));

    [Fact]
    public void RejectsUnsupportedTensorTypes()
    {
        byte[] bytes = new RawGguf(tensors: 1).Tensor("blk.0.ffn_up.weight", GgmlType.IQ2_XXS, 0, 256, 2).PadTo(32).Bytes();
        string message = Expect([.. bytes, .. new byte[1024]]);
        Assert.Contains("tensor 'blk.0.ffn_up.weight' has type IQ2_XXS, which Minnow does not support", message);
    }

    [Fact]
    public void RejectsQuantizedRowsThatAreNotWholeBlocks() =>
        Assert.Contains("not a multiple of the Q8_0 block size", Expect([.. new RawGguf(tensors: 1).Tensor("w", GgmlType.Q8_0, 0, 48).PadTo(32).Bytes(), .. new byte[128]]));

    [Fact]
    public void RejectsAbsurdCounts()
    {
        Assert.Contains("tensor count", Expect(new RawGguf(tensors: ulong.MaxValue).Bytes()));
        Assert.Contains("metadata count", Expect(new RawGguf(kvs: 1UL << 40).Bytes()));
    }

    [Fact]
    public void RejectsAbsurdStringAndArrayLengths()
    {
        var raw = new RawGguf(kvs: 1);
        raw.W.Write(ulong.MaxValue - 3);
        Assert.Contains("corrupt string length", Expect(raw.Bytes()));

        raw = new RawGguf(kvs: 1).Str("tokens");
        raw.W.Write((uint)GgufValueType.Array);
        raw.W.Write((uint)GgufValueType.String);
        raw.W.Write(1UL << 50);
        Assert.Contains("metadata 'tokens' claims 1125899906842624 array elements", Expect(raw.Bytes()));

        raw = new RawGguf(kvs: 1).Str("k");
        raw.W.Write(99u);
        Assert.Contains("unknown value type 99", Expect(raw.Bytes()));
    }

    [Fact]
    public void RejectsDuplicateTensorsAndBadAlignment()
    {
        Assert.Contains("appears twice", Expect([.. new RawGguf(tensors: 2).Tensor("w", 0, 0, 8).Tensor("w", 0, 32, 8).PadTo(32).Bytes(), .. new byte[64]]));
        var raw = new RawGguf(kvs: 1).Str("general.alignment");
        raw.W.Write((uint)GgufValueType.UInt32);
        raw.W.Write(24u);
        Assert.Contains("invalid general.alignment", Expect(raw.Bytes()));
    }

    [Fact]
    public void MissingFileIsAUserError() =>
        Assert.Throws<MinnowException>(() => GgufFile.Open(TempPath("does-not-exist.gguf")));
}
