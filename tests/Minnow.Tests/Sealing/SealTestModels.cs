using System.Security.Cryptography;
using Minnow.Benchmarking;
using Minnow.Formats;
using Minnow.Sealing;

namespace Minnow.Tests.Sealing;

/// <summary>Tiny models with weights no other test has (a fresh seed), and packages of them.</summary>
internal static class SealTestModels
{
    public static readonly ModelShape Tiny = new()
    {
        Name = "seal-tiny",
        Model = "none (a test shape)",
        ModelType = "llama",
        HiddenSize = 64,
        IntermediateSize = 128,
        Layers = 2,
        Heads = 4,
        KvHeads = 2,
        VocabSize = 256,
        MaxPositions = 64,
        NormEps = 1e-5,
        RopeTheta = 10000,
        TieEmbeddings = false,
    };

    /// <summary>Writes a tiny random model (config.json + model.safetensors) into <paramref name="folder"/>; with <paramref name="extra"/>, a third file of random bytes.</summary>
    public static string Write(string folder, ulong seed, int extra = 0)
    {
        SyntheticCheckpoint.Write(Tiny, folder, seed);
        if (extra > 0)
        {
            File.WriteAllBytes(Path.Combine(folder, "extra.bin"), RandomNumberGenerator.GetBytes(extra));
        }

        return folder;
    }

    /// <summary>Seals the model folder into <paramref name="path"/> and returns the package's bytes.</summary>
    public static byte[] Seal(string folder, string path, IPackageKeyProvider key, ECDsa signer, SealOptions? options = null)
    {
        using var files = new FolderModelFiles(folder);
        SealedPackage.Seal(files, path, key, signer, options);
        return File.ReadAllBytes(path);
    }
}
