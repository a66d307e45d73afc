"""`unimp train` and `unimp finetune` through the command line (typer's CliRunner, in process)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.training.conftest import make_spec, read_metrics, write_config


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from unimp_core.prepare import run_prepare
    from unimp_core.specs.data import PrepareSpec

    root = tmp_path_factory.mktemp("cli-train")
    return run_prepare(PrepareSpec(datasets=["sample"], out=root / "sample", cache_dir=root / "cache",
                                   sample_users=60, sample_items=30, user_core=5, item_core=3))


@pytest.fixture
def config(data, tmp_path):
    """The small test model and short prompts as a spec file (flags add the rest)."""
    return write_config(make_spec(data, tmp_path / "unused", run={"max_steps": 2}), tmp_path / "spec.yaml")


def one_error_line(res) -> str:
    assert res.exit_code == 1, res.output
    line = res.stderr.strip().splitlines()[-1]  # progress bars may precede it on stderr
    assert line.startswith("error: ")
    return line


def test_train_dry_run_resolves_config_and_flags(cli, config, tmp_path):
    res = cli("train", "--config", config, "--out", tmp_path / "r", "--tasks", "rec", "search", "--gamma", 0,
              "--task-weight", "search=3", "--precision", "bf16", "--dry-run")
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert spec["data"]["tasks"] == ["rec", "search"] and spec["data"]["task_weights"] == {"rec": 2.0, "search": 3.0}
    assert spec["optim"]["gamma"] == 0 and spec["run"]["precision"] == "bf16"
    assert spec["model"]["tiny"]["hidden_size"] == 32  # from the config file
    assert not (tmp_path / "r").exists()


def test_train_bad_values_are_one_line(cli, config, tmp_path):
    line = one_error_line(cli("train", "--config", config, "--out", tmp_path / "r", "--schedule", "step"))
    assert "optim.schedule" in line
    line = one_error_line(cli("train", "--config", config, "--out", tmp_path / "r", "--task-weight", "rec:2"))
    assert "--task-weight" in line or "task=number" in line
    line = one_error_line(cli("train", "--config", config, "--data", tmp_path / "missing", "--out", tmp_path / "r"))
    assert "missing" in line and "dataset folder not found" in line


@pytest.mark.parametrize("flags, setting", [
    (("--lr", "inf"), "optim.lr: Input should be a finite number"),
    (("--lr", "nan"), "optim.lr: Input should be a finite number"),
    (("--gamma", "inf"), "optim.gamma: Input should be a finite number"),
    (("--epochs", "nan"), "run.epochs: Input should be a finite number"),
    (("--task-weight", "rec=nan"), "data.task_weights.rec: Input should be a finite number"),
    (("--task-weight", "rec=-5"), "task_weights: weights must be >= 0 (got {'rec': -5.0})"),
    (("--tasks", "rec", "--task-weight", "rec=0"), "every trained task has weight 0"),
    (("--seed", "-1"), "run.seed: Input should be greater than or equal to 0"),
])
def test_settings_outside_their_domain_are_refused_by_dry_run(cli, config, tmp_path, flags, setting):
    # issue 22, fault 7: --lr inf and --task-weight rec=nan trained on NaN; rec=-5 passed --dry-run
    line = one_error_line(cli("train", "--config", config, "--out", tmp_path / "r", *flags, "--dry-run"))
    assert setting in line
    assert not (tmp_path / "r").exists()


def test_a_loss_that_turns_nan_stops_the_run_before_saving(cli, config, tmp_path, monkeypatch):
    from unimp_core.model.openflamingo import recipe as train_mod

    real = train_mod.answer_loss_parts

    def nan_loss(*args, **kwargs):
        parts = real(*args, **kwargs)
        return parts._replace(loss=parts.loss * float("nan"))

    monkeypatch.setattr(train_mod, "answer_loss_parts", nan_loss)
    run = tmp_path / "run"
    line = one_error_line(cli("train", "--config", config, "--out", run, "--save-every", 1, "--log-every", 1))
    assert "step 1: the training loss is nan (not a finite number)" in line and "--lr" in line
    assert not (run / "checkpoints").exists() and not (run / "final").exists()
    assert "NaN" not in (run / "metrics.jsonl").read_text() if (run / "metrics.jsonl").exists() else True


def test_train_tiny_run_resume_and_existing_run(cli, config, tmp_path):
    run = tmp_path / "run"
    res = cli("train", "--config", config, "--out", run, "--max-steps", 2, "--save-every", 1, "--log-every", 1)
    assert res.exit_code == 0, res.output + res.stderr
    assert "run folder:" in res.output and (run / "final" / "trainable.pt").is_file()
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2]

    line = one_error_line(cli("train", "--config", config, "--out", run, "--max-steps", 2))
    assert "already there" in line and "--resume" in line

    res = cli("train", "--config", config, "--out", run, "--max-steps", 3, "--save-every", 1, "--log-every", 1,
              "--resume")  # a longer run from its last checkpoint (step 1)
    assert res.exit_code == 0, res.output + res.stderr
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3]
    assert json.loads((run / "final" / "state.json").read_text())["step"] == 3
    line = one_error_line(cli("train", "--config", config, "--out", run, "--resume", "--lr", 0.5))
    assert "optim.lr" in line


def test_out_errors_say_what_the_folder_is(cli, config, tmp_path):
    # issue 22, fault 8: a folder of the user's with a checkpoints/ subfolder was "a run already there; add
    # --resume" (and --resume then found nothing to resume); --out FILE said only "File exists"
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "checkpoints" / "notes.txt").write_text("mine")
    line = one_error_line(cli("train", "--config", config, "--out", mine, "--max-steps", 1))
    assert "folder is not empty and holds no run" in line and "--resume" not in line
    afile = tmp_path / "afile"
    afile.write_text("mine")
    line = one_error_line(cli("train", "--config", config, "--out", afile, "--max-steps", 1))
    assert line == f"error: --out {afile}: is a file, not a folder; name a folder for the run"
    assert afile.read_text() == "mine" and (mine / "checkpoints" / "notes.txt").read_text() == "mine"


def test_finetune_takes_a_config_file(cli, tmp_path, tmp_path_factory):
    # issue 22, fault 8: `finetune --config` was "No such option" though --help lists config-only fields
    from tests.evaluation.trained import trained_run

    source = trained_run(tmp_path_factory)
    config = tmp_path / "ft.yaml"
    config.write_text("optim:\n  lr: 0.0005\n  schedule: linear\nrun:\n  max_steps: 3\n  keep_last: 1\n")
    res = cli("finetune", "--from", source, "--out", tmp_path / "ft", "--config", config, "--max-steps", 2, "--dry-run")
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert spec["optim"]["lr"] == 0.0005 and spec["optim"]["schedule"] == "linear"  # the file over the run's
    assert spec["run"]["max_steps"] == 2 and spec["run"]["keep_last"] == 1  # the flag over the file
    assert spec["data"]["tasks"] == ["rec"] and spec["init_from"] == str(source.resolve())
    config.write_text("optim:\n  lr: -1\n")
    line = one_error_line(cli("finetune", "--from", source, "--out", tmp_path / "ft", "--config", config, "--dry-run"))
    assert f"{config}: invalid spec: optim.lr" in line


def test_finetune_dry_run_real_run_and_errors(cli, config, tmp_path):
    source = tmp_path / "base"
    assert cli("train", "--config", config, "--out", source).exit_code == 0
    res = cli("finetune", "--from", source, "--out", tmp_path / "ft", "--dry-run")
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert spec["data"]["tasks"] == ["rec"] and spec["optim"]["schedule"] == "constant"
    assert spec["init_from"] == str(source.resolve()) and spec["model"]["tiny"]["hidden_size"] == 32

    res = cli("finetune", "--from", source, "--out", tmp_path / "ft", "--max-steps", 1, "--log-every", 1)
    assert res.exit_code == 0, res.output + res.stderr
    assert (tmp_path / "ft" / "final" / "trainable.pt").is_file()
    assert set(read_metrics(tmp_path / "ft")[0]["task_loss"]) == {"rec"}

    res = cli("finetune", "--from", source, "--out", tmp_path / "ft2", "--tasks", "exp", "--lr", 5e-4, "--dry-run")
    assert json.loads(res.output)["data"]["tasks"] == ["exp"] and json.loads(res.output)["optim"]["lr"] == 5e-4
    line = one_error_line(cli("finetune", "--from", tmp_path, "--out", tmp_path / "ft3"))
    assert "not a run folder" in line
    line = one_error_line(cli("finetune", "--from", source, "--out", tmp_path / "ft4", "--schedule", "sawtooth"))
    assert "optim.schedule" in line


def test_train_lm_trains_and_saves_the_language_model(cli, config, tmp_path):
    frozen, full = tmp_path / "frozen", tmp_path / "full"
    assert cli("train", "--config", config, "--out", frozen, "--max-steps", 1, "--freeze-lm").exit_code == 0
    res = cli("train", "--config", config, "--out", full, "--max-steps", 1, "--train-lm")
    assert res.exit_code == 0, res.output + res.stderr
    assert json.loads((full / "train_spec.json").read_text())["model"]["train_lm"] is True
    a = torch.load(frozen / "final" / "trainable.pt", weights_only=True)
    b = torch.load(full / "final" / "trainable.pt", weights_only=True)
    body = sorted(set(b) - set(a))  # the language model's own layers, frozen without --train-lm
    assert body and all(k.startswith("lang_encoder.") for k in body)
    assert not any(k.startswith("vision_encoder.") for k in b)  # the vision tower stays frozen
    # one step changed the language model's weights (same init seed: the frozen run still has them as built)
    from unimp_core.model.setup import load_run

    start = load_run(frozen).bundle.model.state_dict()
    assert any(not torch.equal(b[k], start[k]) for k in body)


def test_sasrec_from_the_command_line(cli, data, tmp_path):
    res = cli("train", "--data", data, "--model", "sasrec", "--loss", "ce", "--out", tmp_path / "s", "--patience", "3",
              "--select-metric", "hr@10", "--dry-run")
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert spec["model"]["family"] == "sasrec" and spec["model"]["loss"] == "ce"
    assert spec["data"]["tasks"] == ["rec"] and spec["optim"]["batch_size"] == 128 and spec["run"]["patience"] == 3
    for args, message in [(["--model", "sasrec", "--tasks", "exp"], "SASRec trains task rec only"),
                          (["--model", "sasrec", "--train-lm"], "train_lm"),
                          (["--loss", "bce"], "--loss is a SASRec setting")]:
        res = cli("train", "--data", data, "--out", tmp_path / "x", *args, "--dry-run")
        assert res.exit_code == 1 and message in res.output, res.output
    res = cli("train", "--data", data, "--model", "sasrec", "--out", tmp_path / "run", "--max-steps", "3",
              "--eval-every", "3", "--batch-size", "16")
    assert res.exit_code == 0, res.output
    assert "best checkpoint:" in res.output
    res = cli("evaluate", "--run", tmp_path / "run", "--tasks", "exp")
    assert res.exit_code == 1 and "a sasrec run does rec only, not exp" in res.output
    res = cli("evaluate", "--run", tmp_path / "run", "--compare", tmp_path / "run", "--k", "10")
    assert res.exit_code == 1 and "named twice" in res.output


def test_compare_from_the_command_line(cli, data, tmp_path):
    for name, extra in (("a", ["--model", "sasrec"]), ("b", ["--model", "sasrec", "--loss", "bce"])):
        res = cli("train", "--data", data, "--out", tmp_path / name, "--max-steps", "2", "--batch-size", "16", *extra)
        assert res.exit_code == 0, res.output
    res = cli("evaluate", "--run", tmp_path / "a", "--compare", tmp_path / "b", "--exclude-history", "--k", "5,10")
    assert res.exit_code == 0, res.output
    table = res.output
    for text in ("NDCG@10", "popularity", "history items excluded", "ties pessimistic", "users",
                 "by the target's interactions in the training data"):
        assert text in table, text
    for run in ("a", "b"):  # each SASRec run gets its page: its loss curve and its rec table beside popularity
        [page] = [p.read_text() for p in (tmp_path / run / "evaluations").glob("*-test-exclude-history/report.html")]
        assert 'data-chart="run0-loss"' in page and 'data-chart="eval0-rec-bars"' in page
    res = cli("evaluate", "--run", tmp_path / "a", "--compare", tmp_path / "b", "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.output[res.output.index("{"):])
    rec = result["tasks"]["rec"]
    assert len(rec["runs"]) == 2 and rec["protocol"]["history_excluded"] is False
    users = {label: b["users"] for label, b in rec["popularity_by_popularity"].items()}
    assert list(users) == ["<5", "5-19", "20+"] and sum(users.values()) == rec["protocol"]["users"]
    for row in rec["runs"]:  # each run's figures per bucket, over the same users
        assert {label: b["users"] for label, b in row["by_popularity"].items()} == users
        assert set(row["by_popularity"]["20+"]) == {"users", *row["metrics"]}
    for label, n in users.items():  # the table: a section per bucket, named with its users
        assert f"{label} ({n:,} users)" in table, label
