from tests.cli.conftest import cli  # noqa: F401  (the same in-process `unimp` runner)
