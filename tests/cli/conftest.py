import pytest
from typer.testing import CliRunner

from unimp_cli.app import app
from unimp_cli.common import expand_multi


@pytest.fixture
def cli():
    """Invoke `unimp ARGS...` in-process, with the same argv rewriting as the console script."""
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, expand_multi([str(a) for a in args]))

    return invoke
