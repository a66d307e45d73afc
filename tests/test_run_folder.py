"""The run-folder contract (unimp_core.run_folder) and the model-family seam (unimp_core.model.families)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unimp_core import run_folder as RF
from unimp_core.errors import UnimpError
from unimp_core.model.families import FAMILIES, family


def test_the_contract_and_the_specs_import_without_torch():
    code = ("import sys, unimp_core.run_folder, unimp_core.model.families, unimp_core.specs.train, "
            "unimp_core.specs.evaluate; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_model_meta_round_trip_and_older_runs(tmp_path):
    RF.write_model_meta(tmp_path, "openflamingo", {"preset": "tiny"}, 12)
    assert RF.read_model_meta(tmp_path) == {"family": "openflamingo", "spec": {"preset": "tiny"}, "n_items": 12}
    (tmp_path / RF.MODEL_META).write_text(json.dumps({"spec": {"preset": "tiny"}, "n_items": 3}))
    with pytest.raises(UnimpError, match="no model family: a run folder from an unimp older than .*train the run again"):
        RF.read_model_meta(tmp_path)
    (tmp_path / RF.MODEL_META).write_text("{not json")
    with pytest.raises(UnimpError, match="model.json: unreadable"):
        RF.read_model_meta(tmp_path)
    with pytest.raises(UnimpError, match="not a run folder"):
        RF.read_model_meta(tmp_path / "elsewhere")


def test_checkpoints_are_listed_in_step_order_and_final_last(tmp_path):
    for step in (10, 9):
        folder = tmp_path / RF.CHECKPOINTS / f"step-{step}"
        folder.mkdir(parents=True)
        (folder / RF.STATE).write_text("{}")
    (tmp_path / RF.CHECKPOINTS / "step-11").mkdir()  # no state.json: incomplete, not listed
    (tmp_path / RF.FINAL).mkdir()
    assert RF.checkpoint_names(tmp_path) == ["step-9", "step-10", "final"]
    assert RF.checkpoint_dir(tmp_path, "step-9") == tmp_path / RF.CHECKPOINTS / "step-9"
    with pytest.raises(UnimpError, match=r"no such checkpoint \(have: step-9, step-10, final\)"):
        RF.weights_file(tmp_path, "best")
    # final/ is written whole or not at all: one without weights is damaged, not absent (issue 22, fault 4)
    with pytest.raises(UnimpError, match=r"final: damaged checkpoint: trainable.pt is missing$"):
        RF.weights_file(tmp_path, "final")
    assert not RF.is_finished(tmp_path)
    assert not RF.holds_run(tmp_path)  # a run's spec is the first thing it writes
    (tmp_path / RF.SPEC_FILE).write_text("{}")
    assert RF.holds_run(tmp_path)


def test_evaluation_report_reading(tmp_path):
    out = RF.evaluation_dir(tmp_path, "final-test")
    assert RF.read_evaluation(out) is None
    RF.write_evaluation(out, {"tasks": {"rec": {"users": 3}}})
    assert RF.read_evaluation(out) == {"tasks": {"rec": {"users": 3}}}
    assert RF.predictions_file(out, "rec") == out / RF.PREDICTIONS / "rec.jsonl"


def test_every_registered_family_provides_the_interface():
    from unimp_core.model.families import Family

    for name in FAMILIES:
        module = family(name)
        assert module.NAME == name and isinstance(module, Family)
        for fn in ("build", "save", "load", "recipe", "rank_scores"):
            assert callable(getattr(module, fn)), f"{name}.{fn}"
        for fn in ("inputs", "collator", "forward", "collated_scores", "history_window"):  # optional capabilities
            assert getattr(module, fn, None) is None or callable(getattr(module, fn)), f"{name}.{fn}"


def test_an_unknown_family_is_one_clear_error(tmp_path):
    from unimp_core.model.setup import setup_model
    from unimp_core.progress import Progress
    from unimp_core.specs.train import TrainSpec

    with pytest.raises(UnimpError, match=r"unknown model family 'nope' \(known: openflamingo, sasrec\)"):
        family("nope")
    RF.write_model_meta(tmp_path, "nope", {}, 3)
    spec = TrainSpec.model_validate({"data": {"path": tmp_path}, "run": {"out": tmp_path}})
    with pytest.raises(UnimpError, match="unknown model family 'nope'"):
        setup_model(spec, None, tmp_path, fresh=False, progress=Progress())
    with pytest.raises(ValueError, match="does not match any of the expected tags: 'openflamingo'"):
        TrainSpec.model_validate({"data": {"path": tmp_path}, "run": {"out": tmp_path}, "model": {"family": "nope"}})
