"""How runs spread over processes: generated DeepSpeed configs, the one-process rendezvous, and
(slow) real launches on CPU: DDP over gloo, DeepSpeed ZeRO-2 with one and two processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unimp_core import run_folder as RF
from unimp_core.model import setup as S
from unimp_core.training.distributed import deepspeed_config, reset_accelerate_state, single_process_rendezvous

from .conftest import RANK_DUMP_DRIVER, make_spec, read_metrics, subprocess_env, write_config

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]


def test_deepspeed_config_follows_the_spec(tmp_path):
    spec = make_spec(tmp_path, tmp_path / "run", optim={"batch_size": 3, "grad_accum": 4, "grad_clip": 0.5},
                     run={"precision": "bf16"})
    cfg = deepspeed_config(spec, 2)
    assert cfg["train_micro_batch_size_per_gpu"] == 3 and cfg["gradient_accumulation_steps"] == 4
    assert cfg["gradient_clipping"] == 0.5 and cfg["zero_optimization"]["stage"] == 2
    assert cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]
    assert "train_batch_size" not in cfg  # DeepSpeed derives it from the group size
    cfg3 = deepspeed_config(spec, 3)
    assert cfg3["zero_optimization"]["stage"] == 3
    assert cfg3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]  # final/ gathers the weights


def test_single_process_rendezvous_keeps_a_launchers_variables(monkeypatch):
    import os

    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    for key in keys:
        monkeypatch.setenv(key, "x")  # recorded, so monkeypatch restores the real state afterwards
        monkeypatch.delenv(key)
    single_process_rendezvous()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("0", "1", "0")
    assert int(os.environ["MASTER_PORT"]) > 0
    reset_accelerate_state()  # a finished run takes its variables back: the next one is not "launched"
    assert not any(key in os.environ for key in keys)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "1234")
    single_process_rendezvous()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_PORT"]) == ("1", "2", "1234")


def _launch(args: list[str], tmp_path: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    res = subprocess.run(args, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    return res


def _rank_dumps(run: Path, world: int) -> list[dict]:
    dumps = [torch.load(run / f"rank-{r}.pt", weights_only=True) for r in range(world)]
    assert [d["world"] for d in dumps] == [world] * world  # a real group, not N lone processes
    return dumps


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[n], b[n]) for n in a), [n for n in a if not torch.equal(a[n], b[n])][:3]


def _launched_run(tmp_path: Path, sample_data: Path, name: str, launch: list[str], extra: list[str]) -> Path:
    config = write_config(make_spec(sample_data, tmp_path / "unused", run={"max_steps": 4, "save_every": 2}),
                          tmp_path / f"{name}.yaml")
    driver = tmp_path / "driver.py"
    driver.write_text(RANK_DUMP_DRIVER)
    run = tmp_path / name
    _launch(launch + [str(driver), "train", "--config", str(config), "--out", str(run)] + extra, tmp_path)
    return run


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_identical_parameters(sample_data, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs: two gloo processes."""
    run = _launched_run(tmp_path, sample_data, "ddp", ACCELERATE + ["--multi_gpu", "--num_processes", "2"], [])
    r0, r1 = _rank_dumps(run, 2)
    _assert_identical(r0["weights"], r1["weights"])
    _assert_identical(r0["weights"], S.load_weights(run))
    assert [s for s, _ in RF.list_checkpoints(run)] == [2]
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    # the schedule advanced once per step, not once per process per step
    assert [r["lr"] for r in read_metrics(run) if "loss" in r][-1] == 0.0
    assert [r["lr"] for r in read_metrics(run) if "loss" in r][1] == pytest.approx(5e-4)


