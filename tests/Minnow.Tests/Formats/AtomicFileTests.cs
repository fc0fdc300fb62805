using Minnow.Formats.Safetensors;
using Minnow.Tests.Cli;

namespace Minnow.Tests.Formats;

public class AtomicFileTests
{
    [Fact]
    public void NextWriteRemovesTheTemporaryFilesOfDeadWritersOnly()
    {
        using var temp = new TempFolder();
        string target = temp.File("model.gguf");
        // A pid above Linux's pid_max is never alive; our own pid is.
        string dead = temp.File($".model.gguf.{int.MaxValue - 1}.0123456789abcdef.tmp");
        string deadNested = temp.File($"..model.gguf.{int.MaxValue - 1}.0123456789abcdef.f32.tmp.{int.MaxValue - 1}.fedcba9876543210.tmp");
        string live = temp.File($".model.gguf.{Environment.ProcessId}.0123456789abcdef.tmp");
        string other = temp.File($".other.gguf.{int.MaxValue - 1}.0123456789abcdef.tmp");
        foreach (string f in new[] { dead, deadNested, live, other })
        {
            File.WriteAllText(f, "partial");
        }

        AtomicFile.WriteAllText(target, "complete");

        Assert.Equal("complete", File.ReadAllText(target));
        Assert.False(File.Exists(dead));
        Assert.False(File.Exists(deadNested));
        Assert.True(File.Exists(live), "a live writer's temporary file must stay");
        Assert.True(File.Exists(other), "another file's temporary file is not ours to remove");
    }

    [Fact]
    public void FailedWriteKeepsTheOldFileAndLeavesNoTemporaryFile()
    {
        using var temp = new TempFolder();
        string target = temp.File("report.json");
        AtomicFile.WriteAllText(target, "{\"old\": true}");

        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(target, s =>
        {
            s.Write("{\"new\":"u8);
            throw new InvalidOperationException("interrupted");
        }));

        Assert.Equal("{\"old\": true}", File.ReadAllText(target));
        Assert.Equal([target], Directory.GetFiles(temp.Path));
    }
}
