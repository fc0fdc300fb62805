using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Minnow.Loading;
using Minnow.Sealing;
using Minnow.Tests.Cli;
using Minnow.Tests.Serving;
using CliHarnessAlias = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Sealing;

/// <summary>
/// <c>minnow serve</c> as a real process serving a sealed package, with <c>--update-source</c> pointing at a real
/// HTTPS server (a CA the test makes, given as <c>--update-ca</c>) and <c>--sign-outputs</c>: while clients keep
/// sending requests, a newer package is pulled and put in service, a tampered one, one claiming a higher version
/// than it holds and a replayed older index are refused with the running model kept, and no request fails. Every
/// response is signed; <c>minnow verify-output</c> accepts one and refuses it with one character or the digest changed.
/// </summary>
public sealed class ServeUpdatesTests
{
    private static string DefaultModel => Path.Combine(SharedData.RepositoryRoot, "models", "default");

    [Fact]
    public async Task ServeUpdateSource_ActivatesUnderLoad_RefusesTamperedOlderAndReplayed_SignsEveryOutput()
    {
        using var t = new TempFolder();
        using var publisher = SigningKey.Generate();
        SigningKey.WritePublic(publisher, t.File("publisher.pub.pem"));
        using var packageKey = PackageKey.Generate();
        packageKey.WriteFile(t.File("package.key"));
        using var device = SigningKey.Generate();
        SigningKey.WritePrivate(device, t.File("device.sign.pem"));
        SigningKey.WritePublic(device, t.File("device.pub.pem"));

        var future = DateTimeOffset.UtcNow.AddDays(30);
        var digests = new Dictionary<long, string>();
        using (var files = LoadedModel.FilesToSeal(DefaultModel))
        {
            foreach (long v in new long[] { 1, 2, 3 })
            {
                SealedPackage.Seal(files, t.File($"v{v}.mpkg"), packageKey, publisher, new SealOptions { Version = v, Expires = future });
                digests[v] = SealedPackage.Verify(t.File($"v{v}.mpkg"), null).Digest;
            }
        }

        // A byte flipped inside the first encrypted chunk: the index lists it with its own SHA-256, so only
        // opening it (the chunk's tag) can tell.
        byte[] tampered = File.ReadAllBytes(t.File("v3.mpkg"));
        tampered[4096] ^= 0x20;
        File.WriteAllBytes(t.File("v3-tampered.mpkg"), tampered);

        var served = new ConcurrentDictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (string name in new[] { "v1.mpkg", "v2.mpkg", "v3.mpkg", "v3-tampered.mpkg" })
        {
            served[name] = File.ReadAllBytes(t.File(name));
        }

        void Offer(long serial, params (long Version, string File)[] entries) =>
            served["index.json"] = new UpdateIndex
            {
                Serial = serial,
                Expires = future,
                Entries = entries.Select(e => UpdateIndex.EntryFor("package", "model", e.Version, e.File, t.File(e.File))).ToList(),
            }.Sign(publisher);

        using var ca = TestHttps.MakeAuthority();
        File.WriteAllText(t.File("ca.pem"), ca.ExportCertificatePem());
        using var certificate = TestHttps.IssueServerCertificate(ca);
        await using var updateServer = TestHttps.StartServer(certificate, served);
        await updateServer.StartAsync();
        string address = updateServer.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single()
            .Replace("127.0.0.1", "localhost", StringComparison.Ordinal);
        Offer(1, (1, "v1.mpkg"));

        await using var server = await ServeProcess.StartAsync(
            t.File("v1.mpkg"), "--model-name", "model", "--key-file", t.File("package.key"), "--trust", t.File("publisher.pub.pem"),
            "--update-source", address + "/index.json", "--update-ca", t.File("ca.pem"), "--update-interval", "0.3",
            "--update-dir", t.File("updates"), "--sign-outputs", t.File("device.sign.pem"), "--max-queue", "64");
        using var http = new HttpClient { BaseAddress = new Uri(server.Url + "/"), Timeout = TimeSpan.FromSeconds(60) };
        Assert.Equal(1, await VersionInService(http));

        // Clients keep asking while updates arrive; every answer must be a whole, signed 200.
        using var stop = new CancellationTokenSource();
        var seenDigests = new ConcurrentDictionary<string, int>(StringComparer.Ordinal);
        var failures = new ConcurrentQueue<string>();
        int answered = 0;
        var clients = Enumerable.Range(0, 3).Select(c => Task.Run(async () =>
        {
            for (int i = 0; !stop.IsCancellationRequested; i++)
            {
                try
                {
                    var (status, body, response) = await Complete(http, $"Once upon a time {c} {i}", stream: false);
                    string? header = response.Headers.TryGetValues(SignedOutput.HeaderName, out var h) ? h.Single() : null;
                    if (status != HttpStatusCode.OK || header is null || body["signature"] is null)
                    {
                        failures.Enqueue($"{(int)status}: {body.ToJsonString()}");
                        continue;
                    }

                    seenDigests.AddOrUpdate((string)body["signature"]!["package_digest"]!, 1, (_, n) => n + 1);
                    Interlocked.Increment(ref answered);
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException)
                {
                    failures.Enqueue(e.Message);
                }
            }
        })).ToArray();

        await WaitFor(() => Volatile.Read(ref answered) >= 5, "requests to be answered on version 1");

        // 1. Version 2 is offered: pulled over HTTPS, verified, put in service under load.
        Offer(2, (2, "v2.mpkg"));
        await WaitFor(async () => await VersionInService(http) == 2, "version 2 to be in service");
        int beforeRefusals = Volatile.Read(ref answered);

        // 2. A tampered version 3 (listed with its own hash): it downloads, fails to open, version 2 keeps serving.
        Offer(3, (3, "v3-tampered.mpkg"));
        await WaitFor(() => server.Stderr.Contains("fails authentication", StringComparison.Ordinal), "the tampered package to be refused");
        Assert.Equal(2, await VersionInService(http));

        // 3. Version 1's package offered as version 3 (an older package under a newer label): refused.
        Offer(4, (3, "v1.mpkg"));
        await WaitFor(() => server.Stderr.Contains("is version 1", StringComparison.Ordinal), "the older package to be refused");
        Assert.Equal(2, await VersionInService(http));

        // 4. Only older versions offered: nothing changes. A replayed older index (serial 1): refused as a rollback.
        Offer(5, (1, "v1.mpkg"), (2, "v2.mpkg"));
        await Task.Delay(1000);
        Assert.Equal(2, await VersionInService(http));
        Offer(1, (3, "v3.mpkg"));
        await WaitFor(() => server.Stderr.Contains("rollback", StringComparison.Ordinal), "the replayed index to be refused");
        Assert.Equal(2, await VersionInService(http));
        Assert.True(Volatile.Read(ref answered) > beforeRefusals, "requests were answered while updates were refused");

        // 5. The good version 3: in service.
        Offer(6, (3, "v3.mpkg"));
        await WaitFor(async () => await VersionInService(http) == 3, "version 3 to be in service");
        int atThree = Volatile.Read(ref answered);
        await WaitFor(() => Volatile.Read(ref answered) >= atThree + 3, "requests to be answered on version 3");
        await stop.CancelAsync();
        await Task.WhenAll(clients);

        Assert.True(failures.IsEmpty, $"{failures.Count} failed requests, e.g. {failures.FirstOrDefault()}");
        Assert.Contains(digests[1], seenDigests.Keys);
        Assert.Contains(digests[2], seenDigests.Keys);
        Assert.Contains(digests[3], seenDigests.Keys);
        Assert.Equal(3, seenDigests.Count);

        // Signed outputs, checked with the command line as a user would.
        var (_, whole, _) = await Complete(http, "The little fox", stream: false);
        string text = (string)whole["choices"]![0]!["text"]!;
        Assert.Equal(text, (string)whole["signature"]!["output"]!);
        File.WriteAllText(t.File("response.json"), whole.ToJsonString());
        var ok = CliHarnessAlias.Run("verify-output", t.File("response.json"), "--trust", t.File("device.pub.pem"), "--package-digest", digests[3]);
        Assert.True(ok.ExitCode == 0, ok.ToString());
        Assert.Contains("OK: signed by", ok.Stdout);

        var changedText = JsonNode.Parse(whole.ToJsonString())!;
        string output = (string)changedText["signature"]!["output"]!;
        changedText["signature"]!["output"] = (output.Length > 0 && output[0] == 'x' ? "y" : "x") + output[1..];
        File.WriteAllText(t.File("changed.json"), changedText.ToJsonString());
        CliHarnessAlias.AssertFails(["verify-output", t.File("changed.json"), "--trust", t.File("device.pub.pem")], "does not verify");

        var changedDigest = JsonNode.Parse(whole.ToJsonString())!;
        changedDigest["signature"]!["package_digest"] = digests[2];
        File.WriteAllText(t.File("digest.json"), changedDigest.ToJsonString());
        CliHarnessAlias.AssertFails(["verify-output", t.File("digest.json"), "--trust", t.File("device.pub.pem")], "does not verify");
        CliHarnessAlias.AssertFails(["verify-output", t.File("response.json"), "--trust", t.File("device.pub.pem"), "--package-digest", digests[2]], "not " + digests[2]);

        // A stream is signed by its last event before [DONE], over the text it streamed.
        string streamed = await StreamSigned(http, t.File("stream-signature.json"));
        var fromStream = SignedOutput.Parse(File.ReadAllText(t.File("stream-signature.json")), "stream");
        Assert.Equal(streamed, fromStream.Output);
        Assert.Equal(digests[3], fromStream.PackageDigest);
        var streamOk = CliHarnessAlias.Run("verify-output", t.File("stream-signature.json"), "--trust", t.File("device.pub.pem"));
        Assert.True(streamOk.ExitCode == 0, streamOk.ToString());

        Assert.Equal(0, await server.StopAsync());
        Assert.Empty(Directory.GetFiles(t.File("updates"), "*.part"));
    }

