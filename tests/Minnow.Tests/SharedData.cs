namespace Minnow.Tests;

/// <summary>
/// The test data folder <c>../shared/</c> beside the repository (never copied into it). Tests that need it
/// return early only when the folder is absent.
/// </summary>
public static class SharedData
{
    private static readonly Lazy<string?> s_root = new(FindRoot);

    /// <summary>The shared folder, or null when it is not there.</summary>
    public static string? Root => s_root.Value;

    /// <summary>The repository root (the folder holding Minnow.slnx).</summary>
    public static string RepositoryRoot
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir != null && !File.Exists(System.IO.Path.Combine(dir.FullName, "Minnow.slnx")))
            {
                dir = dir.Parent;
            }

            return dir?.FullName ?? throw new InvalidOperationException("Minnow.slnx not found above " + AppContext.BaseDirectory);
        }
    }

    /// <summary>A path inside the shared folder (call only when <see cref="Root"/> is not null).</summary>
    public static string Path(params string[] parts) =>
        System.IO.Path.Combine([Root ?? throw new InvalidOperationException("../shared is absent"), .. parts]);

    private static string? FindRoot()
    {
        string candidate = System.IO.Path.GetFullPath(System.IO.Path.Combine(RepositoryRoot, "..", "shared"));
        return Directory.Exists(candidate) ? candidate : null;
    }
}
