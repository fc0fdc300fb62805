using System.CommandLine;
using System.Globalization;
using Minnow.Serving;
using static Minnow.Cli.Commands.CommandSupport;

namespace Minnow.Cli.Commands;

/// <summary><c>minnow loadtest URL</c>: N concurrent streaming clients against an OpenAI-compatible server, for T seconds or R requests.</summary>
internal static class LoadtestCommand
{
    public static Command Create()
    {
        var url = new Argument<string>("url") { Description = "The server's address, e.g. http://127.0.0.1:8080." };
        var concurrency = new Option<int>("--concurrency") { Description = "Clients streaming at once.", DefaultValueFactory = _ => 1 };
        var duration = new Option<double?>("--duration", "-d") { Description = "Seconds to keep starting requests." };
        var requests = new Option<int?>("--requests") { Description = "Requests to send in all." };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "Tokens each request generates.", DefaultValueFactory = _ => 32 };
        var prompt = new Option<string>("--prompt", "-p") { Description = "The prompt every request sends.", DefaultValueFactory = _ => "In the beginning" };
        var modelName = new Option<string?>("--model") { Description = "The model to ask for (default: the first the server lists)." };
        var apiKey = new Option<string?>("--api-key") { Description = "Sent as 'Authorization: Bearer KEY'." };
        var json = JsonOption();
        var command = new Command("loadtest", "Measure a server under load: requests/s, output tokens/s, time to first token and inter-token latency.")
        {
            url, concurrency, duration, requests, maxTokens, prompt, modelName, apiKey, json,
        };

        command.SetAction(async (r, ct) =>
        {
            string address = r.GetValue(url)!;
            if (!Uri.TryCreate(address.EndsWith('/') ? address : address + "/", UriKind.Absolute, out var uri))
            {
                throw new MinnowException($"'{address}' is not a URL such as http://127.0.0.1:8080.");
            }

            double? seconds = r.GetValue(duration);
            var options = new LoadTestOptions
            {
                Url = uri,
                Concurrency = r.GetValue(concurrency),
                Duration = seconds is { } s ? TimeSpan.FromSeconds(s) : null,
                Requests = r.GetValue(requests),
                MaxTokens = r.GetValue(maxTokens),
                Prompt = r.GetValue(prompt)!,
                Model = r.GetValue(modelName),
                ApiKey = r.GetValue(apiKey),
            };
            options.Validate();
            var err = Err(r);
            err.WriteLine($"loadtest: {options.Concurrency} streaming clients, " +
                (options.Requests is { } n ? $"{n} requests" : "") + (options.Requests is not null && seconds is not null ? " or " : "") +
                (seconds is { } d ? $"{d.ToString(CultureInfo.InvariantCulture)} s" : "") + $", {options.MaxTokens} tokens each...");
            var result = await LoadTester.RunAsync(options, null, ct);
            ct.ThrowIfCancellationRequested();
            var output = Out(r);
            if (r.GetValue(json))
            {
                WriteJson(output, w =>
                {
                    w.WriteString("url", uri.ToString());
                    w.WriteString("model", result.Model);
                    w.WriteNumber("concurrency", result.Concurrency);
                    w.WriteNumber("completed", result.Completed);
                    w.WriteNumber("rejected_429", result.Rejected);
                    w.WriteNumber("errors", result.Errors);
                    w.WriteStartArray("error_samples");
                    foreach (string e in result.ErrorSamples)
                    {
                        w.WriteStringValue(e);
                    }

                    w.WriteEndArray();
                    w.Number("seconds", result.Seconds);
                    w.WriteNumber("prompt_tokens", result.PromptTokens);
                    w.WriteNumber("output_tokens", result.OutputTokens);
                    w.Number("requests_per_second", result.RequestsPerSecond);
                    w.Number("output_tokens_per_second", result.OutputTokensPerSecond);
                    w.Number("ttft_ms_p50", result.TtftP50);
                    w.Number("ttft_ms_p99", result.TtftP99);
                    w.Number("inter_token_ms_p50", result.InterTokenP50);
                    w.Number("inter_token_ms_p99", result.InterTokenP99);
                    w.Number("e2e_ms_p50", result.EndToEndP50);
                    w.Number("e2e_ms_p99", result.EndToEndP99);
                });
            }
            else
            {
                string F(double v, string format = "0.0") => v.ToString(format, CultureInfo.InvariantCulture);
                output.WriteLine($"model {result.Model}, {result.Concurrency} concurrent streams, {F(result.Seconds, "0.00")} s");
                output.WriteLine($"  requests        {result.Completed} completed, {result.Rejected} rejected (429), {result.Errors} errors");
                output.WriteLine($"  throughput      {F(result.RequestsPerSecond, "0.00")} requests/s, {F(result.OutputTokensPerSecond)} output tokens/s");
                output.WriteLine($"  time to first   p50 {F(result.TtftP50)} ms, p99 {F(result.TtftP99)} ms");
                output.WriteLine($"  inter-token     p50 {F(result.InterTokenP50)} ms, p99 {F(result.InterTokenP99)} ms");
                output.WriteLine($"  end to end      p50 {F(result.EndToEndP50)} ms, p99 {F(result.EndToEndP99)} ms");
                foreach (string e in result.ErrorSamples)
                {
                    output.WriteLine($"  error: {e}");
                }
            }

            return result.Errors > 0 ? MinnowCli.ExitError : MinnowCli.ExitOk;
        });
        return command;
    }
}
