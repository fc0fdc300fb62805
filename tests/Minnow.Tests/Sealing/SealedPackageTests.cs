using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Minnow.Benchmarking;
using Minnow.Formats;
using Minnow.Loading;
using Minnow.Sealing;
using Minnow.Tests.Cli;

namespace Minnow.Tests.Sealing;

public sealed class SealedPackageTests
{
    [Fact]
    public void SealedDefaultModelGivesTheSameLogitsAndTokenizerAsThePlainModel()
    {
        if (!Cli.Cli.DefaultModelExists)
        {
            return;
        }

        string plainPath = Minnow.Cli.DefaultModel.Resolve(null);
        using var t = new TempFolder();
        using var key = PackageKey.Generate();
        using var signer = SigningKey.Generate();
        using (var files = LoadedModel.FilesToSeal(plainPath))
        {
            SealedPackage.Seal(files, t.File("m.mpkg"), key, signer);
        }

        using var plain = LoadedModel.Open(plainPath);
        using var sealedModel = LoadedModel.Open(t.File("m.mpkg"), null, new PackageAccess(key, new PackagePolicy { TrustedSigners = [signer] }));
        Assert.DoesNotContain(sealedModel.Model.Weights.All.Values, w => w.IsMapped);
        var ids = plain.Tokenizer!.Encode("Once upon a time, a little fish swam to the sea.", addSpecial: true).ToArray();
        Assert.Equal(ids, sealedModel.Tokenizer!.Encode("Once upon a time, a little fish swam to the sea.", addSpecial: true).ToArray());
        float[] a = MinnowEngine.AllLogits(plain.Model, ids);
        float[] b = MinnowEngine.AllLogits(sealedModel.Model, ids);
        Assert.Equal(a, b);
        Assert.Equal(plain.Facts.Parameters, sealedModel.Facts.Parameters);
        Assert.Equal(plain.Facts.WeightFileBytes, sealedModel.Facts.WeightFileBytes);
    }

    [Fact]
    public void SealedLlama2cCheckpointGivesTheSameLogits()
    {
        if (SharedData.Root is null)
        {
            return;
        }

        string bin = SharedData.Path("models", "stories260K", "stories260K.bin");
        using var t = new TempFolder();
        using var key = PackageKey.Generate();
        using var signer = SigningKey.Generate();
        using (var files = LoadedModel.FilesToSeal(bin))
        {
            Assert.Equal(["stories260K.bin"], files.Names);
            SealedPackage.Seal(files, t.File("s.mpkg"), key, signer);
        }

        using var plain = LoadedModel.Open(bin);
        using var sealedModel = LoadedModel.Open(SealedPackage.Open(t.File("s.mpkg"), key));
        Assert.Equal(ModelFormat.Llama2c, sealedModel.Format);
        int[] ids = [1, 45, 90, 3, 200, 17, 400, 12];
        Assert.Equal(MinnowEngine.AllLogits(plain.Model, ids), MinnowEngine.AllLogits(sealedModel.Model, ids));
    }

