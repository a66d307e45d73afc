"""The `cli` fixture lives in tests/conftest.py; re-exported here for modules that import it from this path."""

from tests.conftest import cli  # noqa: F401
