namespace Minnow;

/// <summary>
/// An error caused by the user's input (a bad file, a wrong option, an unsupported model). The command line
/// prints its message as one line and exits non-zero, without a stack trace. Messages often quote names read from
/// the file (tensor names, metadata keys), which a damaged file can fill with anything: control characters and
/// undecodable bytes are escaped here, and an overlong message is cut, so the line stays printable.
/// </summary>
public class MinnowException : Exception
{
    /// <summary>Longest message kept (a quoted name from a damaged file can be megabytes long).</summary>
    public const int MaxMessageLength = 1000;

    public MinnowException(string message) : base(Formats.SafeText.Message(message)) { }

    public MinnowException(string message, Exception inner) : base(Formats.SafeText.Message(message), inner) { }
}
