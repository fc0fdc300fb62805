using System.Collections;
using System.Diagnostics.CodeAnalysis;
using Minnow.Formats;

namespace Minnow.Formats.Gguf;

/// <summary>
/// The key/value metadata of a GGUF file, in file order, with typed accessors. The <c>Get…</c> accessors throw a
/// <see cref="MinnowException"/> naming the file and the key when the key is missing or has an incompatible type;
/// the <c>TryGet…</c> accessors return false instead (also on a type mismatch).
/// </summary>
public sealed class GgufMetadata : IReadOnlyCollection<KeyValuePair<string, GgufValue>>
{
    private readonly Dictionary<string, GgufValue> _values = new(StringComparer.Ordinal);
    private readonly List<string> _order = [];

    public GgufMetadata(string source = "metadata")
    {
        Source = source;
    }

    /// <summary>The file name used in error messages.</summary>
    public string Source { get; }

    public int Count => _order.Count;

    public IEnumerable<string> Keys => _order;

    public GgufValue this[string key] => _values.TryGetValue(key, out var v) ? v : throw Missing(key);

    public bool ContainsKey(string key) => _values.ContainsKey(key);

    public bool TryGetValue(string key, out GgufValue value) => _values.TryGetValue(key, out value);

    /// <summary>Adds or replaces a value (a <see cref="GgufValue"/> or a plain .NET value, see <see cref="GgufValue.From"/>).</summary>
    public void Set(string key, object value)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (!_values.ContainsKey(key))
        {
            _order.Add(key);
        }

        _values[key] = GgufValue.From(value);
    }

    public bool Remove(string key)
    {
        if (_values.Remove(key))
        {
            _order.Remove(key);
            return true;
        }

        return false;
    }

    public string GetString(string key) => TryGetString(key, out var s) ? s : throw WrongType(key, "a string");

    public string? GetString(string key, string? defaultValue) => TryGetString(key, out var s) ? s : defaultValue;

    public bool TryGetString(string key, [NotNullWhen(true)] out string? value)
    {
        value = _values.TryGetValue(key, out var v) ? v.Value as string : null;
        return value != null;
    }

    public long GetLong(string key) => TryGetLong(key, out long l) ? l : throw WrongType(key, "an integer");

    public long GetLong(string key, long defaultValue) => TryGetLong(key, out long l) ? l : defaultValue;

    public bool TryGetLong(string key, out long value)
    {
        value = 0;
        if (!_values.TryGetValue(key, out var v))
        {
            return false;
        }

        switch (v.Value)
        {
            case byte b: value = b; return true;
            case sbyte sb: value = sb; return true;
            case ushort us: value = us; return true;
            case short s: value = s; return true;
            case uint ui: value = ui; return true;
            case int i: value = i; return true;
            case long l: value = l; return true;
            case ulong ul when ul <= long.MaxValue: value = (long)ul; return true;
            default: return false;
        }
    }

    public int GetInt(string key)
    {
        long l = GetLong(key);
        return l is >= int.MinValue and <= int.MaxValue ? (int)l : throw new MinnowException($"{Source}: metadata '{SafeText.Of(key)}' = {l} is out of range.");
    }

    public int GetInt(string key, int defaultValue) => TryGetInt(key, out int i) ? i : defaultValue;

    public bool TryGetInt(string key, out int value)
    {
        value = 0;
        if (TryGetLong(key, out long l) && l is >= int.MinValue and <= int.MaxValue)
        {
            value = (int)l;
            return true;
        }

        return false;
    }

    public double GetDouble(string key) => TryGetDouble(key, out double d) ? d : throw WrongType(key, "a number");

    public bool TryGetDouble(string key, out double value)
    {
        value = 0;
        if (!_values.TryGetValue(key, out var v))
        {
            return false;
        }

        switch (v.Value)
        {
            case float f: value = f; return true;
            case double d: value = d; return true;
            case ulong ul: value = ul; return true;
            default:
                if (TryGetLong(key, out long l))
                {
                    value = l;
                    return true;
                }

                return false;
        }
    }

    public float GetFloat(string key) => (float)GetDouble(key);

    public float GetFloat(string key, float defaultValue) => TryGetFloat(key, out float f) ? f : defaultValue;

    public bool TryGetFloat(string key, out float value)
    {
        bool ok = TryGetDouble(key, out double d);
        value = (float)d;
        return ok;
    }

    public bool GetBool(string key) => TryGetBool(key, out bool b) ? b : throw WrongType(key, "a bool");

    public bool GetBool(string key, bool defaultValue) => TryGetBool(key, out bool b) ? b : defaultValue;

    public bool TryGetBool(string key, out bool value)
    {
        value = false;
        if (_values.TryGetValue(key, out var v) && v.Value is bool b)
        {
            value = b;
            return true;
        }

        return false;
    }

    /// <summary>
    /// An array value as <typeparamref name="T"/>[]. Returns the stored array itself when its element type is
    /// exactly <typeparamref name="T"/> (do not modify it); numeric arrays are converted otherwise
    /// (e.g. a UINT32 array read as <c>int</c>).
    /// </summary>
    public T[] GetArray<T>(string key) => TryGetArray<T>(key, out var a) ? a : throw WrongType(key, $"an array of {typeof(T).Name}");

    public bool TryGetArray<T>(string key, [NotNullWhen(true)] out T[]? value)
    {
        value = null;
        if (!_values.TryGetValue(key, out var v) || v.Value is not Array array)
        {
            return false;
        }

        if (array is T[] typed)
        {
            value = typed;
            return true;
        }

        if (array is string[] || typeof(T) == typeof(string) || array is object[] || typeof(T) == typeof(bool) || array is bool[])
        {
            return false;
        }

        var result = new T[array.Length];
        try
        {
            for (int i = 0; i < array.Length; i++)
            {
                result[i] = (T)Convert.ChangeType(array.GetValue(i)!, typeof(T), System.Globalization.CultureInfo.InvariantCulture);
            }
        }
        catch (OverflowException)
        {
            return false;
        }
        catch (InvalidCastException)
        {
            return false;
        }

        value = result;
        return true;
    }

    public string[] GetStringArray(string key) => GetArray<string>(key);

    public bool TryGetStringArray(string key, [NotNullWhen(true)] out string[]? value) => TryGetArray(key, out value);

    public IEnumerator<KeyValuePair<string, GgufValue>> GetEnumerator()
    {
        foreach (string key in _order)
        {
            yield return new KeyValuePair<string, GgufValue>(key, _values[key]);
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    private MinnowException Missing(string key) => new($"{Source}: metadata key '{key}' is missing.");

    private MinnowException WrongType(string key, string expected) => _values.TryGetValue(key, out var v)
        ? new MinnowException($"{Source}: metadata '{SafeText.Of(key)}' has type {Describe(v)}, expected {expected}.")
        : Missing(key);

    private static string Describe(GgufValue v) => v.IsArray ? $"array of {v.ElementType}" : v.Type.ToString();
}
