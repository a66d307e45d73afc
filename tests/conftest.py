import os
import shutil

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
def cli():
    """Invoke `unimp ARGS...` in-process, with the same argv rewriting as the console script."""
    from typer.testing import CliRunner

    from unimp_cli.app import app
    from unimp_cli.common import expand_multi

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, expand_multi([str(a) for a in args]))

    return invoke


@pytest.fixture
def server():
    """A local HTTP server on 127.0.0.1 (see tests/httpserver.py)."""
    srv = LocalServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def one_thread():
    """Tiny matrices: torch's intra-op threads only add overhead, and on a shared 2-core machine they
    oversubscribe (a 0.5 s run took 9 s with 2 threads under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def _sample_master(tmp_path_factory):
    """The bundled synthetic shop at 60 users and 30 items, prepared once per session."""
    from unimp_core.prepare import run_prepare
    from unimp_core.specs.data import PrepareSpec

    base = tmp_path_factory.mktemp("sample")
    return run_prepare(PrepareSpec(datasets=["sample"], out=base / "ds", cache_dir=base / "cache",
                                   sample_users=60, sample_items=30, user_core=3, item_core=2))


@pytest.fixture
def sample_ds(_sample_master, tmp_path):
    """A fresh copy of a 30-item synthetic dataset folder (text, images, user-split histories) that a test
    may change (a copy, so tests can damage images without touching the session's master)."""
    out = tmp_path / "ds"
    shutil.copytree(_sample_master, out)
    return out
