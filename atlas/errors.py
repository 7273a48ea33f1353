"""One exception type for every user-facing error: a one-line message naming the problem and the fix."""


class AtlasError(Exception):
    """An error caused by the user's input or environment, shown as one line, exit code 2."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
