using Microsoft.ML.OnnxRuntime;

namespace Minnow.OnnxRuntime;

/// <summary>
/// An exported decoder (model.onnx in the Optimum / onnxruntime-genai layout) run in ONNX Runtime's CPU execution
/// provider, one sequence at a time: <see cref="Forward"/> feeds tokens after the ones already seen and keeps the
/// present keys and values as the next call's past.
/// </summary>
public sealed class OrtDecoder : IDisposable
{
    private readonly InferenceSession _session;
    private readonly (int KvHeads, int HeadDim)[] _layers;
    private readonly string[] _outputNames;
    private OrtValue[] _past;

    private OrtDecoder(InferenceSession session, (int, int)[] layers, int vocab)
    {
        _session = session;
        _layers = layers;
        VocabSize = vocab;
        _outputNames = ["logits", .. Enumerable.Range(0, layers.Length).SelectMany(l => new[] { $"present.{l}.key", $"present.{l}.value" })];
        _past = EmptyPast();
    }

    public int VocabSize { get; }

    public int Layers => _layers.Length;

    /// <summary>Positions seen so far.</summary>
    public int Length { get; private set; }

    /// <summary>Opens model.onnx in <paramref name="folder"/> (or the .onnx file itself); threads 0 = ONNX Runtime's default.</summary>
    public static OrtDecoder Open(string path, int threads = 0)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, "model.onnx") : path;
        if (!File.Exists(file))
        {
            throw new MinnowException($"{path}: no model.onnx (export one with `minnow export MODEL --format onnx -o DIR`).");
        }

        var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        if (threads > 0)
        {
            options.IntraOpNumThreads = threads;
            options.InterOpNumThreads = 1;
        }

        InferenceSession session;
        try
        {
            session = new InferenceSession(file, options);
        }
        catch (OnnxRuntimeException e)
        {
            throw new MinnowException($"{file}: ONNX Runtime cannot load it ({e.Message.Split('\n')[0]}).");
        }

        var layers = new List<(int, int)>();
        while (session.InputMetadata.TryGetValue($"past_key_values.{layers.Count}.key", out var meta))
        {
            layers.Add((meta.Dimensions[1], meta.Dimensions[3]));
        }

        if (!session.OutputMetadata.TryGetValue("logits", out var logits) || layers.Count == 0)
        {
            session.Dispose();
            throw new MinnowException($"{file}: not a decoder with a KV cache (needs past_key_values.*.key inputs and a logits output).");
        }

        return new OrtDecoder(session, [.. layers], logits.Dimensions[^1]);
    }

    /// <summary>Forgets the sequence (empties the KV cache).</summary>
    public void Reset()
    {
        foreach (var v in _past)
        {
            v.Dispose();
        }

        _past = EmptyPast();
        Length = 0;
    }

    /// <summary>Runs tokens at positions Length.. and returns their logits: [tokens, vocab] when allLogits, else the last row.</summary>
    public float[] Forward(ReadOnlySpan<int> tokens, bool allLogits)
    {
        int n = tokens.Length, total = Length + n;
        var ids = new long[n];
        var positions = new long[n];
        for (int i = 0; i < n; i++)
        {
            ids[i] = tokens[i];
            positions[i] = Length + i;
        }

        var mask = new long[total];
        Array.Fill(mask, 1L);
        using var idsValue = OrtValue.CreateTensorValueFromMemory(ids, [1, n]);
        using var maskValue = OrtValue.CreateTensorValueFromMemory(mask, [1, total]);
        using var positionValue = OrtValue.CreateTensorValueFromMemory(positions, [1, n]);
        var inputs = new Dictionary<string, OrtValue>(StringComparer.Ordinal)
        {
            ["input_ids"] = idsValue,
            ["attention_mask"] = maskValue,
            ["position_ids"] = positionValue,
        };
        for (int l = 0; l < _layers.Length; l++)
        {
            inputs[$"past_key_values.{l}.key"] = _past[2 * l];
            inputs[$"past_key_values.{l}.value"] = _past[(2 * l) + 1];
        }

        using var runOptions = new RunOptions();
        var outputs = _session.Run(runOptions, inputs, _outputNames);
        float[] result;
        try
        {
            var logits = outputs[0].GetTensorDataAsSpan<float>();
            result = allLogits ? logits.ToArray() : logits[^VocabSize..].ToArray();
        }
        catch
        {
            outputs.Dispose();
            throw;
        }

        foreach (var v in _past)
        {
            v.Dispose();
        }

        // The presents become the next past; the logits are no longer needed.
        outputs[0].Dispose();
        _past = [.. outputs.Skip(1)];
        Length = total;
        return result;
    }

    private OrtValue[] EmptyPast()
    {
        var past = new OrtValue[2 * _layers.Length];
        for (int l = 0; l < _layers.Length; l++)
        {
            long[] shape = [1, _layers[l].KvHeads, 0, _layers[l].HeadDim];
            past[2 * l] = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), shape);
            past[(2 * l) + 1] = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), shape);
        }

        return past;
    }

    public void Dispose()
    {
        foreach (var v in _past)
        {
            v.Dispose();
        }

        _session.Dispose();
    }
}
