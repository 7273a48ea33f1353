"""One exception type for every user-facing error: a one-line message naming the problem and the fix."""


class AtlasError(Exception):
    """An error caused by the user's input or environment, shown as one line, exit code 2."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


class NotFound(AtlasError):
    """A named model, task, set, run or neuron is not in the atlas."""


class Ambiguous(AtlasError):
    """A name matches several stored things; the message lists them."""


class Unavailable(AtlasError):
    """The database is missing, busy, at another schema, or not an atlas database."""


class Busy(AtlasError):
    """A bounded resource (a served model's generation slot) is in use; retry shortly."""


class NotEnabled(NotFound):
    """A feature this server was started without (live models): not found here, and how to
    enable it."""
