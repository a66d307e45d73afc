"""The one exception type the CLI turns into a one-line message and exit code 1."""


class UnimpError(Exception):
    """An expected failure (bad input, missing file, ...) with a message meant for the user."""


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
