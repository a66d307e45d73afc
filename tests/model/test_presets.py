"""The paper presets: their table, and their assembly without weights on the meta device."""

import pytest

from unimp_core.model.presets import PRESETS, resolve_preset
from unimp_core.specs.model import ModelSpec


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
    from unimp_core.model.factory import build_model

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
    from unimp_core.model.factory import build_model

    frozen = build_model(ModelSpec(preset="4b"), n_items=10, device="meta")
    full = build_model(ModelSpec(preset="4b", train_lm=True), n_items=10, device="meta")
    lm_body = sum(p.numel() for p in full.model.lang_encoder.old_decoder_blocks.parameters())
    assert full.trainable - frozen.trainable == pytest.approx(lm_body, rel=0.01)
    assert full.trainable + sum(p.numel() for p in full.model.vision_encoder.parameters()) == full.total
