namespace Minnow.Models;

/// <summary>
/// RoPE frequencies (with llama3-style scaling when configured) and the cos/sin of each position, computed in
/// float32 as transformers does.
/// </summary>
public sealed unsafe class RopeTable
{
    private readonly float[] _inverseFrequencies;

    public RopeTable(ModelConfig config)
    {
        int dim = config.RotaryDim;
        _inverseFrequencies = new float[dim / 2];
        for (int i = 0; i < dim / 2; i++)
        {
            _inverseFrequencies[i] = (float)(1.0 / Math.Pow(config.RopeTheta, (float)(2 * i) / dim));
        }

        if (config.RopeScaling is { } s)
        {
            double lowFreqWavelen = s.OriginalMaxPositions / s.LowFreqFactor;
            double highFreqWavelen = s.OriginalMaxPositions / s.HighFreqFactor;
            for (int i = 0; i < _inverseFrequencies.Length; i++)
            {
                double f = _inverseFrequencies[i];
                double wavelen = 2 * Math.PI / f;
                if (wavelen > lowFreqWavelen)
                {
                    f /= s.Factor;
                }
                else if (wavelen >= highFreqWavelen)
                {
                    double smooth = ((s.OriginalMaxPositions / wavelen) - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    f = ((1 - smooth) * f / s.Factor) + (smooth * f);
                }

                _inverseFrequencies[i] = (float)f;
            }
        }

        if (config.RopeFrequencyFactors is { } factors)
        {
            for (int i = 0; i < _inverseFrequencies.Length && i < factors.Length; i++)
            {
                _inverseFrequencies[i] /= factors[i];
            }
        }
    }

    public int Pairs => _inverseFrequencies.Length;

    public IReadOnlyList<float> InverseFrequencies => _inverseFrequencies;

    public void Fill(int position, float* cos, float* sin)
    {
        for (int i = 0; i < _inverseFrequencies.Length; i++)
        {
            float angle = position * _inverseFrequencies[i];
            cos[i] = MathF.Cos(angle);
            sin[i] = MathF.Sin(angle);
        }
    }
}
