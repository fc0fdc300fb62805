namespace Minnow.Inference;

/// <summary>
/// Picks the next token from a row of logits. Its buffers are sized to the vocabulary once, so sampling a
/// token allocates nothing.
/// </summary>
public sealed class Sampler
{
    private readonly SamplingOptions _options;
    private readonly float[] _values;
    private readonly int[] _ids;
    private ulong _state;

    public Sampler(SamplingOptions options, int vocabSize)
    {
        options.Validate();
        _options = options;
        _values = new float[vocabSize];
        _ids = new int[vocabSize];
        _state = options.Seed ?? (ulong)Random.Shared.NextInt64();
        if (_state == 0)
        {
            _state = 0x9E3779B97F4A7C15;
        }
    }

    /// <summary>Chooses a token; <paramref name="logits"/> is modified by the repetition penalty.</summary>
    public int Sample(Span<float> logits, ReadOnlySpan<int> history)
    {
        ApplyRepetitionPenalty(logits, history);
        if (_options.Temperature == 0)
        {
            return ArgMax(logits);
        }

        int n = logits.Length;
        logits.CopyTo(_values);
        for (int i = 0; i < n; i++)
        {
            _ids[i] = i;
        }

        // Keep the candidates in descending order of logit (only the top k when k is set).
        int count = n;
        if (_options.TopK > 0 && _options.TopK < n)
        {
            count = SelectTopK(_options.TopK);
        }

        Array.Sort(_values, _ids, 0, count, DescendingComparer.Instance);

        // Probabilities at temperature 1 for the top-p and min-p filters (as llama.cpp's samplers).
        float max = _values[0];
        double sum = 0;
        for (int i = 0; i < count; i++)
        {
            sum += Math.Exp(_values[i] - max);
        }

        if (_options.TopP < 1)
        {
            double cumulative = 0;
            for (int i = 0; i < count; i++)
            {
                cumulative += Math.Exp(_values[i] - max) / sum;
                if (cumulative >= _options.TopP)
                {
                    count = i + 1;
                    break;
                }
            }
        }

        if (_options.MinP > 0)
        {
            // p_i ≥ min_p · p_max  ⇔  logit_i ≥ logit_max + ln(min_p)
            float threshold = max + MathF.Log(_options.MinP);
            int kept = 1;
            while (kept < count && _values[kept] >= threshold)
            {
                kept++;
            }

            count = kept;
        }

        double total = 0;
        for (int i = 0; i < count; i++)
        {
            _values[i] = (float)Math.Exp((_values[i] - max) / _options.Temperature);
            total += _values[i];
        }

        double r = NextDouble() * total;
        double acc = 0;
        for (int i = 0; i < count; i++)
        {
            acc += _values[i];
            if (r < acc)
            {
                return _ids[i];
            }
        }

        return _ids[count - 1];
    }

    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++)
        {
            if (logits[i] > logits[best])
            {
                best = i;
            }
        }

        return best;
    }

    private void ApplyRepetitionPenalty(Span<float> logits, ReadOnlySpan<int> history)
    {
        float penalty = _options.RepetitionPenalty;
        if (penalty == 1 || _options.RepeatLastN == 0)
        {
            return;
        }

        var recent = history.Length > _options.RepeatLastN ? history[^_options.RepeatLastN..] : history;
        for (int i = 0; i < recent.Length; i++)
        {
            int id = recent[i];
            if (recent[..i].Contains(id))
            {
                continue;
            }

            logits[id] = logits[id] > 0 ? logits[id] / penalty : logits[id] * penalty;
        }
    }

    /// <summary>Moves the k largest values (and their ids) to the front of the buffers, in O(n) average.</summary>
    private int SelectTopK(int k)
    {
        int left = 0, right = _values.Length - 1;
        while (left < right)
        {
            float pivot = _values[(left + right) >>> 1];
            int i = left, j = right;
            while (i <= j)
            {
                while (_values[i] > pivot)
                {
                    i++;
                }

                while (_values[j] < pivot)
                {
                    j--;
                }

                if (i <= j)
                {
                    (_values[i], _values[j]) = (_values[j], _values[i]);
                    (_ids[i], _ids[j]) = (_ids[j], _ids[i]);
                    i++;
                    j--;
                }
            }

            if (k - 1 <= j)
            {
                right = j;
            }
            else if (k - 1 >= i)
            {
                left = i;
            }
            else
            {
                break;
            }
        }

        return k;
    }

    private double NextDouble()
    {
        // xorshift64*
        _state ^= _state >> 12;
        _state ^= _state << 25;
        _state ^= _state >> 27;
        return ((_state * 0x2545F4914F6CDD1DUL) >> 11) * (1.0 / (1UL << 53));
    }

    private sealed class DescendingComparer : IComparer<float>
    {
        public static readonly DescendingComparer Instance = new();

        public int Compare(float x, float y) => y.CompareTo(x);
    }
}
