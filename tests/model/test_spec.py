import pytest
from pydantic import ValidationError

from unimp_core.model.openflamingo.spec import PRESET_NAMES, ModelSpec, TinyModelSpec


def test_defaults_are_tiny_with_its_lm_trained():
    spec = ModelSpec()
    assert spec.preset == "tiny" and spec.train_lm is True and spec.image_gen_codes == 0


@pytest.mark.parametrize("preset", [p for p in PRESET_NAMES if p not in ("tiny", "custom")])
def test_openflamingo_presets_keep_the_paper_freezing(preset):
    assert ModelSpec(preset=preset).train_lm is False
    assert ModelSpec(preset="custom", vision="ViT-B-32", lm="x").train_lm is False
    assert ModelSpec(preset=preset, train_lm=True).train_lm is True
    assert ModelSpec(train_lm=False).train_lm is False
    assert ModelSpec.model_validate(ModelSpec().model_dump()).train_lm is True  # saved resolved


def test_every_field_is_described():
    for cls in (ModelSpec, TinyModelSpec):
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name} has no description"


def test_unknown_key_is_rejected():
    with pytest.raises(ValidationError, match="extra"):
        ModelSpec.model_validate({"preset": "tiny", "hidden": 3})


def test_custom_needs_lm_and_vision():
    with pytest.raises(ValidationError, match="custom needs vision and lm"):
        ModelSpec(preset="custom")
    spec = ModelSpec(preset="custom", vision="ViT-B-32", lm="/models/my-lm", cross_attn_every_n_layers=2)
    assert spec.lm == "/models/my-lm"


def test_presets_fix_their_parts():
    with pytest.raises(ValidationError, match="only for --model custom"):
        ModelSpec(preset="4b-instruct", lm="other/lm")
    with pytest.raises(ValidationError, match="fixes it"):
        ModelSpec(preset="9b", cross_attn_every_n_layers=1)
    with pytest.raises(ValidationError, match="takes no OpenFlamingo checkpoint"):
        ModelSpec(preset="tiny", checkpoint="x.pt")
    assert ModelSpec(preset="4b", checkpoint="/ckpt/checkpoint.pt").checkpoint == "/ckpt/checkpoint.pt"


def test_tiny_sizes_must_divide():
    with pytest.raises(ValidationError, match="multiple of heads"):
        TinyModelSpec(hidden_size=66, heads=4)
    with pytest.raises(ValidationError, match="multiple of patch_size"):
        TinyModelSpec(image_size=30, patch_size=8)


def test_preset_names_match_the_table():
    from unimp_core.model.openflamingo.presets import PRESETS as TABLE

    assert set(PRESET_NAMES) == set(TABLE) | {"tiny", "custom"}


def test_spec_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, unimp_core.specs.model, unimp_core.model.openflamingo.spec; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tiny_dropout_reaches_the_lm_config():
    from unimp_core.model.openflamingo.factory import standin_tokenizer, tiny_lm_config

    tok = standin_tokenizer(300)
    neox = tiny_lm_config(TinyModelSpec(dropout=0.2), 300, tok)
    assert neox.hidden_dropout == 0.2 and neox.attention_dropout == 0.2
    assert tiny_lm_config(TinyModelSpec(lm_arch="llama", dropout=0.1), 300, tok).attention_dropout == 0.1
    assert tiny_lm_config(TinyModelSpec(), 300, tok).hidden_dropout == 0.0
