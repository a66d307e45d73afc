"""unimp core: everything the `unimp` command does, importable without the CLI."""

__version__ = "0.1.0"
