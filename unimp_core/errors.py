"""The one exception type the CLI turns into a one-line message and exit code 1."""


class UnimpError(Exception):
    """An expected failure (bad input, missing file, ...) with a message meant for the user."""
