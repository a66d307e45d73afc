import pytest
import torch

from unimp_core.errors import UnimpError
from unimp_core.training.optim import build_optimizer, build_scheduler, decays, lr_at, param_groups


@pytest.mark.parametrize("kind, step, expected", [
    # total 100, warmup 10% = 10 steps, base 1e-3
    ("constant", 0, 0.0), ("constant", 5, 5e-4), ("constant", 10, 1e-3), ("constant", 99, 1e-3),
    ("linear", 5, 5e-4), ("linear", 10, 1e-3), ("linear", 55, 5e-4), ("linear", 91, 1e-4), ("linear", 100, 0.0),
    ("cosine", 10, 1e-3), ("cosine", 40, 7.5e-4), ("cosine", 55, 5e-4), ("cosine", 70, 2.5e-4), ("cosine", 100, 0.0),
])
def test_lr_at_hand_points(kind, step, expected):
    assert lr_at(step, 100, 1e-3, 0.1, kind) == pytest.approx(expected, abs=1e-12)


def test_lr_without_warmup_and_past_the_end():
    assert lr_at(0, 10, 2.0, 0.0, "linear") == 2.0
    assert lr_at(15, 10, 2.0, 0.0, "linear") == 0.0
    assert lr_at(15, 10, 2.0, 0.0, "cosine") == pytest.approx(0.0)
    # int(0.25 * 10) = 2 warmup steps
    assert [lr_at(s, 10, 2.0, 0.25, "constant") for s in range(4)] == [0.0, 1.0, 2.0, 2.0]
    with pytest.raises(UnimpError, match="unknown schedule"):
        lr_at(0, 10, 1.0, 0.0, "step")


def test_lr_decays_to_a_floor():
    # warmup int(0.1 * 100) = 10 steps; half way through the decay cosine is at 0.5: 1e-3 * (0.1 + 0.9 * 0.5)
    assert lr_at(55, 100, 1e-3, 0.1, "cosine", floor=0.1) == pytest.approx(5.5e-4, abs=1e-12)
    assert lr_at(100, 100, 2.0, 0.0, "linear", floor=0.25) == pytest.approx(0.5)
    assert lr_at(3, 100, 2.0, 0.1, "cosine", floor=0.25) == pytest.approx(0.6)  # warmup ignores the floor


def test_scheduler_follows_lr_at_and_resumes():
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, lr=1e-3)
    sched = build_scheduler(opt, total_steps=20, warmup_ratio=0.2, kind="cosine")
    seen = []
    for step in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(s, 20, 1e-3, 0.2, "cosine") for s in range(20)])
    # a fresh scheduler loaded from a state dict continues where the old one was
    opt2 = build_optimizer(model, lr=1e-3)
    sched2 = build_scheduler(opt2, total_steps=20, warmup_ratio=0.2, kind="cosine")
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(lr_at(20, 20, 1e-3, 0.2, "cosine"))
    with pytest.raises(UnimpError, match=r"at least one step \(got total_steps=0\)"):
        build_scheduler(opt, total_steps=0)
    with pytest.raises(UnimpError, match=r"unknown schedule 'exp' \(choose constant, linear, cosine\)"):
        build_scheduler(opt, total_steps=10, kind="exp")


def _flamingo_like():
    from open_flamingo.src.helpers import GatedCrossAttentionBlock, PerceiverResampler

    class Lang(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 8)
            self.gated_cross_attn_layers = torch.nn.ModuleList(
                [GatedCrossAttentionBlock(dim=8, dim_visual=8, dim_head=4, heads=2)])
            self.body = torch.nn.Linear(8, 8)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.perceiver = PerceiverResampler(dim=8, depth=1, dim_head=4, heads=2, num_latents=2)
            self.lang_encoder = Lang()
            self.vision = torch.nn.Linear(3, 8)

    model = Model()
    model.vision.requires_grad_(False)
    model.lang_encoder.body.requires_grad_(False)
    return model


def test_weight_decay_only_on_cross_attention_matrices():
    model = _flamingo_like()
    decayed = {n for n, p in model.named_parameters() if decays(n, p)}
    prefix = "lang_encoder.gated_cross_attn_layers.0."
    assert decayed == {prefix + n for n in
                       ("attn.to_q.weight", "attn.to_kv.weight", "attn.to_out.weight", "ff.1.weight", "ff.3.weight")}
    groups = param_groups(model.named_parameters(), weight_decay=0.1)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    ids0 = {id(p) for p in groups[0]["params"]}
    ids1 = {id(p) for p in groups[1]["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in ids0} == decayed
    # frozen parameters stay out of the optimizer; gates, norms, perceiver and embeddings go undecayed
    assert not any(names[i].startswith(("vision", "lang_encoder.body")) for i in ids0 | ids1)
    assert {prefix + "attn_gate", prefix + "ff_gate", prefix + "attn.norm.weight", prefix + "ff.0.weight",
            "lang_encoder.embed.weight"} <= {names[i] for i in ids1}
    assert any(names[i].startswith("perceiver") for i in ids1)


def test_decay_scope_all_decays_every_trained_matrix_and_embedding():
    model = _flamingo_like()
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    groups = param_groups(model.named_parameters(), weight_decay=0.1, scope="all")
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    assert decayed == {n for n, p in trained.items() if decays(n, p, "all")}
    assert "lang_encoder.embed.weight" in decayed and any(n.startswith("perceiver") for n in decayed)
    assert decayed > {n for n, p in trained.items() if decays(n, p)}  # the cross-attention matrices too
    # 1-D weights (norms, biases, gates) and frozen ones stay undecayed
    assert all(trained[n].ndim >= 2 for n in decayed)
    prefix = "lang_encoder.gated_cross_attn_layers.0."
    assert {prefix + "attn_gate", prefix + "attn.norm.weight", prefix + "ff.0.weight"} <= {
        names[id(p)] for p in groups[1]["params"]}
    assert not any(n.startswith(("vision", "lang_encoder.body")) for n in decayed)


def test_optimizer_needs_trainable_parameters():
    model = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(UnimpError, match="no trainable"):
        build_optimizer(model, lr=1e-3)
