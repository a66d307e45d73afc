"""Models: one package per model family (`openflamingo/`, `sasrec/`), the registry that finds a family by
name (`families`), the loader that rebuilds a run's model (`setup`) and the parts token models share
(tokenizer, vocabulary, item ids and content, vision cache).

Import from the submodules (`unimp_core.model.setup.load_run`, ...); this package imports nothing
heavy itself, so `unimp --help` and spec validation stay instant.
"""
