using Spectre.Console;

namespace Minnow.Cli.Commands;

/// <summary>One progress bar per phase on stderr when it is a terminal; otherwise one line per phase.</summary>
internal static class ProgressPhases
{
    public static void Run(bool bar, TextWriter err, Action<Func<string, IProgress<(int Done, int Total)>>> body)
    {
        if (!bar)
        {
            body(name =>
            {
                err.WriteLine(name + "...");
                return new Inline(_ => { });
            });
            return;
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                ProgressTask? previous = null;
                body(name =>
                {
                    if (previous is not null)
                    {
                        previous.Value = previous.MaxValue;
                        previous.StopTask();
                    }

                    var task = context.AddTask(Markup.Escape(name));
                    previous = task;
                    return new Inline(p =>
                    {
                        task.MaxValue = Math.Max(1, p.Total);
                        task.Value = p.Done;
                    });
                });
            });
    }

    /// <summary>Reports on the calling thread (System.Progress would post to the thread pool).</summary>
    private sealed class Inline(Action<(int Done, int Total)> report) : IProgress<(int Done, int Total)>
    {
        public void Report((int Done, int Total) value) => report(value);
    }
}
