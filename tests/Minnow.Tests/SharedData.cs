namespace Minnow.Tests;

/// <summary>
/// Locates the shared test data folder (<c>../shared</c> beside the repository root, see its README). Tests that
/// need it return early when <see cref="Root"/> is null (the folder is absent on a user's machine).
/// </summary>
public static class SharedData
{
    private static readonly Lazy<string?> LazyRoot = new(FindRoot);

    /// <summary>The full path of the shared folder, or null when it is absent.</summary>
    public static string? Root => LazyRoot.Value;

    /// <summary>The repository root (the folder holding Minnow.slnx), or null if not found.</summary>
    public static string? RepositoryRoot { get; } = FindRepositoryRoot();

    /// <summary>A path inside the shared folder (throws when the folder is absent: check <see cref="Root"/> first).</summary>
    public static string Path(params string[] parts)
    {
        string root = Root ?? throw new InvalidOperationException("The shared test data folder is absent.");
        return System.IO.Path.Combine([root, .. parts]);
    }

    private static string? FindRepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "Minnow.slnx")))
            {
                return dir.FullName;
            }
        }

        return null;
    }

    private static string? FindRoot()
    {
        if (RepositoryRoot == null)
        {
            return null;
        }

        string shared = System.IO.Path.GetFullPath(System.IO.Path.Combine(RepositoryRoot, "..", "shared"));
        return Directory.Exists(shared) ? shared : null;
    }
}
