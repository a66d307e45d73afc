"""Every shipped example spec validates (torchtune-style config tests)."""

from pathlib import Path

import pytest

from unimp_core.specs import load_config
from unimp_core.specs.data import PrepareSpec
from unimp_core.specs.train import TrainSpec

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
KINDS = {"prepare": PrepareSpec, "train": TrainSpec}


def test_there_are_examples():
    assert {p.name.split("-")[0] for p in EXAMPLES} >= {"prepare", "train"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path):
    spec_cls = KINDS[path.name.split("-")[0]]
    spec_cls.model_validate(load_config(path))