    [Fact]
    public void EveryMutatedPackageIsRefusedBeforeItRuns()
    {
        using var t = new TempFolder();
        string folder = SealTestModels.Write(Path.Combine(t.Path, "model"), seed: 1234, extra: 3 * 4096);
        using var key = PackageKey.Generate();
        using var signer = SigningKey.Generate();
        var options = new SealOptions { Version = 5, ChunkSize = 4096, Expires = DateTimeOffset.UtcNow.AddDays(30) };
        byte[] good = SealTestModels.Seal(folder, t.File("good.mpkg"), key, signer, options);
        byte[] again = SealTestModels.Seal(folder, t.File("again.mpkg"), key, signer, options);
        using var otherKey = PackageKey.Generate();
        byte[] otherKeyPackage = SealTestModels.Seal(folder, t.File("other.mpkg"), otherKey, signer, options);
        var policy = new PackagePolicy { TrustedSigners = [signer], MinimumVersion = 5 };

        // The intact package opens and runs.
        var verified = SealedPackage.Verify(PackageSource.FromMemory(good, "good"), key, policy);
        using (var loaded = LoadedModel.Open(SealedPackage.Open(PackageSource.FromMemory(good, "good"), key, policy)))
        {
            Assert.Equal(SealTestModels.Tiny.VocabSize * 3, MinnowEngine.AllLogits(loaded.Model, [1, 2, 3]).Length);
        }

        long headerOffset = BinaryPrimitives.ReadInt64LittleEndian(good.AsSpan(good.Length - 16));
        var files = verified.Manifest.Files;
        Assert.Equal(3, files.Count);
        var rng = new Random(7);
        var cases = new List<(string What, byte[] Bytes, IPackageKeyProvider Key, PackagePolicy Policy)>();
        void Mutate(string what, Func<byte[], byte[]> change) => cases.Add((what, change((byte[])good.Clone()), key, policy));
        void Flip(string region, long at) => Mutate($"flip {region} byte {at}", b =>
        {
            b[at] ^= (byte)rng.Next(1, 256);
            return b;
        });

        // Byte flips in every region: prefix, each file's ciphertext and tags, the header, the trailer.
        for (int i = 0; i < 16; i++)
        {
            Flip("prefix", i);
            Flip("trailer", good.Length - 16 + i);
        }

        for (long i = headerOffset; i < good.Length - 16; i += Math.Max(1, (good.Length - 16 - headerOffset) / 400))
        {
            Flip("header", i);
        }

        foreach (var f in files)
        {
            for (long c = 0; c < f.Chunks; c++)
            {
                long start = f.Offset + (c * (4096 + 16));
                int length = (int)Math.Min(4096, f.Size - (c * 4096));
                if (length > 0)
                {
                    Flip($"{f.Name} chunk {c} first", start);
                    Flip($"{f.Name} chunk {c} middle", start + rng.Next(length));
                    Flip($"{f.Name} chunk {c} last", start + length - 1);
                }

                Flip($"{f.Name} chunk {c} tag", start + length + rng.Next(16));
            }
        }

        // Truncations: at every chunk boundary, inside the header and trailer, and at random.
        var cuts = new SortedSet<long> { 0, 8, 15, 16, headerOffset, headerOffset + 1, good.Length - 16, good.Length - 1 };
        foreach (var f in files)
        {
            for (long c = 0; c <= f.Chunks; c++)
            {
                cuts.Add(Math.Min(f.Offset + f.EncryptedSize, f.Offset + (c * (4096 + 16))));
            }
        }

        while (cuts.Count < 150)
        {
            cuts.Add(rng.NextInt64(1, good.Length));
        }

        foreach (long cut in cuts)
        {
            Mutate($"truncated to {cut} bytes", b => b[..(int)cut]);
        }

        // Truncated files with the manifest kept (the last chunks of a file cut out, later files moved up).
        var big = files.First(f => f.Chunks > 2);
        Mutate($"last chunk of {big.Name} removed", b =>
        {
            long lastStart = big.Offset + ((big.Chunks - 1) * (4096 + 16));
            return [.. b.AsSpan(0, (int)lastStart), .. b.AsSpan((int)(big.Offset + big.EncryptedSize))];
        });

        // Inserted and appended bytes.
        for (int i = 0; i < 20; i++)
        {
            int at = rng.Next(good.Length + 1);
            Mutate($"byte inserted at {at}", b => [.. b.AsSpan(0, at), (byte)rng.Next(256), .. b.AsSpan(at)]);
        }

        // Chunk swaps within a file (every adjacent pair of full chunks), and full chunks moved between files.
        foreach (var f in files)
        {
            for (long c = 0; c + 1 < f.Chunks && (c + 2) * 4096 <= f.Size; c++)
            {
                long a = f.Offset + (c * 4112), n = a + 4112;
                Mutate($"{f.Name} chunks {c} and {c + 1} swapped", b => SwapRanges(b, a, n, 4112));
                Mutate($"{f.Name} chunk {c} replaced by chunk {c + 1}", b =>
                {
                    Array.Copy(b, n, b, a, 4112);
                    return b;
                });
            }
        }

        var multi = files.Where(f => f.Size >= 2 * 4096).ToList();
        for (int i = 0; i < multi.Count; i++)
        {
            for (int j = 0; j < multi.Count; j++)
            {
                if (i != j)
                {
                    for (long c = 0; c < 2; c++)
                    {
                        long a = multi[i].Offset + (c * 4112), z = multi[j].Offset + (c * 4112);
                        Mutate($"chunk {c} of {multi[i].Name} swapped with chunk {c} of {multi[j].Name}", b => SwapRanges(b, a, z, 4112));
                    }
                }
            }
        }

        // A manifest (header and trailer) from another package: the same files and key sealed again, or another key.
        byte[] Splice(byte[] body, byte[] tail)
        {
            long bodyEnd = BinaryPrimitives.ReadInt64LittleEndian(body.AsSpan(body.Length - 16));
            long tailStart = BinaryPrimitives.ReadInt64LittleEndian(tail.AsSpan(tail.Length - 16));
            return [.. body.AsSpan(0, (int)bodyEnd), .. tail.AsSpan((int)tailStart)];
        }

        cases.Add(("manifest of the same model sealed again", Splice(good, again), key, policy));
        cases.Add(("body of the same model sealed again", Splice(again, good), key, policy));
        cases.Add(("manifest of a package with another key", Splice(good, otherKeyPackage), key, policy));
        cases.Add(("manifest of a package with another key, its key given", Splice(good, otherKeyPackage), otherKey, policy));
        for (int i = 0; i < 3; i++)
        {
            int index = i;
            Mutate($"file region {index} of another sealing", b =>
            {
                var f = files[index];
                Array.Copy(again, f.Offset, b, f.Offset, f.EncryptedSize);
                return b;
            });
        }

        // A manifest rewritten (higher version, later expiry) and re-signed by an attacker with their own key.
        using var attacker = SigningKey.Generate();
        {
            foreach (string change in new[] { "version", "expires", "sha" })
            {
                cases.Add(($"manifest re-signed by an attacker ({change} changed)", Resign(good, attacker, change), key, policy with { TrustedSigners = [] }));
                cases.Add(($"manifest re-signed by an attacker ({change} changed), trusted signer required", Resign(good, attacker, change), key, policy));
            }

            cases.Add(("signed by a key that is not trusted", good, key, policy with { TrustedSigners = [attacker] }));
        }

        // Wrong keys, expired, older versions.
        var wrongKeys = new List<PackageKey>();
        for (int i = 0; i < 30; i++)
        {
            var wrong = PackageKey.Generate();
            wrongKeys.Add(wrong);
            cases.Add(($"wrong key {i}", good, wrong, policy));
        }

        foreach (int days in new[] { 31, 32, 60, 365, 3650 })
        {
            cases.Add(($"expired ({days} days later)", good, key, policy with { Now = DateTimeOffset.UtcNow.AddDays(days) }));
        }

        foreach (long minimum in new long[] { 6, 7, 10, 1000, long.MaxValue })
        {
            cases.Add(($"older version than {minimum}", good, key, policy with { MinimumVersion = minimum }));
        }

        int refused = 0;
        foreach (var (what, bytes, caseKey, casePolicy) in cases)
        {
            var e = Assert.Throws<MinnowException>(() =>
            {
                using var opened = SealedPackage.Open(PackageSource.FromMemory(bytes, "pkg"), caseKey, casePolicy);
                Assert.Fail($"{what}: the package opened");
            });
            Assert.True(e.Message.StartsWith("pkg: ", StringComparison.Ordinal) && !e.Message.Contains('\n'), $"{what}: {e.Message}");
            refused++;
        }

        wrongKeys.ForEach(k => k.Dispose());
        Assert.True(cases.Count >= 1000, $"only {cases.Count} mutated packages");
        Assert.Equal(cases.Count, refused);
    }

