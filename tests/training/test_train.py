"""The training loop end to end on a model smaller than tiny: resume exactness, cached vision
features, finetune, validation, checkpoints, errors, precision, accumulation, curriculum."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unimp_core import run_folder as RF
from unimp_core.errors import UnimpError
from unimp_core.model import setup as S
from unimp_core.training.finetune import finetune_spec
from unimp_core.training.stream import validation_samples
from unimp_core.training import checkpoint as ckpt
from unimp_core.model.openflamingo import recipe as OF
from unimp_core.training import train as T

from .conftest import make_spec, open_gates, read_metrics, subprocess_env

ROOT = Path(__file__).resolve().parents[2]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return S.load_weights(run)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [n for n in a if not torch.equal(a[n], b[n])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in records]


class Crash(Exception):
    pass


# ----------------------------------------------------------------------------------------- resume


def test_resume_after_crash_ends_with_the_same_weights(sample_data, tmp_path, monkeypatch):
    """A run that dies after step 3 (checkpoint at step 2) and is resumed ends bit-identical to an
    uninterrupted one: weights, metrics lines, and the RNG state seen by every forward pass."""
    rng_seen: dict[str, list] = {"straight": [], "crashed": [], "resumed": []}
    current = {"name": "straight"}
    real_loss = OF.answer_loss_parts

    def recording_loss(*args, **kwargs):  # training micro-steps only (validation passes weights=None)
        if args[2] is not None:
            rng_seen[current["name"]].append(torch.get_rng_state().clone())
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(OF, "answer_loss_parts", recording_loss)
    sections = dict(run={"max_steps": 6, "save_every": 2, "keep_last": 5})
    straight = T.run_train(make_spec(sample_data, tmp_path / "straight", **sections))

    real_save = ckpt.save_checkpoint

    def dying_save(run_dir, step, files, keep_last):
        if step == 4:  # steps 3 and 4 are done and logged; the checkpoint of step 4 never lands
            raise Crash
        return real_save(run_dir, step, files, keep_last)

    current["name"] = "crashed"
    monkeypatch.setattr(ckpt, "save_checkpoint", dying_save)
    with pytest.raises(Crash):
        T.run_train(make_spec(sample_data, tmp_path / "run", **sections))
    assert [s for s, _ in RF.list_checkpoints(tmp_path / "run")] == [2]
    assert max(r["step"] for r in read_metrics(tmp_path / "run")) == 4
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)

    current["name"] = "resumed"
    resumed = T.run_train(make_spec(sample_data, tmp_path / "run", run={**sections["run"], "resume": True}))
    assert_same_weights(final_weights(straight), final_weights(resumed))
    assert without_timing(read_metrics(straight)) == without_timing(read_metrics(resumed))
    # micro-steps 3..6 of the resumed run saw exactly the RNG states of the uninterrupted one
    assert len(rng_seen["straight"]) == 6 and len(rng_seen["resumed"]) == 4
    assert all(torch.equal(a, b) for a, b in zip(rng_seen["straight"][2:], rng_seen["resumed"]))
    state = json.loads((resumed / RF.FINAL / RF.STATE).read_text())
    assert state["step"] == 6


def test_resume_across_an_epoch_boundary_with_accumulation(sample_data, tmp_path):
    """max_steps split into two invocations (the second resumes): one epoch is 64 rec samples / 16 per
    step = 4 steps, so the checkpoint at step 4 resumes at the start of epoch 1 (and at a later epoch's
    data, which a loader counting its own passes would get wrong)."""
    common = dict(data={"tasks": ["rec"]}, optim={"batch_size": 8, "grad_accum": 2, "schedule": "cosine"})
    straight = T.run_train(make_spec(sample_data, tmp_path / "a", run={"max_steps": 6, "save_every": 100},
                                     **common))
    first = make_spec(sample_data, tmp_path / "b", run={"max_steps": 6, "save_every": 4}, **common)
    original = ckpt.save_checkpoint

    def stop_after_save(*args, **kwargs):
        original(*args, **kwargs)
        raise Crash

    try:
        ckpt.save_checkpoint = stop_after_save
        with pytest.raises(Crash):
            T.run_train(first)
    finally:
        ckpt.save_checkpoint = original
    state = json.loads((tmp_path / "b" / "checkpoints" / "step-4" / RF.STATE).read_text())
    assert (state["epoch"], state["batch"]) == (0, 8)  # 8 micro-batches of 8 = the whole first epoch
    resumed = T.run_train(make_spec(sample_data, tmp_path / "b", run={"max_steps": 6, "save_every": 4,
                                                                        "resume": True}, **common))
    assert_same_weights(final_weights(straight), final_weights(resumed))
    assert [r["epoch"] for r in read_metrics(resumed) if "loss" in r] == [0, 0, 0, 0, 1, 1]


DRIVER = """
import sys
from pathlib import Path
from unimp_core.training import checkpoint as ckpt
from unimp_core.model.openflamingo import recipe as train

