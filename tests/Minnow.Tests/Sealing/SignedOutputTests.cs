using System.Text;
using Minnow.Sealing;
using Minnow.Tests.Cli;

namespace Minnow.Tests.Sealing;

public sealed class SignedOutputTests
{
    private const string Digest = "sha256:b92b751ade0ad02b131b6edbb67ebed2e2baf76b71c5ef26f29085515d7b9be0";

    [Fact]
    public void ASignedOutputVerifiesAndAnyChangedCharacterOrDigestFails()
    {
        using var device = SigningKey.Generate();
        byte[] request = Encoding.UTF8.GetBytes("{\"prompt\":\"Once upon a time\",\"max_tokens\":16}");
        string text = "Once upon a time, a small fish — named Minnow — swam far. ✓";
        var signed = SignedOutput.Sign(device, request, text, Digest, DateTimeOffset.UtcNow);
        Assert.True(signed.Verify(device));
        Assert.True(signed.Answers(request));
        Assert.False(signed.Answers(Encoding.UTF8.GetBytes("{\"prompt\":\"Once upon a time\",\"max_tokens\":17}")));

        // Round trips: the JSON field and the header.
        Assert.True(SignedOutput.Parse(signed.ToJson(), "body").Verify(device));
        Assert.True(SignedOutput.FromHeader(signed.ToHeader(), text).Verify(device));

        // Every single-character change of the output fails, and so does any other digest, request hash or time.
        for (int i = 0; i < text.Length; i++)
        {
            var changed = new StringBuilder(text) { [i] = text[i] == 'x' ? 'y' : 'x' }.ToString();
            Assert.False((signed with { Output = changed }).Verify(device), $"character {i} changed still verifies");
        }

        Assert.False((signed with { Output = text + " " }).Verify(device));
        Assert.False((signed with { Output = text[..^1] }).Verify(device));
        Assert.False((signed with { PackageDigest = Digest[..^1] + "1" }).Verify(device));
        Assert.False((signed with { RequestSha256 = new string('0', 64) }).Verify(device));
        Assert.False((signed with { Timestamp = signed.Timestamp.AddMilliseconds(1) }).Verify(device));
        using var other = SigningKey.Generate();
        Assert.False(signed.Verify(other));
    }

    [Fact]
    public void VerifyOutputCommandAcceptsTheSignedOutputAndRefusesChangedOnes()
    {
        using var t = new TempFolder();
        using var device = SigningKey.Generate();
        SigningKey.WritePublic(device, t.File("device.pub.pem"));
        byte[] request = Encoding.UTF8.GetBytes("{\"prompt\":\"hello\"}");
        File.WriteAllBytes(t.File("request.json"), request);
        var signed = SignedOutput.Sign(device, request, "hello there, friend", Digest, DateTimeOffset.UtcNow);
        File.WriteAllText(t.File("response.json"), $"{{\"text\":\"hello there, friend\",\"signature\":{signed.ToJson()}}}");

        var ok = Cli.Cli.Run("verify-output", t.File("response.json"), "--trust", t.File("device.pub.pem"), "--package-digest", Digest, "--request", t.File("request.json"));
        Assert.True(ok.ExitCode == 0, ok.ToString());
        Assert.StartsWith("OK: signed by " + SigningKey.KeyId(device), ok.Stdout);

        File.WriteAllText(t.File("changed.json"), signed.ToJson().Replace("friend", "fiend", StringComparison.Ordinal));
        Cli.Cli.AssertFails(["verify-output", t.File("changed.json"), "--trust", t.File("device.pub.pem")], "does not verify");
        File.WriteAllText(t.File("digest.json"), signed.ToJson().Replace(Digest, Digest[..^1] + "1", StringComparison.Ordinal));
        Cli.Cli.AssertFails(["verify-output", t.File("digest.json"), "--trust", t.File("device.pub.pem")], "does not verify");
        Cli.Cli.AssertFails(["verify-output", t.File("response.json"), "--trust", t.File("device.pub.pem"), "--package-digest", "sha256:" + new string('1', 64)], "not sha256:1111");
        File.WriteAllText(t.File("other-request.json"), "{\"prompt\":\"bye\"}");
        Cli.Cli.AssertFails(["verify-output", t.File("response.json"), "--trust", t.File("device.pub.pem"), "--request", t.File("other-request.json")], "does not answer");
        File.WriteAllText(t.File("junk.json"), "{\"text\":1}");
        Cli.Cli.AssertFails(["verify-output", t.File("junk.json"), "--trust", t.File("device.pub.pem")], "not a signed output");
    }
}
