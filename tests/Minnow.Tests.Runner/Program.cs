using System.Diagnostics;
using System.Reflection;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Minnow.Tests.Runner;

/// <summary>
/// Runs the tests of Minnow.Tests whose full name (namespace, class, method) starts with one of the given prefixes, in-process,
/// through xunit's own discoverer and executor (the same engine <c>dotnet test</c> drives). Prints each failure
/// and ends with "N passed, N failed, N skipped"; exits 1 when anything failed or nothing ran.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length == 0 || args.Any(a => a is "-h" or "--help"))
        {
            Console.Error.WriteLine("usage: Minnow.Tests.Runner NAME-PREFIX... (e.g. Minnow.Tests.Kernels. Minnow.Tests.Models.GoldenModelTests.Golden_Reproduces)");
            return 2;
        }

        var prefixes = args;
        var assembly = typeof(SharedData).Assembly;
        var clock = Stopwatch.StartNew();
        var diagnostics = new NullSink();
        using var framework = new XunitTestFramework(diagnostics);

        var discovery = new DiscoverySink();
        using (var discoverer = framework.GetDiscoverer(Reflector.Wrap(assembly)))
        {
            discoverer.Find(includeSourceInformation: false, discovery, new Options());
            discovery.Finished.WaitOne();
        }

        var selected = discovery.TestCases
            .Where(c => prefixes.Any(p => $"{c.TestMethod.TestClass.Class.Name}.{c.TestMethod.Method.Name}".StartsWith(p, StringComparison.Ordinal)))
            .ToList();
        Console.WriteLine($"{selected.Count} of {discovery.TestCases.Count} test cases selected ({System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture}, {Instructions()}, kernels {Minnow.Kernels.KernelIsa.Describe()})");

        var execution = new ExecutionSink();
        if (selected.Count > 0)
        {
            using var executor = framework.GetExecutor(assembly.GetName());
            executor.RunTests(selected, execution, new Options());
            execution.Finished.WaitOne();
        }

        Console.WriteLine($"time {clock.Elapsed.TotalSeconds:F1} s");
        Console.WriteLine($"{execution.Passed} passed, {execution.Failed} failed, {execution.Skipped} skipped");
        return execution.Failed > 0 || execution.Passed == 0 ? 1 : 0;
    }

    /// <summary>The instruction sets the kernels choose between, as the runtime reports them.</summary>
    private static string Instructions() => System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture switch
    {
        System.Runtime.InteropServices.Architecture.Arm64 =>
            $"AdvSimd {System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported}, SDOT {System.Runtime.Intrinsics.Arm.Dp.IsSupported}",
        _ => $"AVX-512 {System.Runtime.Intrinsics.X86.Avx512F.IsSupported}, AVX-VNNI {System.Runtime.Intrinsics.X86.AvxVnni.IsSupported}, " +
            $"AVX2 {System.Runtime.Intrinsics.X86.Avx2.IsSupported}, FMA {System.Runtime.Intrinsics.X86.Fma.IsSupported}, SSSE3 {System.Runtime.Intrinsics.X86.Ssse3.IsSupported}",
    };

    private sealed class NullSink : LongLivedMarshalByRefObject, IMessageSink
    {
        public bool OnMessage(IMessageSinkMessage message) => true;
    }

    private sealed class DiscoverySink : LongLivedMarshalByRefObject, IMessageSink
    {
        public List<ITestCase> TestCases { get; } = [];

        public ManualResetEvent Finished { get; } = new(false);

        public bool OnMessage(IMessageSinkMessage message)
        {
            switch (message)
            {
                case ITestCaseDiscoveryMessage found:
                    TestCases.Add(found.TestCase);
                    break;
                case IDiscoveryCompleteMessage:
                    Finished.Set();
                    break;
            }

            return true;
        }
    }

    private sealed class ExecutionSink : LongLivedMarshalByRefObject, IMessageSink
    {
        private const decimal SlowSeconds = 5;

        private int _passed, _failed, _skipped;

        public int Passed => _passed;

        public int Failed => _failed;

        public int Skipped => _skipped;

        public ManualResetEvent Finished { get; } = new(false);

        public bool OnMessage(IMessageSinkMessage message)
        {
            switch (message)
            {
                case ITestPassed passed:
                    Interlocked.Increment(ref _passed);
                    if (passed.ExecutionTime >= SlowSeconds)
                    {
                        Console.WriteLine($"slow {passed.ExecutionTime:F1} s {passed.Test.DisplayName}");
                    }

                    break;
                case ITestFailed failed:
                    Interlocked.Increment(ref _failed);
                    lock (this)
                    {
                        Console.WriteLine($"FAILED {failed.Test.DisplayName}");
                        for (int i = 0; i < failed.Messages.Length; i++)
                        {
                            Console.WriteLine($"  {failed.ExceptionTypes[i]}: {failed.Messages[i]}");
                            Console.WriteLine($"  {failed.StackTraces[i]}");
                        }
                    }

                    break;
                case ITestSkipped:
                    Interlocked.Increment(ref _skipped);
                    break;
                case ITestAssemblyCleanupFailure or ITestCollectionCleanupFailure or ITestClassCleanupFailure or ITestCaseCleanupFailure or IErrorMessage:
                    Interlocked.Increment(ref _failed);
                    Console.WriteLine($"ERROR {message.GetType().Name}: {string.Join(" | ", ((IFailureInformation)message).Messages)}");
                    break;
                case ITestAssemblyFinished:
                    Finished.Set();
                    break;
            }

            return true;
        }
    }

    /// <summary>xunit's defaults (every option unset) for discovery and execution.</summary>
    private sealed class Options : ITestFrameworkDiscoveryOptions, ITestFrameworkExecutionOptions
    {
        private readonly Dictionary<string, object?> _values = [];

        public TValue GetValue<TValue>(string name) =>
            _values.TryGetValue(name, out var value) && value is TValue typed ? typed : default!;

        public void SetValue<TValue>(string name, TValue value) => _values[name] = value;
    }
}
