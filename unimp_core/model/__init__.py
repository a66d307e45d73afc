"""The UniMP model: presets, tokenizer, vocabulary extension, the OpenFlamingo factory and freezing.

Import from the submodules (`unimp_core.model.openflamingo.factory.build_model`, ...); this package imports nothing
heavy itself, so `unimp --help` and spec validation stay instant.
"""

__all__ = ["openflamingo", "presets", "sasrec", "tokenizer", "vocab"]
