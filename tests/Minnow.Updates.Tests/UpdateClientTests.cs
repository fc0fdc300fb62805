using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Minnow.Benchmarking;
using Minnow.Loading;
using Minnow.Sealing;
using Minnow.Tests.Cli;

namespace Minnow.Tests.Sealing;

/// <summary>
/// The update client against a real HTTPS server (Kestrel on loopback) whose certificate a test-made certificate
/// authority issued; the client's HttpClient trusts only that authority.
/// </summary>
public sealed class UpdateClientTests
{
    [Fact]
    public async Task UpdatesArePulledOverHttpsActivatedUnderLoadAndRollbackFreezeAndTamperingRefused()
    {
        using var t = new TempFolder();
        using var publisher = SigningKey.Generate();
        using var packageKey = PackageKey.Generate();
        string folder = SealTestModels.Write(Path.Combine(t.Path, "model"), seed: 4242);
        var policy = new PackagePolicy { TrustedSigners = [publisher] };
        var future = DateTimeOffset.UtcNow.AddDays(30);
        foreach (long v in new long[] { 1, 2, 3 })
        {
            SealTestModels.Seal(folder, t.File($"v{v}.mpkg"), packageKey, publisher, new SealOptions { Version = v, Expires = future });
        }

        byte[] tampered = File.ReadAllBytes(t.File("v3.mpkg"));
        tampered[200] ^= 1;
        File.WriteAllBytes(t.File("v3-tampered.mpkg"), tampered);

        var files = new ConcurrentDictionary<string, byte[]>(StringComparer.Ordinal);
        foreach (string name in new[] { "v1.mpkg", "v2.mpkg", "v3.mpkg", "v3-tampered.mpkg" })
        {
            files[name] = File.ReadAllBytes(t.File(name));
        }

        void Serve(long serial, DateTimeOffset expires, ECDsa signer, params (long Version, string File, string? SignedAs)[] entries) =>
            files["index.json"] = new UpdateIndex
            {
                Serial = serial,
                Expires = expires,
                Entries = entries.Select(e => UpdateIndex.EntryFor("package", "model", e.Version, e.File, t.File(e.SignedAs ?? e.File))).ToList(),
            }.Sign(signer);

        using var ca = TestHttps.MakeAuthority();
        using var serverCertificate = TestHttps.IssueServerCertificate(ca);
        await using var app = TestHttps.StartServer(serverCertificate, files);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        var indexUri = new Uri(address.Replace("127.0.0.1", "localhost", StringComparison.Ordinal) + "/index.json");
        Assert.Equal("https", indexUri.Scheme);

        // A client that does not trust the test authority cannot even connect: the TLS is real.
        using (var untrusting = new HttpClient())
        {
            await Assert.ThrowsAsync<HttpRequestException>(() => untrusting.GetAsync(indexUri));
        }

        using var http = new HttpClient(TestHttps.TrustOnly(ca));
        string state = t.File("state.json");
        var client = new UpdateClient(http, indexUri, [publisher], t.File("downloads"), state);

        using var slot = new ActiveSlot<LoadedModel>(LoadedModel.Open(SealedPackage.Open(t.File("v1.mpkg"), packageKey, policy)), 1);

        // Requests keep running against whatever is in service while updates arrive and activate.
        using var stop = new CancellationTokenSource();
        int served = 0, failed = 0;
        var load = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    using var lease = slot.Acquire();
                    var logits = MinnowEngine.AllLogits(lease.Item.Model, [1, 2, 3]);
                    if (logits.Length != 3 * SealTestModels.Tiny.VocabSize || !float.IsFinite(logits[0]))
                    {
                        Interlocked.Increment(ref failed);
                    }

                    Interlocked.Increment(ref served);
                }
                catch (Exception)
                {
                    Interlocked.Increment(ref failed);
                }
            }
        });

        // 1. Index 1 offers version 2: downloaded over HTTPS, verified, activated while requests run.
        Serve(1, future, publisher, (2, "v2.mpkg", null));
        var update = await client.CheckAsync("package", "model", slot.Version);
        Assert.NotNull(update);
        Assert.Equal(2, update.Package!.Manifest.Version);
        Assert.True(slot.Activate(() => LoadedModel.Open(SealedPackage.Open(update.Path, packageKey, policy with { MinimumVersion = 2 })), 2, out string? error), error);
        client.Accept(update);
        Assert.Equal(2, slot.Version);

        // 2. A failed activation (the device's key store hands out the wrong key) keeps version 2 serving.
        using (var wrongKey = PackageKey.Generate())
        {
            Serve(2, future, publisher, (3, "v3.mpkg", null));
            var v3 = await client.CheckAsync("package", "model", slot.Version);
            Assert.NotNull(v3);
            Assert.False(slot.Activate(() => LoadedModel.Open(SealedPackage.Open(v3.Path, wrongKey, policy)), 3, out error));
            Assert.Contains("wrong key", error);
            Assert.Equal(2, slot.Version);
        }

        // 3. An older version is never taken, even from a newer, correctly signed index.
        Serve(3, future, publisher, (1, "v1.mpkg", null), (2, "v2.mpkg", null));
        Assert.Null(await client.CheckAsync("package", "model", slot.Version));
        Assert.False(slot.Activate(() => throw new InvalidOperationException("must not load"), 1, out error));

        // 4. A tampered download (not the bytes the index signed) is refused.
        Serve(4, future, publisher, (3, "v3-tampered.mpkg", "v3.mpkg"));
        var e = await Assert.ThrowsAsync<MinnowException>(() => client.CheckAsync("package", "model", slot.Version));
        Assert.Contains("does not match the size and SHA-256", e.Message);

        // 5. A package changed inside an encrypted chunk, listed by the index itself: it downloads (only the key
        // can authenticate a chunk), its activation fails, and version 2 keeps serving.
        Serve(5, future, publisher, (3, "v3-tampered.mpkg", null));
        var changed = await client.CheckAsync("package", "model", slot.Version);
        Assert.NotNull(changed);
        Assert.False(slot.Activate(() => LoadedModel.Open(SealedPackage.Open(changed.Path, packageKey, policy)), 3, out error));
        Assert.Contains("was changed", error);
        Assert.Equal(2, slot.Version);

        // 6. Rollback of the index (an old serial replayed), a frozen (expired) index, an index signed by another key.
        Serve(1, future, publisher, (3, "v3.mpkg", null));
        e = await Assert.ThrowsAsync<MinnowException>(() => client.CheckAsync("package", "model", slot.Version));
        Assert.Contains("rollback", e.Message);
        Serve(9, DateTimeOffset.UtcNow.AddMinutes(-1), publisher, (3, "v3.mpkg", null));
        e = await Assert.ThrowsAsync<MinnowException>(() => client.CheckAsync("package", "model", slot.Version));
        Assert.Contains("expired", e.Message);
        using (var stranger = SigningKey.Generate())
        {
            Serve(10, future, stranger, (3, "v3.mpkg", null));
            e = await Assert.ThrowsAsync<MinnowException>(() => client.CheckAsync("package", "model", slot.Version));
            Assert.Contains("not signed by a trusted key", e.Message);
        }

        // 7. The state survives a restart: a new client refuses what the old one had accepted past.
        var restarted = new UpdateClient(http, indexUri, [publisher], t.File("downloads"), state);
        Assert.Equal(5, restarted.State.IndexSerial);
        Assert.Equal(2, restarted.State.VersionOf("package", "model"));
        Serve(4, future, publisher, (3, "v3.mpkg", null));
        await Assert.ThrowsAsync<MinnowException>(() => restarted.CheckAsync("package", "model"));

        // Version 3, properly served, activates.
        Serve(11, future, publisher, (3, "v3.mpkg", null));
        var good = await restarted.CheckAsync("package", "model", slot.Version);
        Assert.NotNull(good);
        Assert.True(slot.Activate(() => LoadedModel.Open(SealedPackage.Open(good.Path, packageKey, policy with { MinimumVersion = 3 })), 3, out error), error);
        restarted.Accept(good);

        await Task.Delay(200);
        stop.Cancel();
        await load;
        Assert.Equal(3, slot.Version);
        Assert.True(served > 0);
        Assert.Equal(0, failed);
        Assert.Empty(Directory.GetFiles(t.File("downloads"), "*.part"));
        await app.StopAsync();
    }
}
