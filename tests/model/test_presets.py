"""The paper presets: their table, and their assembly without weights on the meta device."""

import pytest

from unimp_core.model.openflamingo.presets import PRESETS, resolve_preset
from unimp_core.model.openflamingo.spec import ModelSpec


def test_table_is_the_seeds():
    expected = {  # name: (LM, cross-attention interval, checkpoint repo), from the paper's code's mmrec.py
        "3b": ("anas-awadalla/mpt-1b-redpajama-200b", 1, "openflamingo/OpenFlamingo-3B-vitl-mpt1b"),
        "3b-instruct": ("anas-awadalla/mpt-1b-redpajama-200b-dolly", 1,
                        "openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct"),
        "4b": ("togethercomputer/RedPajama-INCITE-Base-3B-v1", 2, "openflamingo/OpenFlamingo-4B-vitl-rpj3b"),
        "4b-instruct": ("togethercomputer/RedPajama-INCITE-Instruct-3B-v1", 2,
                        "openflamingo/OpenFlamingo-4B-vitl-rpj3b-langinstruct"),
        "9b": ("anas-awadalla/mpt-7b", 4, "openflamingo/OpenFlamingo-9B-vitl-mpt7b"),
    }
    for name, (lm, every, ckpt) in expected.items():
        p = PRESETS[name]
        assert (p.vision, p.vision_pretrained) == ("ViT-L-14", "openai")
        assert (p.lm, p.tokenizer, p.cross_attn_every_n_layers, p.checkpoint) == (lm, lm, every, ckpt)


def test_resolve_custom_and_override():
    custom = resolve_preset(ModelSpec(preset="custom", vision="ViT-B-32", lm="/m", cross_attn_every_n_layers=3))
    assert (custom.vision, custom.lm, custom.tokenizer, custom.cross_attn_every_n_layers) == ("ViT-B-32", "/m", "/m", 3)
    assert custom.checkpoint is None
    over = resolve_preset(ModelSpec(preset="4b-instruct", checkpoint="/c.pt"))
    assert over.checkpoint == "/c.pt" and over.lm == PRESETS["4b-instruct"].lm


# (preset, total parameters, trainable parameters) ranges in billions. OpenFlamingo reports 3B / 4B / 9B
# models with ~1.05B / ~1.0B / ~1.4B trainable; here the input and output embeddings (and 12k item rows)
# are trainable too.
RANGES = {
    "3b": ((2.4, 3.3), (0.95, 1.2)),
    "4b": ((3.8, 4.4), (1.0, 1.4)),
    "9b": ((7.8, 9.0), (1.2, 1.7)),
}


@pytest.mark.parametrize("name", ["3b", "3b-instruct", "4b", "4b-instruct", "9b"])
def test_meta_assembly_parameter_counts(name):
    from unimp_core.model.openflamingo.factory import build_model

    bundle = build_model(ModelSpec(preset=name), n_items=12094, device="meta")
    model = bundle.model
    assert next(model.parameters()).device.type == "meta"
    (lo, hi), (tlo, thi) = RANGES[name.removesuffix("-instruct")]
    assert lo < bundle.total / 1e9 < hi, bundle.total
    assert tlo < bundle.trainable / 1e9 < thi, bundle.trainable
    # 50277 (gpt-neox-20b tokenizer) + 3 OpenFlamingo tokens + <answer> + 5 ratings + 5 slots + items
    assert model.lang_encoder.get_input_embeddings().weight.shape[0] == 50280 + 11 + 12094
    assert bundle.image_size == 224
    every = PRESETS[name].cross_attn_every_n_layers
    layers = model.lang_encoder.gated_cross_attn_layers
    assert sum(x is not None for x in layers) == len(layers) // every
    assert not any(p.requires_grad for p in model.vision_encoder.parameters())
    assert bundle.ids.items.device.type == "cpu" and bundle.ids.n_items == 12094


def test_meta_assembly_train_lm_trains_the_lm():
    from unimp_core.model.openflamingo.factory import build_model

    frozen = build_model(ModelSpec(preset="4b"), n_items=10, device="meta")
    full = build_model(ModelSpec(preset="4b", train_lm=True), n_items=10, device="meta")
    lm_body = sum(p.numel() for p in full.model.lang_encoder.old_decoder_blocks.parameters())
    assert full.trainable - frozen.trainable == pytest.approx(lm_body, rel=0.01)
    assert full.trainable + sum(p.numel() for p in full.model.vision_encoder.parameters()) == full.total


# ------------------------------------------------------------------------ OpenFlamingo checkpoint keys


