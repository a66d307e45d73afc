"""Checkpoint folders: atomic writes, pruning, RNG round trips, weight loading and its errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from unimp_core import run_folder as RF
from unimp_core.errors import UnimpError
from unimp_core.io import write_checksums
from unimp_core.model import setup as S
from unimp_core.training import checkpoint as ckpt



class Payload:
    def __reduce__(self):
        return (print, ("a checkpoint ran code",))


def small_model() -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)  # a frozen "backbone"
    return model


def test_trainable_state_holds_only_what_trains():
    model = small_model()
    state = S.trainable_state(model)
    assert set(state) == {"1.weight", "1.bias"}
    state["1.bias"] += 1  # a copy, not a view of the model
    assert not torch.equal(state["1.bias"], model[1].bias)


def test_load_trainable_copies_and_names_what_does_not_fit():
    a, b = small_model(), small_model()
    S.load_trainable(b, S.trainable_state(a), "a")
    assert torch.equal(a[1].weight, b[1].weight) and not torch.equal(a[0].weight, b[0].weight)
    with pytest.raises(UnimpError, match=r"x.pt: weights do not fit this model \(0 unknown, 1 missing, e.g. 1.bias\)"):
        S.load_trainable(b, {"1.weight": a[1].weight}, "x.pt")
    with pytest.raises(UnimpError, match="1 unknown"):
        S.load_trainable(b, {**S.trainable_state(a), "2.weight": torch.zeros(1)}, "x.pt")
    with pytest.raises(UnimpError, match=r"1.bias has shape \(3,\), the model \(2,\)"):
        S.load_trainable(b, {"1.weight": a[1].weight, "1.bias": torch.zeros(3)}, "x.pt")


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(ckpt.rng_state(), tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_write_folder_atomic_replaces_and_cleans(tmp_path):
    dest = tmp_path / "final"
    (tmp_path / ".final.tmp").mkdir()  # a killed earlier attempt
    (tmp_path / ".final.tmp" / "junk").write_text("x")
    ckpt.write_folder_atomic(dest, {"a.json": {"step": 1}, "w.pt": {"x": torch.ones(2)},
                                    "note": lambda p: p.write_text("hello")})
    assert json.loads((dest / "a.json").read_text()) == {"step": 1}
    assert torch.equal(torch.load(dest / "w.pt", weights_only=True)["x"], torch.ones(2))
    assert (dest / "note").read_text() == "hello"
    ckpt.write_folder_atomic(dest, {"a.json": {"step": 2}})
    assert sorted(p.name for p in dest.iterdir()) == ["a.json", RF.CHECKSUMS]
    assert list(json.loads((dest / RF.CHECKSUMS).read_text())) == ["a.json"]  # every file but itself
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def _save(run, step, keep_last=3):
    return ckpt.save_checkpoint(run, step, {RF.WEIGHTS: {"w": torch.full((2,), float(step))},
                                            RF.STATE: {"step": step, "epoch": 0, "batch": step}}, keep_last)


def test_save_prunes_to_keep_last_and_lists_in_step_order(tmp_path):
    for step in (1, 2, 9, 10, 11):
        _save(tmp_path, step)
    assert [s for s, _ in RF.list_checkpoints(tmp_path)] == [9, 10, 11]  # numeric, not string, order
    (tmp_path / "checkpoints" / "step-12").mkdir()  # no state.json: never listed as a checkpoint
    assert [s for s, _ in RF.list_checkpoints(tmp_path)] == [9, 10, 11]
    with pytest.raises(ValueError, match="state.json"):
        ckpt.save_checkpoint(tmp_path, 13, {RF.WEIGHTS: {}}, 2)


def test_load_checkpoint_reads_parts_and_refuses_bad_files(tmp_path):
    path = _save(tmp_path, 4)
    loaded = ckpt.load_checkpoint(path)
    assert loaded["state"] == {"step": 4, "epoch": 0, "batch": 4} and loaded["optimizer"] is None
    assert torch.equal(loaded["weights"]["w"], torch.full((2,), 4.0))

    (path / RF.WEIGHTS).write_bytes(b"not a torch file")
    write_checksums(path, RF.CHECKSUMS)  # recorded as it is now: the loader's own checks find it
    with pytest.raises(UnimpError) as err:
        ckpt.load_checkpoint(path)
    assert "trainable.pt: unreadable" in str(err.value) and "\n" not in str(err.value)

    torch.save({"w": torch.ones(1)}, path / RF.WEIGHTS)
    # a pickle that would call a function when loaded: weights_only loading refuses it
    torch.save({"state": Payload()}, path / RF.RNG)
    write_checksums(path, RF.CHECKSUMS)
    with pytest.raises(UnimpError, match="rng.pt: unreadable"):
        ckpt.load_checkpoint(path)
    (path / RF.STATE).unlink()
    with pytest.raises(UnimpError, match="not a complete checkpoint"):
        ckpt.load_checkpoint(path)


def test_remove_stale_deletes_only_temporary_folders(tmp_path):
    _save(tmp_path, 2)
    for stale in ("checkpoints/.step-3.tmp", "checkpoints/.step-4.shards", ".final.old", ".final.tmp"):
        (tmp_path / stale).mkdir(parents=True)
    ckpt.remove_stale(tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2"]
    assert not (tmp_path / ".final.old").exists() and not (tmp_path / ".final.tmp").exists()


def test_load_weights_names_the_checkpoints_there_are(tmp_path):
    _save(tmp_path, 2)
    _save(tmp_path, 4)
    assert torch.equal(S.load_weights(tmp_path, "step-4")["w"], torch.full((2,), 4.0))
    with pytest.raises(UnimpError, match=r"no such checkpoint \(have: step-2, step-4\)"):
        S.load_weights(tmp_path)
    with pytest.raises(UnimpError, match=r"have: none"):
        S.load_weights(tmp_path / "empty", "step-1")
