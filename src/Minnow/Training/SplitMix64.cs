namespace Minnow.Training;

/// <summary>
/// A small, fully specified random generator (SplitMix64), so initialisation and batch sampling are the same
/// on every machine and .NET version, and a run can be resumed exactly.
/// </summary>
public struct SplitMix64
{
    private ulong _state;

    public SplitMix64(ulong seed) => _state = seed;

    /// <summary>A generator for one purpose derived from a seed and up to two indices (e.g. step, micro-batch).</summary>
    public static SplitMix64 For(long seed, long a, long b = 0)
    {
        var g = new SplitMix64((ulong)seed);
        ulong x = g.Next() ^ ((ulong)a * 0x9E3779B97F4A7C15UL);
        var h = new SplitMix64(x);
        ulong y = h.Next() ^ ((ulong)b * 0xC2B2AE3D27D4EB4FUL);
        return new SplitMix64(y);
    }

    public ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, bound).</summary>
    public int NextInt(int bound) => (int)((Next() >> 33) % (ulong)bound);

    /// <summary>Uniform in [0, 1).</summary>
    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Standard normal (Box–Muller).</summary>
    public double NextGaussian()
    {
        double u1 = 1.0 - NextDouble();
        double u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }
}
