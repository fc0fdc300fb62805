namespace Minnow.Cli;

/// <summary>Whether this build of the CLI carries llama.cpp (the MinnowLlamaCpp build property; native builds leave it out).</summary>
internal static class LlamaCppSupport
{
#if MINNOW_LLAMACPP
    public const bool Available = true;
#else
    public const bool Available = false;
#endif

    /// <summary>The error for a llama.cpp comparison asked of a build without it.</summary>
    public static MinnowException Unavailable(string what) => new(
        $"{what} needs llama.cpp, which this native build of minnow leaves out; use the .NET tool " +
        "(dotnet tool install --global Minnow.Cli) or a build with -p:MinnowLlamaCpp=true.");

    /// <summary>Throws <see cref="Unavailable"/> when llama.cpp is not in this build.</summary>
    public static void Require(string what)
    {
        if (!Available)
        {
            throw Unavailable(what);
        }
    }
}
