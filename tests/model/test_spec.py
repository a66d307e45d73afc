import pytest
from pydantic import ValidationError

from unimp_core.specs.model import PRESET_NAMES, ModelSpec, TinyModelSpec


def test_defaults_are_tiny_and_frozen_lm():
    spec = ModelSpec()
    assert spec.preset == "tiny" and spec.train_lm is False and spec.image_gen_codes == 0


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
    from unimp_core.model.presets import PRESETS as TABLE

    assert set(PRESET_NAMES) == set(TABLE) | {"tiny", "custom"}


def test_spec_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, unimp_core.specs.model; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
