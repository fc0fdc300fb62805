namespace Minnow;

/// <summary>
/// An error caused by the user's input (a bad file, a wrong option, an unsupported model). The command line
/// prints its message as one line and exits non-zero, without a stack trace.
/// </summary>
public class MinnowException : Exception
{
    public MinnowException(string message) : base(message) { }

    public MinnowException(string message, Exception inner) : base(message, inner) { }
}
