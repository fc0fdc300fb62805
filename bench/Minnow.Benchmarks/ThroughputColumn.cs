using System.Globalization;
using System.Reflection;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Parameters;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace Minnow.Benchmarks;

/// <summary>
/// "GB/s": bytes streamed per operation divided by the mean time. A benchmark class opts in with
/// <c>public static long BytesPerOperation(ParameterInstances parameters)</c>.
/// </summary>
public sealed class ThroughputColumn : IColumn
{
    public string Id => nameof(ThroughputColumn);

    public string ColumnName => "GB/s";

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => 0;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => "Bytes streamed per operation / mean time (10^9 bytes per second)";

    public bool IsAvailable(Summary summary) => true;

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var method = benchmarkCase.Descriptor.Type.GetMethod("BytesPerOperation", BindingFlags.Public | BindingFlags.Static, [typeof(ParameterInstances)]);
        var statistics = summary[benchmarkCase]?.ResultStatistics;
        if (method == null || statistics == null || statistics.Mean <= 0)
        {
            return "-";
        }

        long bytes = (long)method.Invoke(null, [benchmarkCase.Parameters])!;
        return (bytes / statistics.Mean).ToString("0.00", CultureInfo.InvariantCulture); // bytes per ns = GB/s
    }

    public override string ToString() => ColumnName;
}
