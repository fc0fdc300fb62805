using System.Runtime.Intrinsics;
using Minnow.Kernels;

namespace Minnow.Tests.Kernels;

public class KernelIsaTests
{
    [Fact]
    public void HardwareFollowsTheJit()
    {
        var expected = Vector512.IsHardwareAccelerated ? VectorWidth.V512
            : Vector256.IsHardwareAccelerated ? VectorWidth.V256
            : Vector128.IsHardwareAccelerated ? VectorWidth.V128 : VectorWidth.Scalar;
        Assert.Equal(expected, KernelIsa.Hardware);
    }

    [Fact]
    public void ForceIsScopedToTheThreadAndRestored()
    {
        var before = KernelIsa.Current;
        using (KernelIsa.Force(VectorWidth.V128))
        {
            Assert.Equal(VectorWidth.V128, KernelIsa.Current);
            using (KernelIsa.Force(VectorWidth.Scalar))
            {
                Assert.Equal(VectorWidth.Scalar, KernelIsa.Current);
                VectorWidth other = VectorWidth.Scalar;
                var thread = new Thread(() => other = KernelIsa.Current);
                thread.Start();
                thread.Join();
                Assert.Equal(KernelIsa.Max, other);
            }

            Assert.Equal(VectorWidth.V128, KernelIsa.Current);
        }

        Assert.Equal(before, KernelIsa.Current);
    }

    [Fact]
    public void RejectsUnknownWidths()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelIsa.Force((VectorWidth)64));
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelIsa.Max = (VectorWidth)1024);
        Assert.Contains("hardware", KernelIsa.Describe());
    }
}