def _checkpoint_file(keys: dict[str, tuple[int, ...]], path):
    """A checkpoint.pt with the recorded names and shapes (meta tensors: no data, no memory)."""
    import torch

    torch.save({name: torch.empty(shape, device="meta") for name, shape in keys.items()}, path)
    return str(path)


def _is_new_module(name: str) -> bool:
    return name.startswith("perceiver.") or ".gated_cross_attn_layer." in name


@pytest.mark.parametrize("name", ["3b", "3b-instruct", "4b", "4b-instruct", "9b"])
def test_openflamingo_checkpoint_fits_the_preset(name, tmp_path):
    """Every tensor of the preset's checkpoint (tests/assets/openflamingo/checkpoint-keys.txt) maps onto the
    model built for the preset with its shape, and every trainable parameter gets loaded."""
    from tests.model.openflamingo_keys import read_keys
    from unimp_core.model.openflamingo.factory import build_model

    keys = read_keys()[name]
    new = {k for k in keys if _is_new_module(k)}
    every = PRESETS[name].cross_attn_every_n_layers
    layers = {"3b": 24, "4b": 32, "9b": 32}[name.removesuffix("-instruct")]
    assert sum(k.endswith(".attn_gate") for k in new) == layers // every  # one gate per cross-attention layer
    assert any(k.startswith("perceiver.") for k in new)

    bundle = build_model(ModelSpec(preset=name, checkpoint=_checkpoint_file(keys, tmp_path / "checkpoint.pt")),
                         n_items=10, device="meta")
    report = bundle.checkpoint
    assert report["tensors"] == len(keys)
    assert report["ignored"] == []  # every recorded name is a tensor of this model, of the recorded shape
    lm = bundle.model.lang_encoder
    if name.startswith("4b"):
        # RedPajama's output embedding is untied and OpenFlamingo leaves it frozen: under transformers 5 its
        # name has no "embed", so open_flamingo's filter leaves it out and it is the LM's own pretrained weight
        assert report["unloaded_trainable"] == ["lang_encoder.lm_head.weight"]
        assert lm.get_output_embeddings().weight is dict(bundle.model.named_parameters())["lang_encoder.lm_head.weight"]
    else:  # Perceiver, cross-attention and the (tied) embeddings: all from the checkpoint
        assert report["unloaded_trainable"] == []
    state = bundle.model.state_dict()
    for key in new:
        assert tuple(state[key].shape) == keys[key], key


def test_a_transformers_4_checkpoint_fills_the_output_embedding(tmp_path):
    """The released RedPajama checkpoints name the output embedding embed_out (transformers 4): it is loaded."""
    from tests.model.openflamingo_keys import read_keys
    from unimp_core.model.openflamingo.factory import build_model

    keys = {**read_keys()["4b"], "lang_encoder.embed_out.weight": (50280, 2560)}
    bundle = build_model(ModelSpec(preset="4b", checkpoint=_checkpoint_file(keys, tmp_path / "c.pt")), n_items=3,
                         device="meta")
    assert bundle.checkpoint["ignored"] == [] and bundle.checkpoint["unloaded_trainable"] == []


def test_a_partial_checkpoint_is_refused(tmp_path):
    """Non-strict loading must not let a checkpoint of another shape or layout through half-loaded."""
    from tests.model.openflamingo_keys import read_keys
    from unimp_core.errors import UnimpError
    from unimp_core.model.openflamingo.factory import build_model

    keys = read_keys()["3b"]
    xattn = next(k for k in keys if ".gated_cross_attn_layer." in k)
    partial = _checkpoint_file({k: v for k, v in keys.items() if k != xattn}, tmp_path / "partial.pt")
    with pytest.raises(UnimpError, match=r"lacks 1 Perceiver/cross-attention tensors of this model, e\.g\. "):
        build_model(ModelSpec(preset="3b", checkpoint=partial), n_items=10, device="meta")
    # the 3B checkpoint on the 9B model: same names for the first layers, other widths
    wrong = _checkpoint_file(keys, tmp_path / "3b.pt")
    with pytest.raises(UnimpError, match="does not fit this model"):
        build_model(ModelSpec(preset="9b", checkpoint=wrong), n_items=10, device="meta")


@pytest.mark.slow
def test_recorded_checkpoint_keys_are_what_open_flamingo_derives_here():
    """The recorded file is current: open_flamingo's factory and filter, run again, give the same tensors."""
    from tests.model.openflamingo_keys import GROUPS, checkpoint_keys, read_keys

    recorded = read_keys()
    for first, names in GROUPS.items():
        derived = dict(checkpoint_keys(first))
        for name in names:
            assert recorded[name] == derived, f"{name}: rerun python -m tests.model.openflamingo_keys"