@pytest.mark.slow
def test_deepspeed_zero2_two_cpu_processes_train_like_ddp(sample_data, tmp_path):
    """`accelerate launch --use_deepspeed --num_processes 2` + `--distributed zero2` on CPU (gloo)."""
    ds = _launched_run(tmp_path, sample_data, "ds", ACCELERATE + ["--use_deepspeed", "--num_processes", "2"],
                       ["--distributed", "zero2"])
    r0, r1 = _rank_dumps(ds, 2)
    _assert_identical(r0["weights"], r1["weights"])
    _assert_identical(r0["weights"], S.load_weights(ds))
    shards = list((ds / "checkpoints" / "step-2" / "optimizer_shards" / "zero").glob("*optim_states.pt"))
    assert len(shards) == 2  # each process saved its own optimizer partition
    ddp = _launched_run(tmp_path, sample_data, "ddp", ACCELERATE + ["--multi_gpu", "--num_processes", "2"], [])
    # same data split, same math: the same losses and nearly the same weights as DDP
    def losses(run):
        return [r["loss"] for r in read_metrics(run) if "loss" in r]

    assert len(losses(ds)) == 4 and losses(ds) == pytest.approx(losses(ddp), rel=1e-5)
    a, b = S.load_weights(ds), S.load_weights(ddp)
    assert all(torch.allclose(a[n], b[n], atol=1e-5) for n in a)


CRASH_AFTER_SAVE = """
import sys
from unimp_core.training import checkpoint as ckpt

saved = ckpt.save_checkpoint

def save(run_dir, step, files, keep_last):
    out = saved(run_dir, step, files, keep_last)
    if step == 2:
        raise SystemExit(3)  # dies right after its first checkpoint
    return out

ckpt.save_checkpoint = save
from unimp_cli.app import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_deepspeed_zero2_one_process_trains_and_resumes_exactly(sample_data, tmp_path):
    """`unimp train --distributed zero2` without a launcher: a one-process DeepSpeed group on the CPU."""
    config = write_config(make_spec(sample_data, tmp_path / "unused", run={"max_steps": 4, "save_every": 2}),
                          tmp_path / "spec.yaml")
    cli = [sys.executable, "-m", "unimp_cli", "train", "--config", str(config), "--distributed", "zero2"]
    _launch(cli + ["--out", str(tmp_path / "straight")], tmp_path)
    straight = tmp_path / "straight"
    losses = [r["loss"] for r in read_metrics(straight) if "loss" in r]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    spec = RF.read_train_spec(straight)
    assert spec.run.distributed == "zero2"
    built = S.load_weights(straight, "step-2")
    assert any(not torch.equal(built[n], w) for n, w in S.load_weights(straight).items())  # weights changed

    driver = tmp_path / "crash.py"
    driver.write_text(CRASH_AFTER_SAVE)
    res = subprocess.run([sys.executable, str(driver), *cli[3:], "--out", str(tmp_path / "run")], cwd=ROOT,
                         env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert res.returncode == 3, res.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "step-2" / "optimizer_shards").is_dir()
    _launch(cli + ["--out", str(tmp_path / "run"), "--resume"], tmp_path)
    a, b = S.load_weights(straight), S.load_weights(tmp_path / "run")
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert json.loads((tmp_path / "run" / "final" / "state.json").read_text())["step"] == 4


def test_a_tracker_that_is_not_installed_is_one_line(tmp_path, monkeypatch):
    import accelerate.utils

    from unimp_core.errors import UnimpError
    from unimp_core.training.distributed import make_accelerator

    # whether or not tensorboard is installed here, the check sees it missing
    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: False)
    with pytest.raises(UnimpError, match=r"run.trackers: tensorboard not installed"):
        make_accelerator(make_spec(tmp_path, tmp_path / "run", run={"trackers": ["tensorboard"]}))


def test_an_accelerate_config_file_belongs_to_the_launcher(tmp_path, monkeypatch):
    from unimp_core.errors import UnimpError
    from unimp_core.training.distributed import make_accelerator

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND", raising=False)
    spec = make_spec(tmp_path, tmp_path / "run", run={"accelerate_config": str(tmp_path / "acc.yaml")})
    with pytest.raises(UnimpError, match=r"accelerate launch --config_file .*acc.yaml -m unimp_cli train"):
        make_accelerator(spec)