    [Fact]
    public void CliSealsVerifiesAndRunsAPackageAndRefusesBadOnesWithOneLine()
    {
        using var t = new TempFolder();
        string folder = SealTestModels.Write(Path.Combine(t.Path, "model"), seed: 99);
        var keygen = Cli.Cli.Run("keygen", "--out", t.File("k"), "--json");
        Assert.True(keygen.ExitCode == 0, keygen.ToString());
        Cli.Cli.AssertFails(["keygen", "--out", t.File("k")], "exists");
        string pkg = t.File("m.mpkg");
        var seal = Cli.Cli.Run("seal", folder, "--out", pkg, "--key-file", t.File("k.key"), "--sign-key", t.File("k.sign.pem"), "--version", "4", "--expires", "2099-01-01", "--json");
        Assert.True(seal.ExitCode == 0, seal.ToString());
        Assert.Equal(4, seal.Json().GetProperty("version").GetInt64());
        var verify = Cli.Cli.Run("seal", "--verify", pkg, "--key-file", t.File("k.key"), "--trust", t.File("k.pub.pem"), "--json");
        Assert.True(verify.ExitCode == 0, verify.ToString());
        Assert.Equal(seal.Json().GetProperty("digest").GetString(), verify.Json().GetProperty("digest").GetString());

        var run = Cli.Cli.Run("generate", pkg, "--key-file", t.File("k.key"), "--trust", t.File("k.pub.pem"), "--prompt-ids", "1,2,3", "-n", "4", "--temp", "0", "--json");
        Assert.True(run.ExitCode == 0, run.ToString());
        var plainRun = Cli.Cli.Run("generate", folder, "--prompt-ids", "1,2,3", "-n", "4", "--temp", "0", "--json");
        Assert.Equal(plainRun.Json().GetProperty("token_ids").ToString(), run.Json().GetProperty("token_ids").ToString());

        Cli.Cli.AssertFails(["generate", pkg, "--prompt-ids", "1,2"], "sealed package needs its key");
        File.WriteAllText(t.File("wrong.key"), Convert.ToHexString(RandomNumberGenerator.GetBytes(32)));
        Cli.Cli.AssertFails(["generate", pkg, "--key-file", t.File("wrong.key"), "--prompt-ids", "1,2"], "wrong key");
        File.WriteAllText(t.File("ids.txt"), "1,2,3,4,5,6,7,8");
        Cli.Cli.AssertFails(["perplexity", pkg, "--key-file", t.File("k.key"), "--min-version", "5", "--ids", t.File("ids.txt")], "older than version 5");
        Cli.Cli.AssertFails(["check", pkg, "--key-file", t.File("wrong.key")], "wrong key");
        byte[] bytes = File.ReadAllBytes(pkg);
        bytes[100] ^= 0x40;
        File.WriteAllBytes(t.File("flipped.mpkg"), bytes);
        Cli.Cli.AssertFails(["generate", t.File("flipped.mpkg"), "--key-file", t.File("k.key"), "--prompt-ids", "1,2"], "was changed");
        Cli.Cli.AssertFails(["seal", "--verify", t.File("flipped.mpkg"), "--key-file", t.File("k.key")], "was changed");
        File.WriteAllBytes(t.File("cut.mpkg"), bytes[..(bytes.Length / 2)]);
        Cli.Cli.AssertFails(["perplexity", t.File("cut.mpkg"), "--key-file", t.File("k.key"), "--ids", t.File("ids.txt")], "truncated");
        using var other = SigningKey.Generate();
        SigningKey.WritePublic(other, t.File("other.pub.pem"));
        Cli.Cli.AssertFails(["seal", "--verify", pkg, "--trust", t.File("other.pub.pem")], "not signed by a trusted key");
    }

