"""One exception type for every user-facing error: a one-line message naming the problem and the fix."""


class AtlasError(Exception):
    """An error caused by the user's input or environment, shown as one line, exit code 2."""