    private static object Request(string prompt, bool stream) => new { model = "model", prompt, max_tokens = 8, temperature = 0, ignore_eos = true, stream };

    private static async Task<(HttpStatusCode Status, JsonNode Body, HttpResponseMessage Response)> Complete(HttpClient http, string prompt, bool stream)
    {
        var response = await http.PostAsync("v1/completions", new StringContent(System.Text.Json.JsonSerializer.Serialize(Request(prompt, stream)), Encoding.UTF8, "application/json"));
        return (response.StatusCode, JsonNode.Parse(await response.Content.ReadAsStringAsync())!, response);
    }

    /// <summary>Streams a completion; writes its signature event to <paramref name="path"/> and returns the streamed text.</summary>
    private static async Task<string> StreamSigned(HttpClient http, string path)
    {
        var response = await http.PostAsync("v1/completions", new StringContent(System.Text.Json.JsonSerializer.Serialize(Request("A long way home", stream: true)), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e.Trim()).ToList();
        Assert.Equal("data: [DONE]", events[^1]);
        var signature = JsonNode.Parse(events[^2]["data: ".Length..])!;
        Assert.NotNull(signature["signature"]);
        File.WriteAllText(path, signature.ToJsonString());
        return string.Concat(events[..^2].Select(e => JsonNode.Parse(e["data: ".Length..])!["choices"]?.AsArray().FirstOrDefault()?["text"]?.GetValue<string>() ?? ""));
    }

    private static async Task<long> VersionInService(HttpClient http) =>
        (long)JsonNode.Parse(await http.GetStringAsync("health"))!["model_version"]!;

    private static Task WaitFor(Func<bool> condition, string what) => WaitFor(() => Task.FromResult(condition()), what);

    private static async Task WaitFor(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            await Task.Delay(100);
        }
    }
}