    private static byte[] SwapRanges(byte[] b, long a, long z, int length)
    {
        var tmp = b.AsSpan((int)a, length).ToArray();
        Array.Copy(b, z, b, a, length);
        tmp.CopyTo(b, z);
        return b;
    }

    /// <summary>The package with its statement changed and signed again by <paramref name="attacker"/>, whose public key replaces the sealer's.</summary>
    private static byte[] Resign(byte[] package, ECDsa attacker, string change)
    {
        long offset = BinaryPrimitives.ReadInt64LittleEndian(package.AsSpan(package.Length - 16));
        int length = BinaryPrimitives.ReadInt32LittleEndian(package.AsSpan(package.Length - 8));
        var header = JsonNode.Parse(package.AsSpan((int)offset, length))!.AsObject();
        var envelope = header["dsseEnvelope"]!.AsObject();
        var statement = JsonNode.Parse(Convert.FromBase64String(envelope["payload"]!.GetValue<string>()))!.AsObject();
        var sealedPart = statement["predicate"]!["minnow_sealed_package"]!.AsObject();
        switch (change)
        {
            case "version":
                sealedPart["version"] = 99;
                break;
            case "expires":
                sealedPart["expires"] = "2199-01-01T00:00:00Z";
                break;
            default:
                statement["predicate"]!["resources"]![0]!["digest"] = new string('0', 64);
                break;
        }

        var resigned = DsseEnvelope.Sign(DsseEnvelope.InTotoPayloadType, Encoding.UTF8.GetBytes(statement.ToJsonString()), attacker);
        header["dsseEnvelope"] = JsonNode.Parse(resigned.ToJson());
        header["verificationMaterial"]!["publicKey"] = Convert.ToBase64String(attacker.ExportSubjectPublicKeyInfo());
        byte[] newHeader = Encoding.UTF8.GetBytes(header.ToJsonString());
        var trailer = new byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(trailer, offset);
        BinaryPrimitives.WriteInt32LittleEndian(trailer.AsSpan(8), newHeader.Length);
        "MNPK"u8.CopyTo(trailer.AsSpan(12));
        return [.. package.AsSpan(0, (int)offset), .. newHeader, .. trailer];
    }
}
