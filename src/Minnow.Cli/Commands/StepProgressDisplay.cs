using Spectre.Console;

namespace Minnow.Cli.Commands;

/// <summary>
/// How the step-by-step commands (finetune, qat) show progress on stderr: a Spectre.Console bar on a terminal,
/// otherwise plain lines every 15 s, at each new phase and at the last step.
/// </summary>
internal static class StepProgressDisplay
{
    /// <param name="run">Runs the work, reporting progress through the given callback.</param>
    /// <param name="position">A report's phase, step and total steps.</param>
    public static TSummary Run<TSummary, TProgress>(bool terminal, TextWriter err, int steps, Func<Action<TProgress>, TSummary> run,
        Func<TProgress, string> describe, Func<TProgress, (string Phase, int Step, int TotalSteps)> position, Func<TSummary, bool> cancelled)
        where TSummary : class
    {
        if (!terminal)
        {
            var last = DateTime.MinValue;
            string? lastPhase = null;
            return run(p =>
            {
                var (phase, step, total) = position(p);
                bool phaseChanged = phase != lastPhase;
                lastPhase = phase;
                if (phaseChanged || DateTime.UtcNow - last > TimeSpan.FromSeconds(15) || step == total)
                {
                    last = DateTime.UtcNow;
                    err.WriteLine(describe(p));
                }
            });
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        TSummary? summary = null;
        console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask("loading the model and the text", maxValue: Math.Max(1, steps));
                summary = run(p =>
                {
                    task.Value = position(p).Step;
                    task.Description = Markup.Escape(describe(p));
                });
                if (!cancelled(summary))
                {
                    task.Value = task.MaxValue;
                }
            });
        return summary!;
    }
}
