"""The one exception type that tools turn into a one-line message and a non-zero exit."""


class LumbarError(Exception):
    """A user-facing problem with input, configuration or environment.

    The message is one line that names the offending file (or key) and says how to fix it.
    Tools catch it, print ``error: <message>`` and exit with status 2; no traceback.
    """


def one_line(error: BaseException, with_type: bool = False) -> str:
    """An exception's message on one line (whitespace collapsed, outer quotes dropped).

    Args:
        with_type: prefix the exception's type, ``"ValueError: ..."`` (for messages from
            third-party readers, whose text alone can be cryptic).
    """
    text = " ".join(str(error).split()).strip("'\"")
    if not with_type:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
