"""Every command's --help names every field of its spec with the field's description: as an option's
help, or in the "Also in a --config file" list."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from unimp_cli.app import COMMANDS, app
from unimp_core.specs.base import field_descriptions


def _flat(text: str) -> str:
    """Help text without rich's box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("name, spec", [(name, spec) for name, _, spec in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_help_names_every_spec_field_with_its_description(name, spec):
    res = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    text = _flat(res.output)
    config_only = _flat(text.split("Also in a --config file (no flag):", 1)[1]) if "Also in a --config" in text else ""
    fields = field_descriptions(spec)
    assert len(fields) >= 5
    for field, description in fields:
        assert description, f"{spec.__name__}.{field} has no description"
        assert _flat(description) in text, f"unimp {name} --help lacks {field}: {description!r}"
        if _flat(description) in config_only:
            assert f"{field}: {_flat(description)}" in config_only  # a config-only field is named


def test_config_only_fields_are_settable_in_a_config_file(tmp_path):
    """What the list offers works: a nested config-only field goes through --config into the spec."""
    import json

    cfg = tmp_path / "t.yaml"
    cfg.write_text("model:\n  tiny:\n    hidden_size: 48\noptim:\n  grad_clip: 0.5\n")
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert spec["model"]["tiny"]["hidden_size"] == 48 and spec["optim"]["grad_clip"] == 0.5
