namespace Minnow.Tests;

public class SmokeTests
{
    [Fact]
    public void BFloat16RoundTripsExactValues() => Assert.Equal(1.5f, Minnow.Tensors.BFloat16.ToSingle(Minnow.Tensors.BFloat16.FromSingle(1.5f)));
}
