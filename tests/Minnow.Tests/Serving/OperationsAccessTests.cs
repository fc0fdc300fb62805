using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Minnow.Loading;
using Minnow.Models;
using Minnow.Sealing;
using Minnow.Server;
using Minnow.Serving;
using Minnow.Tests.Cli;
using Xunit.Abstractions;
using CliHarness = Minnow.Tests.Cli.Cli;

namespace Minnow.Tests.Serving;

/// <summary>
/// Operating a server that has an API key and a package key: a finetuned adapter sealed by <c>minnow seal</c> and
/// loaded at run time from the package (decrypted in memory), <c>/v1/models/BASE:NAME</c>, and the dashboard in
/// headless chromium, served without the key but showing data only once the key is given.
/// </summary>
[Collection("server")]
public sealed class OperationsAccessTests(TrainedAdaptersFixture adapters, ITestOutputHelper output) : IClassFixture<TrainedAdaptersFixture>
{
    private const string ApiKey = "dashboard-test-key";

    private static object Completion(string model) => new { model, prompt = "Day 12. Wind", max_tokens = 12, temperature = 0, ignore_eos = true };

    private static async Task<string> Text(HttpClient http, string model)
    {
        var response = await http.PostAsync("v1/completions", ServerHarness.Json(Completion(model)));
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        return (string)JsonNode.Parse(body)!["choices"]![0]!["text"]!;
    }

    [Fact]
    public async Task AFinetunedAdapter_SealedByMinnowSeal_IsLoadedIntoARunningServerFromThePackage_AndServesTheNextRequest()
    {
        using var temp = new TempFolder();
        var keygen = CliHarness.Run("keygen", "--out", temp.File("k"), "--json");
        Assert.True(keygen.ExitCode == 0, keygen.ToString());
        string package = temp.File("ships-log.mpkg");
        var seal = CliHarness.Run("seal", adapters.ShipsLog, "--out", package, "--key-file", temp.File("k.key"), "--sign-key", temp.File("k.sign.pem"), "--json");
        Assert.True(seal.ExitCode == 0, seal.ToString());
        long adapterBytes = new FileInfo(Path.Combine(adapters.ShipsLog, LoraConfig.WeightsFile)).Length;
        output.WriteLine($"adapter {adapterBytes:N0} bytes; package {new FileInfo(package).Length:N0} bytes");
        Assert.True(adapterBytes < 2 << 20);

        // Sealed means encrypted: neither the config's text nor the tensor names are in the package.
        string raw = Encoding.Latin1.GetString(File.ReadAllBytes(package));
        Assert.DoesNotContain("peft_type", raw);
        Assert.DoesNotContain("lora_A", raw);

        // Without the key the package is refused with one line.
        var registry = new AdapterRegistry(ModelConfig.FromHuggingFace(Path.Combine(ServerHarness.ModelPath, "config.json")), 64L << 20);
        var refused = Assert.Throws<MinnowException>(() => registry.Load("x", package));
        Assert.Contains("key", refused.Message);

        using var key = PackageKey.FromFile(temp.File("k.key"));
        using var signer = SigningKey.LoadPublic(temp.File("k.pub.pem"));
        await using var server = await AdapterServingTests.StartServer(new ServerOptions
        {
            ModelPath = ServerHarness.ModelPath,
            Port = 0,
            MaxBatch = 4,
            KvBudgetBytes = 32L << 20,
            ApiKey = ApiKey,
            Packages = new PackageAccess(key, new PackagePolicy { TrustedSigners = [signer] }),
        });
        using var http = ServerHarness.Http(server, ApiKey);
        string baseId = server.ModelId;
        string plain = await Text(http, baseId);

        var load = await http.PostAsync("v1/adapters", ServerHarness.Json(new { name = "sealed", package }));
        string loaded = await load.Content.ReadAsStringAsync();
        output.WriteLine(loaded);
        Assert.True(load.StatusCode == HttpStatusCode.OK, loaded);
        Assert.Equal(package, (string?)JsonNode.Parse(loaded)!["path"]);
        string fromPackage = await Text(http, $"{baseId}:sealed");

        // The same adapter from its folder gives the same tokens; the base gives others.
        Assert.Equal(HttpStatusCode.OK, (await http.PostAsync("v1/adapters", ServerHarness.Json(new { name = "folder", path = adapters.ShipsLog }))).StatusCode);
        string fromFolder = await Text(http, $"{baseId}:folder");
        output.WriteLine($"base: {plain}\nsealed adapter: {fromPackage}\nfolder adapter: {fromFolder}");
        Assert.Equal(fromFolder, fromPackage);
        Assert.NotEqual(plain, fromPackage);

        // GET /v1/models/{id} knows BASE:NAME.
        var model = JsonNode.Parse(await http.GetStringAsync($"v1/models/{baseId}:sealed"))!;
        Assert.Equal($"{baseId}:sealed", (string?)model["id"]);
        Assert.Equal(baseId, (string?)model["parent"]);
        var missing = await http.GetAsync($"v1/models/{baseId}:nothing");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Contains("BASE:NAME".Replace("BASE", baseId, StringComparison.Ordinal), await missing.Content.ReadAsStringAsync());

        // A package sealed with another key is refused as a 400 with one line, and nothing is loaded.
        string otherKey = temp.File("other");
        Assert.Equal(0, CliHarness.Run("keygen", "--out", otherKey).ExitCode);
        string other = temp.File("other.mpkg");
        Assert.Equal(0, CliHarness.Run("seal", adapters.ShipsLog, "--out", other, "--key-file", otherKey + ".key", "--sign-key", temp.File("k.sign.pem")).ExitCode);
        var wrong = await http.PostAsync("v1/adapters", ServerHarness.Json(new { name = "wrong", package = other }));
        string wrongBody = await wrong.Content.ReadAsStringAsync();
        output.WriteLine(wrongBody);
        Assert.Equal(HttpStatusCode.BadRequest, wrong.StatusCode);
        Assert.DoesNotContain("wrong", JsonNode.Parse(await http.GetStringAsync("v1/adapters"))!["data"]!.AsArray().Select(a => (string?)a!["name"]));
    }

