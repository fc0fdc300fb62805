namespace Minnow.Formats.Gguf;

/// <summary>The type tag of a GGUF metadata value, as stored in the file.</summary>
public enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>
/// One GGUF metadata value. <see cref="Value"/> holds the .NET value: <c>byte, sbyte, ushort, short, uint, int,
/// float, bool, string, ulong, long, double</c>, or for arrays a typed array of those (<c>int[]</c>,
/// <c>string[]</c>, ...; an array of arrays is an <c>object[]</c> of arrays).
/// </summary>
public readonly record struct GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    /// <summary>Wraps a .NET value, inferring the GGUF type from the .NET type (see the type remarks).</summary>
    public static GgufValue From(object value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (value is GgufValue v)
        {
            return v;
        }

        if (value is Array array)
        {
            Type elementType = array.GetType().GetElementType()!;
            GgufValueType element = elementType == typeof(object) ? GgufValueType.Array : ScalarType(elementType)
                ?? throw new ArgumentException($"GGUF arrays cannot hold {elementType.Name} values.", nameof(value));
            return new GgufValue(GgufValueType.Array, value, element);
        }

        return new GgufValue(ScalarType(value.GetType())
            ?? throw new ArgumentException($"GGUF metadata cannot hold a {value.GetType().Name} value.", nameof(value)), value);
    }

    internal static GgufValueType? ScalarType(Type type)
    {
        if (type == typeof(byte))
        {
            return GgufValueType.UInt8;
        }

        if (type == typeof(sbyte))
        {
            return GgufValueType.Int8;
        }

        if (type == typeof(ushort))
        {
            return GgufValueType.UInt16;
        }

        if (type == typeof(short))
        {
            return GgufValueType.Int16;
        }

        if (type == typeof(uint))
        {
            return GgufValueType.UInt32;
        }

        if (type == typeof(int))
        {
            return GgufValueType.Int32;
        }

        if (type == typeof(float))
        {
            return GgufValueType.Float32;
        }

        if (type == typeof(bool))
        {
            return GgufValueType.Bool;
        }

        if (type == typeof(string))
        {
            return GgufValueType.String;
        }

        if (type == typeof(ulong))
        {
            return GgufValueType.UInt64;
        }

        if (type == typeof(long))
        {
            return GgufValueType.Int64;
        }

        if (type == typeof(double))
        {
            return GgufValueType.Float64;
        }

        return null;
    }

    public bool IsArray => Type == GgufValueType.Array;

    /// <summary>Number of elements of an array value (0 for a scalar).</summary>
    public int Count => Value is Array a ? a.Length : 0;

    public override string ToString()
    {
        if (Value is string s)
        {
            return s.Length > 60 ? $"\"{s[..57]}...\"" : $"\"{s}\"";
        }

        if (Value is Array a)
        {
            return $"[{ElementType} x {a.Length}]";
        }

        return Convert.ToString(Value, System.Globalization.CultureInfo.InvariantCulture) ?? "";
    }
}
