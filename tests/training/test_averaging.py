"""optim.average_epochs: the moving average of the weights is what validation, best/ and final/ read; the
trained weights follow the same path without it, and a resumed run ends with the same average."""

from __future__ import annotations

import pytest
import torch

from unimp_core import run_folder as RF
from unimp_core.errors import UnimpError
from unimp_core.model import setup as S
from unimp_core.training import checkpoint as ckpt
from unimp_core.training import train as T
from unimp_core.training.averaging import WeightAverage

from .conftest import make_spec


def test_the_average_follows_the_parameters_and_leaves_them_as_trained():
    model = torch.nn.Linear(2, 1, bias=False)
    frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)
    model.register_parameter("frozen", frozen)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, horizon=4)
    assert average.names == ["weight"]
    expected = torch.zeros(2)
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update()
        weight = 1 / min(step, 4)  # the plain mean until the horizon, then 1/horizon a step
        expected = (1 - weight) * expected + weight * value
    with average.applied():
        assert torch.allclose(model.weight.detach(), expected.expand(1, 2))
    assert torch.equal(model.weight.detach(), torch.full((1, 2), 5.0))

    again = WeightAverage(model, horizon=4)
    again.load_state_dict(average.state_dict(), "here")
    with again.applied():
        assert torch.allclose(model.weight.detach(), expected.expand(1, 2))
    with pytest.raises(UnimpError, match="horizon"):
        WeightAverage(model, horizon=0.5)


def test_final_holds_the_average_the_path_is_unchanged_and_a_resumed_run_ends_the_same(sample_data, tmp_path):
    run = {"max_steps": 6, "save_every": 2, "keep_last": 5}
    averaged = {"average_epochs": 1.0, "schedule": "constant"}  # the same rates whatever max_steps
    plain = T.run_train(make_spec(sample_data, tmp_path / "plain", optim={"schedule": "constant"}, run=run))
    straight = T.run_train(make_spec(sample_data, tmp_path / "straight", optim=averaged, run=run))

    # the trained weights follow the same path; the checkpoint keeps the average beside them
    step4 = ckpt.load_checkpoint(RF.checkpoint_dir(straight, "step-4"))
    same = ckpt.load_checkpoint(RF.checkpoint_dir(plain, "step-4"))
    assert all(torch.equal(step4["weights"][n], same["weights"][n]) for n in same["weights"])
    assert step4["average"]["updates"] == 4
    assert any(not torch.equal(step4["average"]["weights"][n], step4["weights"][n]) for n in step4["weights"])
    # final/ is the average, not the trained weights
    final, trained = S.load_weights(straight), S.load_weights(plain)
    assert any(not torch.equal(final[n], trained[n]) for n in final)

    T.run_train(make_spec(sample_data, tmp_path / "split", optim=averaged, run={**run, "max_steps": 4}))
    resumed = T.run_train(make_spec(sample_data, tmp_path / "split", optim=averaged, run={**run, "resume": True}))
    again = S.load_weights(resumed)
    assert all(torch.equal(final[n], again[n]) for n in final)


def test_bf16_weights_are_averaged_in_float32():
    """A step's 1/horizon share is below bf16's resolution near 1: a bf16 average would never move."""
    model = torch.nn.Linear(1, 1, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average = WeightAverage(model, horizon=500)
    for _ in range(500):
        average.update()
    with torch.no_grad():
        model.weight.fill_(1.5)
    for _ in range(100):
        average.update()
    assert average.average[0].dtype == torch.float32
    assert 1.0 < float(average.average[0]) < 1.5
    with average.applied():
        assert model.weight.dtype == torch.bfloat16 and 1.0 < float(model.weight.detach()) < 1.5
    assert float(model.weight.detach()) == 1.5