    [Fact]
    public async Task WithAnApiKey_TheDashboardPageIsServed_ButShowsDataInChromiumOnlyOnceTheKeyIsGiven()
    {
        using var temp = new TempFolder();
        await using var server = await AdapterServingTests.StartServer(new ServerOptions
        {
            ModelPath = ServerHarness.ModelPath,
            Port = 0,
            MaxBatch = 4,
            KvBudgetBytes = 32L << 20,
            ApiKey = ApiKey,
            Adapters = new Dictionary<string, string> { ["ships"] = adapters.ShipsLog },
            Variants = new Dictionary<string, string> { ["stable"] = ServerHarness.ModelPath, ["canary"] = "adapter:" + adapters.Reversed },
            CanaryPercent = 30,
        });
        using var anonymous = ServerHarness.Http(server);
        var page = await anonymous.GetAsync("dashboard");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        string html = await page.Content.ReadAsStringAsync();
        Assert.DoesNotContain("data-variant=\"canary\"", html);
        Assert.DoesNotContain("ships", html);
        foreach (string path in new[] { "admin/rollout", "v1/adapters", "v1/models" })
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync(path)).StatusCode);
        }

        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsync("admin/rollout/promote", null)).StatusCode);

        if (RolloutDashboardTests.DumpDom(server.Url + "/dashboard", temp) is not { } locked)
        {
            return;
        }

        Assert.Contains("This server needs its API key.", locked);
        Assert.Contains("id=\"auth\" style=\"display: block;\"", locked);
        Assert.DoesNotContain("data-variant=\"canary\"", locked);
        Assert.DoesNotContain("ships", locked);

        string wrong = RolloutDashboardTests.DumpDom(server.Url + "/dashboard#key=not-the-key", temp)!;
        Assert.Contains("The API key was not accepted", wrong);
        Assert.DoesNotContain("data-variant=\"canary\"", wrong);

        string open = RolloutDashboardTests.DumpDom(server.Url + "/dashboard#key=" + ApiKey, temp)!;
        output.WriteLine(open);
        Assert.Contains("id=\"auth\" style=\"display: none;\"", open);
        Assert.Contains("phase <b>fixed</b>", open);
        Assert.Contains("<tr data-variant=\"canary\">", open);
        Assert.Contains("<td class=\"weight\">30.00</td>", open);
        Assert.Contains($"{server.ModelId}:ships", open);
        Assert.Contains(adapters.Reversed, open); // what serves the canary
        Assert.DoesNotContain(ApiKey, open); // the key left the address bar and is not written into the page
    }
}
