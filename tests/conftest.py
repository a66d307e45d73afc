import pytest

from tests.httpserver import LocalServer


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 (see tests/httpserver.py)."""
    srv = LocalServer().start()
    yield srv
    srv.stop()
