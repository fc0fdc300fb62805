namespace Minnow.Cli;

/// <summary>
/// The model a command uses when MODEL is omitted: <c>$MINNOW_DEFAULT_MODEL</c> when set, otherwise
/// <c>models/default</c> in the repository the executable was built in (found by walking up from the
/// executable's folder to the one holding Minnow.slnx).
/// </summary>
public static class DefaultModel
{
    public const string EnvironmentVariable = "MINNOW_DEFAULT_MODEL";

    public const string RelativePath = "models/default";

    /// <summary>The repository root above the executable, or null (an installed tool has none).</summary>
    public static string? RepositoryRoot { get; } = FindRepositoryRoot(AppContext.BaseDirectory);

    /// <summary>The model path to open: <paramref name="given"/> when set, else the default model.</summary>
    public static string Resolve(string? given)
    {
        if (!string.IsNullOrWhiteSpace(given))
        {
            return given;
        }

        string? fromEnvironment = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            if (!Directory.Exists(fromEnvironment) && !File.Exists(fromEnvironment))
            {
                throw new MinnowException($"no MODEL given and {EnvironmentVariable}={fromEnvironment} does not exist; pass a model path.");
            }

            return fromEnvironment;
        }

        string? folder = RepositoryRoot is null ? null : Path.Combine(RepositoryRoot, "models", "default");
        if (folder is null || !Directory.Exists(folder) || !Directory.EnumerateFileSystemEntries(folder).Any())
        {
            throw new MinnowException($"no MODEL given and the default model {RelativePath} is missing; pass a model path.");
        }

        return folder;
    }

    public static string? FindRepositoryRoot(string start)
    {
        for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Minnow.slnx")))
            {
                return dir.FullName;
            }
        }

        return null;
    }
}
