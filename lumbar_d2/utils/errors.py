"""The one exception type that tools turn into a one-line message and a non-zero exit."""


class LumbarError(Exception):
    """A user-facing problem with input, configuration or environment.

    The message is one line that names the offending file (or key) and says how to fix it.
    Tools catch it, print ``error: <message>`` and exit with status 2; no traceback.
    """


def one_line(error: BaseException) -> str:
    """An exception's message on one line (whitespace collapsed, outer quotes dropped)."""
    return " ".join(str(error).split()).strip("'\"")
