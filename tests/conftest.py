import os

import pytest

from tests.httpserver import LocalServer


def skip_unless_ci(reason: str) -> None:
    """Skip a test whose optional system part (WordNet, Chromium, ...) is missing, except under CI.

    With the environment variable CI set the test fails instead, so CI never passes with it skipped:
    .ci/run installs every such part.
    """
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 (see tests/httpserver.py)."""
    srv = LocalServer().start()
    yield srv
    srv.stop()