marker = Path(sys.argv[1])
real_loss = train.answer_loss_parts
saved = ckpt.save_checkpoint

def save(run_dir, step, files, keep_last):
    out = saved(run_dir, step, files, keep_last)
    if step == 2:
        marker.write_text("2")
    return out

def loss(*args, **kwargs):
    # after the checkpoint of step 2 and one more step, block mid-step until killed
    if marker.exists() and marker.read_text() == "3" and args[2] is not None:
        marker.write_text("blocked")
        import time
        while True:
            time.sleep(1)
    if marker.exists() and marker.read_text() == "2" and args[2] is not None:
        marker.write_text("3")
    return real_loss(*args, **kwargs)

ckpt.save_checkpoint = save
train.answer_loss_parts = loss
from unimp_cli.app import main
main(sys.argv[2:])
"""


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_matches(sample_data, tmp_path):
    """`unimp train` killed with SIGKILL in the middle of step 4 (its last checkpoint: step 2), then
    `unimp train --resume`, ends with exactly the weights of an uninterrupted run."""
    import yaml

    spec = make_spec(sample_data, tmp_path / "unused", run={"max_steps": 6, "save_every": 2})
    config = tmp_path / "spec.yaml"
    config.write_text(yaml.safe_dump(json.loads(spec.model_dump_json(exclude={"run": {"out"}}))))
    env = subprocess_env()

    straight = subprocess.run([sys.executable, "-m", "unimp_cli", "train", "--config", str(config),
                               "--out", str(tmp_path / "straight")], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]

    marker = tmp_path / "marker"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(driver), str(marker), "train", "--config", str(config),
                             "--out", str(run)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (marker.exists() and marker.read_text() == "blocked"):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never reached step 4"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / RF.FINAL).exists()
    assert [s for s, _ in RF.list_checkpoints(run)] == [2]
    assert max(r["step"] for r in read_metrics(run)) == 3  # step 3 was logged before the kill

    resumed = subprocess.run([sys.executable, "-m", "unimp_cli", "train", "--config", str(config),
                              "--out", str(run), "--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(final_weights(tmp_path / "straight"), final_weights(run))
    assert without_timing(read_metrics(tmp_path / "straight")) == without_timing(read_metrics(run))


# ------------------------------------------------------------------------------ run folder, metrics


def test_run_folder_metrics_validation_and_keep_last(sample_data, tmp_path):
    run = T.run_train(make_spec(sample_data, tmp_path / "run",
                                run={"max_steps": 5, "save_every": 1, "keep_last": 2, "eval_every": 2}))
    assert [s for s, _ in RF.list_checkpoints(run)] == [3, 4]  # step 5 is final/
    assert not list((run / "checkpoints").glob(".*"))  # no temporary folder left behind
    for name in ("train_spec.json", "model.json", "tokenizer", "final/trainable.pt", "final/state.json"):
        assert (run / name).exists(), name
    step4 = ckpt.load_checkpoint(run / "checkpoints" / "step-4")
    assert step4["state"]["step"] == 4 and step4["optimizer"] is not None and step4["rng"] is not None
    assert step4["scheduler"]["last_epoch"] == 4

    records = read_metrics(run)
    train_lines = [r for r in records if "loss" in r]
    valid_lines = [r for r in records if "valid_loss" in r]
    assert [r["step"] for r in train_lines] == [1, 2, 3, 4, 5]
    assert all(set(r["task_loss"]) <= {"rec", "exp"} and r["task_loss"] for r in train_lines)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train_lines)
    from unimp_core.training.optim import lr_at

    # the lr logged after step k is the cosine schedule's lr for step k (no warmup in these specs)
    assert [r["lr"] for r in train_lines] == pytest.approx([lr_at(k, 5, 1e-3, 0.0, "cosine") for k in range(1, 6)])
    assert [r["step"] for r in valid_lines] == [2, 4, 5]
    for r in valid_lines:
        assert set(r["valid_loss"]) == {"rec", "exp"}
        assert all(0 < v < 50 for v in r["valid_loss"].values())
    # the model learns something in 5 steps at lr 1e-3: the validation loss goes down
    assert sum(valid_lines[-1]["valid_loss"].values()) < sum(valid_lines[0]["valid_loss"].values())
    trained, built = S.load_weights(run), S.load_weights(run, "step-3")
    assert any(not torch.equal(trained[n], built[n]) for n in trained)


def test_rank_validation_keeps_the_best_checkpoint(sample_data, tmp_path):
    """Every model: valid-split rank metrics every eval_every steps, best/ holds the best weights,
    evaluate uses them by default and measures exactly what selection saw."""
    from unimp_core.evaluation.runner import run_evaluate
    from unimp_core.specs.evaluate import EvaluateSpec

    run = T.run_train(make_spec(sample_data, tmp_path / "run", optim={"lr": 3e-3},
                                run={"max_steps": 6, "eval_every": 2, "select_metric": "mrr@20"}))
    ranked = [r for r in read_metrics(run) if "valid_rank" in r]
    assert [r["step"] for r in ranked] == [2, 4, 6] and all(r["valid_users"] > 0 for r in ranked)
    best = RF.best_record(run)
    values = [r["valid_rank"]["MRR@20"] for r in ranked]
    assert best["metric"] == "MRR@20" and best["value"] == max(values) and best["step"] == ranked[values.index(max(values))]["step"]
    report = run_evaluate(EvaluateSpec(run=run, split="valid", tasks=["rec"], exclude_history=True))
    assert report["checkpoint"] == "best" and "best valid MRR@20" in report["checkpoint_note"]
    assert report["tasks"]["rec"]["metrics"]["MRR@20"] == pytest.approx(best["value"], abs=1e-9)
    assert json.loads((run / RF.FINAL / RF.STATE).read_text())["early_stopped"] is False


def test_validation_loss_matches_a_direct_computation(sample_data, tmp_path):
    """The logged validation loss is the mean focal answer loss over the validation instances."""
    from unimp_core.data.store import load_dataset
    from unimp_core.progress import Progress
    from unimp_core.training.collate import make_collator
    from unimp_core.training.loss import answer_loss_parts
    from unimp_core.training.samples import SampleDataset

    spec = make_spec(sample_data, tmp_path / "run", data={"tasks": ["rec"], "valid_users": 6},
                     run={"max_steps": 1, "eval_every": 1})
    run = T.run_train(spec)
    logged = [r for r in read_metrics(run) if "valid_loss" in r][0]["valid_loss"]["rec"]
    ds = load_dataset(sample_data)
    setup = S.setup_model(spec, ds, run, fresh=False, progress=Progress())
    S.load_trainable(setup.bundle.model, S.load_weights(run), "final")
    collate = make_collator(setup.bundle.tokenizer, max_length=256, images=setup.images, image_shape=setup.image_shape)
    samples = validation_samples(spec, ds, ctx=setup.ctx)["rec"]  # the run's rec layout
    assert len(samples) == 6
    setup.bundle.model.eval()
    with torch.no_grad():
        batch = collate(list(SampleDataset(samples)))
        logits = setup.bundle.model(vision_x=batch["vision_x"], lang_x=batch["input_ids"],
                                    attention_mask=batch["attention_mask"]).logits
        parts = answer_loss_parts(logits, batch["labels"], None, spec.optim.gamma,
                                  item_range=setup.bundle.ids.item_range)  # optim.item_softmax
    expected = float(parts.sample_sums.sum() / parts.sample_tokens.sum())
    assert logged == pytest.approx(expected, rel=1e-5)


def test_missing_or_foreign_dataset_is_one_line(sample_data, tmp_path):
    import shutil

    with pytest.raises(UnimpError) as err:
        T.run_train(make_spec(tmp_path / "nowhere", tmp_path / "run"))
    assert "nowhere" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing written for a run that could not start

    other = tmp_path / "old-data"
    shutil.copytree(sample_data, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UnimpError) as err:
        T.run_train(make_spec(other, tmp_path / "run"))
    assert "schema version 99" in str(err.value) and "\n" not in str(err.value)


def test_existing_run_needs_resume_and_the_same_settings(sample_data, tmp_path):
    run = T.run_train(make_spec(sample_data, tmp_path / "run", run={"max_steps": 1}))
    with pytest.raises(UnimpError, match="a run is already there; add --resume"):
        T.run_train(make_spec(sample_data, run, run={"max_steps": 1}))
    with pytest.raises(UnimpError, match=r"optim.lr: 0.001 vs 0.002"):
        T.run_train(make_spec(sample_data, run, optim={"lr": 2e-3}, run={"max_steps": 1, "resume": True}))
    with pytest.raises(UnimpError, match="nothing to resume"):
        T.run_train(make_spec(sample_data, tmp_path / "new", run={"resume": True}))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UnimpError, match="not empty"):
        T.run_train(make_spec(sample_data, tmp_path / "busy"))


# ------------------------------------------------------------------------------ vision feature cache


def _gates_open_and_count_vision(monkeypatch, calls: list):
    """Open the cross-attention gates (images matter) and count vision-tower forward passes."""
    real = OF.setup_model

    def setup_model(*args, **kwargs):
        setup = real(*args, **kwargs)
        open_gates(setup.bundle.model, 0.5)
        setup.bundle.model.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
        return setup

    monkeypatch.setattr(OF, "setup_model", setup_model)


def test_cached_vision_features_give_the_same_losses(sample_data, tmp_path, monkeypatch):
    from unimp_core.run_folder import FEATURES

    losses = {}
    for cached in (False, True):
        calls: list = []
        _gates_open_and_count_vision(monkeypatch, calls)
        run = T.run_train(make_spec(sample_data, tmp_path / str(cached), run={
            "max_steps": 3, "cache_vision_features": cached, "eval_every": 3}))
        records = read_metrics(run)
        losses[cached] = [r["loss"] for r in records if "loss" in r] + \
            [v for r in records if "valid_loss" in r for v in r["valid_loss"].values()]
        if cached:
            assert (run / FEATURES).is_file()
            assert calls == []  # the cache was filled during setup; training never runs the tower
        else:
            assert len(calls) > 3
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    # with the gates open the images do matter, so the equality says something
    monkeypatch.undo()
    plain = T.run_train(make_spec(sample_data, tmp_path / "closed", run={"max_steps": 3, "eval_every": 3}))
    assert [r["loss"] for r in read_metrics(plain) if "loss" in r][0] != pytest.approx(losses[False][0], rel=1e-4)


# ---------------------------------------------------------------------------------------- finetune


def test_finetune_starts_from_the_runs_final_weights(sample_data, tmp_path):
    from unimp_core.data.store import load_dataset
    from unimp_core.progress import Progress
    from unimp_core.training.collate import make_collator
    from unimp_core.training.loss import answer_loss_parts
    from unimp_core.training.samples import TrainingSamples

    source = T.run_train(make_spec(sample_data, tmp_path / "base", run={"max_steps": 3}))
    spec = finetune_spec(source, {"run": {"out": tmp_path / "ft", "max_steps": 2, "log_every": 1}})
    assert spec.data.tasks == ["rec"] and spec.optim.schedule == "constant"
    assert spec.init_from == source.resolve() and spec.model == RF.read_train_spec(source).model
    ft = T.run_train(spec)
    first = [r for r in read_metrics(ft) if "loss" in r][0]
    assert set(first["task_loss"]) == {"rec"}
    assert [r["lr"] for r in read_metrics(ft) if "loss" in r] == [1e-3, 1e-3]  # constant

    # the first step's loss, recomputed from the source run's final weights (and from built weights)
    ds = load_dataset(sample_data)
    setup = S.setup_model(spec, ds, ft, fresh=False, progress=Progress())
    collate = make_collator(setup.bundle.tokenizer, max_length=spec.data.max_tokens, images=setup.images,
                            image_shape=setup.image_shape, task_weights=spec.data.task_weights)
    batch = collate([TrainingSamples(setup.ctx, ["rec"], spec.data.history_len, spec.run.seed)[i] for i in range(4)])

    def first_loss(weights):
        if weights is not None:
            S.load_trainable(setup.bundle.model, weights, "test")
        with torch.no_grad():
            logits = setup.bundle.model(vision_x=batch["vision_x"], lang_x=batch["input_ids"],
                                        attention_mask=batch["attention_mask"]).logits
        return float(answer_loss_parts(logits, batch["labels"], batch["weights"], spec.optim.gamma,
                                       item_range=setup.bundle.ids.item_range).loss)

    untrained = first_loss(None)
    assert first["loss"] == pytest.approx(first_loss(S.load_weights(source)), rel=1e-5)
    assert first["loss"] != pytest.approx(untrained, rel=1e-5)


def test_finetune_needs_a_finished_run(sample_data, tmp_path):
    with pytest.raises(UnimpError, match="not a run folder"):
        finetune_spec(tmp_path, {"run": {"out": tmp_path / "x"}})
    (tmp_path / RF.SPEC_FILE).write_text("{}")
    with pytest.raises(UnimpError, match="has not finished"):
        finetune_spec(tmp_path, {"run": {"out": tmp_path / "x"}})


# ------------------------------------------------------------------ precision, accumulation, curriculum


def test_bf16_runs_on_cpu(sample_data, tmp_path):
    run = T.run_train(make_spec(sample_data, tmp_path / "run", run={"max_steps": 2, "precision": "bf16"}))
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert all(w.dtype == torch.float32 for w in S.load_weights(run).values())  # fp32 master weights


def test_fp16_runs_on_cpu_too(sample_data, tmp_path):
    """accelerate 1.15 autocasts to fp16 on the CPU, with a gradient scaler."""
    run = T.run_train(make_spec(sample_data, tmp_path / "run", run={"max_steps": 2, "precision": "fp16"}))
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_two_accumulated_micro_batches_equal_one_double_batch(sample_data, tmp_path):
    """rec samples with full windows all have the same number of answer tokens, so 2 micro-batches of 2
    (accumulated) and one batch of 4 give the same gradient, hence the same first AdamW step."""
    def run(name: str, **optim):
        return T.run_train(make_spec(sample_data, tmp_path / name, data={"tasks": ["rec"], "valid_users": 0},
                                     run={"max_steps": 1}, optim={"schedule": "constant", **optim}))

    a = run("a", batch_size=2, grad_accum=2)
    b = run("b", batch_size=4)
    wa, wb, w0 = S.load_weights(a), S.load_weights(b), _built_weights(a, sample_data)
    da = torch.cat([(wa[n] - w0[n]).flatten() for n in w0])
    db = torch.cat([(wb[n] - w0[n]).flatten() for n in w0])
    assert da.abs().max() > 1e-4  # it did train
    assert torch.allclose(da, db, atol=1e-6)  # measured: 4e-9 apart, updates of 1e-3
    # half the data (one micro-batch of 2) moves the weights elsewhere: the comparison is sensitive
    c = run("c", batch_size=2)
    dc = torch.cat([(S.load_weights(c)[n] - w0[n]).flatten() for n in w0])
    assert not torch.allclose(da, dc, atol=1e-6)


def _built_weights(run: Path, data: Path) -> dict[str, torch.Tensor]:
    from unimp_core.data.store import load_dataset
    from unimp_core.progress import Progress

    spec = RF.read_train_spec(run)
    setup = S.setup_model(spec, load_dataset(data), run, fresh=False, progress=Progress())
    return S.trainable_state(setup.bundle.model)


def test_curriculum_adds_tasks_by_epoch_and_counts_its_steps(sample_data, tmp_path):
    from unimp_core.data.store import load_dataset
    from unimp_core.training.samples import TrainingSamples

    spec = make_spec(sample_data, tmp_path / "run", data={"tasks": ["rec", "exp"], "curriculum": True,
                                                          "valid_users": 0},
                     optim={"batch_size": 16}, run={"max_steps": None, "epochs": 2, "save_every": 100})
    run = T.run_train(spec)
    stream = TrainingSamples(load_dataset(sample_data), ["rec", "exp"], 3, 7, curriculum=True, n_epochs=2)
    sizes = [len(stream)]
    stream.set_epoch(1)
    sizes.append(len(stream))
    assert sizes[1] > sizes[0]
    expected = sum(-(-n // 16) for n in sizes)
    lines = [r for r in read_metrics(run) if "loss" in r]
    assert [r["step"] for r in lines] == list(range(1, expected + 1))
    assert all(set(r["task_loss"]) == {"rec"} for r in lines if r["epoch"] == 0)
    assert any("exp" in r["task_loss"] for r in lines if r["epoch"] == 1)
    assert json.loads((run / "final" / "state.json").read_text())["step"] == expected


def test_finetune_resumed_before_its_first_checkpoint_still_starts_from_the_source(sample_data, tmp_path,
                                                                                    monkeypatch):
    source = T.run_train(make_spec(sample_data, tmp_path / "base", run={"max_steps": 2}))
    overrides = {"run": {"out": tmp_path / "ft", "max_steps": 2, "save_every": 1}}
    straight = T.run_train(finetune_spec(source, {"run": {**overrides["run"], "out": tmp_path / "straight"}}))

    def dying_save(*args, **kwargs):
        raise Crash

    monkeypatch.setattr(ckpt, "save_checkpoint", dying_save)
    with pytest.raises(Crash):
        T.run_train(finetune_spec(source, overrides))
    monkeypatch.undo()
    assert RF.list_checkpoints(tmp_path / "ft") == []
    resumed = T.run_train(finetune_spec(source, {"run": {**overrides["run"], "resume": True}}))
    assert_same_weights(final_weights(straight), final_weights(resumed))


def test_adam_beta2_clipping_and_decay_scope_follow_the_spec(sample_data, tmp_path, monkeypatch):
    """optim.beta2 reaches the optimizer; grad_clip 0 clips nothing, any other value clips to itself;
    decay_scope "all" decays the token embeddings, which the default leaves undecayed."""
    from accelerate import Accelerator

    clips, betas, embeddings_decayed = [], [], []
    real_clip, real_build = Accelerator.clip_grad_norm_, OF.build_optimizer

    def clip(self, params, max_norm, *args, **kwargs):
        clips.append(max_norm)
        return real_clip(self, params, max_norm, *args, **kwargs)

    def build(model, *args, **kwargs):
        optimizer = real_build(model, *args, **kwargs)
        betas.append(optimizer.param_groups[0]["betas"])
        embeddings = model.lang_encoder.get_input_embeddings().weight
        embeddings_decayed.append(any(p is embeddings for p in optimizer.param_groups[0]["params"]))
        return optimizer

    monkeypatch.setattr(Accelerator, "clip_grad_norm_", clip)
    monkeypatch.setattr(OF, "build_optimizer", build)

    def run(name: str, **optim):
        T.run_train(make_spec(sample_data, tmp_path / name, data={"tasks": ["rec"], "valid_users": 0},
                              run={"max_steps": 2}, optim=optim))

    run("default")
    assert clips == [1.0, 1.0] and betas == [(0.9, 0.999)] and embeddings_decayed == [False]
    clips.clear(), betas.clear(), embeddings_decayed.clear()
    run("sasrec-like", beta2=0.98, grad_clip=0, decay_scope="all")
    assert clips == [] and betas == [(0.9, 0.98)] and embeddings_decayed == [True]
