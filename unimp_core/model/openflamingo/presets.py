"""The model presets, exactly as the UniMP seed code loads them (its `mmrec.py`), plus tiny and custom.

Each paper preset is an open_clip vision tower, a Hugging Face causal LM, a cross-attention interval and
an OpenFlamingo checkpoint repo holding `checkpoint.pt` (loaded with strict=False onto the assembled
model, as open_flamingo's README does). `lm_config` records each LM's architecture so the model can be
assembled without weights on the meta device (tests, parameter counts); it is never used for training.

The MPT models (3b, 3b-instruct, 9b) run the hub's own MosaicML code (`trust_remote_code`), which
cannot be fetched offline. Their `lm_config` is the same architecture written as transformers' built-in
MPT config (`model_type: mpt`): same sizes, same parameter count, same `transformer.blocks` layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .spec import ModelSpec

CHECKPOINT_FILE = "checkpoint.pt"

# open_clip's ViT-L-14 visual width: the Perceiver and cross-attention read features of this size.
_VIT_L_14 = "ViT-L-14"

_MPT_1B = {  # anas-awadalla/mpt-1b-redpajama-200b (MosaicGPT): 1.3B parameters, tied embeddings
    "model_type": "mpt", "d_model": 2048, "n_heads": 16, "n_layers": 24, "expansion_ratio": 4,
    "max_seq_len": 2048, "vocab_size": 50432, "no_bias": True, "tie_word_embeddings": True,
}
_RPJ_3B = {  # togethercomputer/RedPajama-INCITE-{Base,Instruct}-3B-v1: GPT-NeoX, 2.8B parameters
    "model_type": "gpt_neox", "hidden_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 32,
    "intermediate_size": 10240, "max_position_embeddings": 2048, "vocab_size": 50432, "rotary_pct": 1.0,
    "use_parallel_residual": False, "tie_word_embeddings": False,
}
_MPT_7B = {  # anas-awadalla/mpt-7b (mosaicml/mpt-7b): 6.7B parameters, tied embeddings
    "model_type": "mpt", "d_model": 4096, "n_heads": 32, "n_layers": 32, "expansion_ratio": 4,
    "max_seq_len": 2048, "vocab_size": 50432, "no_bias": True, "tie_word_embeddings": True,
}


@dataclass(frozen=True)
class Preset:
    """Everything the factory needs to know about one model, whatever its origin."""

    name: str
    vision: str | None  # open_clip model name; None for tiny (a config registered from the spec)
    vision_pretrained: str | None  # open_clip pretrained tag or file; None: random weights
    lm: str | None  # HF hub id or local folder; None for tiny (built from a config)
    tokenizer: str | None
    cross_attn_every_n_layers: int
    checkpoint: str | None  # local .pt file or hub repo holding CHECKPOINT_FILE
    lm_config: dict[str, Any] = field(default_factory=dict)  # meta-device assembly only

    @property
    def is_tiny(self) -> bool:
        return self.name == "tiny"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("3b", _VIT_L_14, "openai", "anas-awadalla/mpt-1b-redpajama-200b",
               "anas-awadalla/mpt-1b-redpajama-200b", 1, "openflamingo/OpenFlamingo-3B-vitl-mpt1b", _MPT_1B),
        Preset("3b-instruct", _VIT_L_14, "openai", "anas-awadalla/mpt-1b-redpajama-200b-dolly",
               "anas-awadalla/mpt-1b-redpajama-200b-dolly", 1,
               "openflamingo/OpenFlamingo-3B-vitl-mpt1b-langinstruct", _MPT_1B),
        Preset("4b", _VIT_L_14, "openai", "togethercomputer/RedPajama-INCITE-Base-3B-v1",
               "togethercomputer/RedPajama-INCITE-Base-3B-v1", 2, "openflamingo/OpenFlamingo-4B-vitl-rpj3b", _RPJ_3B),
        Preset("4b-instruct", _VIT_L_14, "openai", "togethercomputer/RedPajama-INCITE-Instruct-3B-v1",
               "togethercomputer/RedPajama-INCITE-Instruct-3B-v1", 2,
               "openflamingo/OpenFlamingo-4B-vitl-rpj3b-langinstruct", _RPJ_3B),
        Preset("9b", _VIT_L_14, "openai", "anas-awadalla/mpt-7b", "anas-awadalla/mpt-7b", 4,
               "openflamingo/OpenFlamingo-9B-vitl-mpt7b", _MPT_7B),
    )
}


def _every(spec: ModelSpec) -> int:
    """tiny/custom: the cross-attention interval (default 1; 0: no cross-attention layers)."""
    return 1 if spec.cross_attn_every_n_layers is None else spec.cross_attn_every_n_layers


def resolve_preset(spec: ModelSpec) -> Preset:
    """The concrete model a spec asks for (a paper preset, with the spec's checkpoint override; tiny; custom)."""
    if spec.preset == "tiny":
        return Preset("tiny", None, None, None, None, _every(spec), None)
    if spec.preset == "custom":
        return Preset(
            "custom", spec.vision, spec.vision_pretrained, spec.lm, spec.tokenizer or spec.lm,
            _every(spec), spec.checkpoint,
        )
    preset = PRESETS[spec.preset]
    if spec.checkpoint is not None:
        preset = Preset(**{**preset.__dict__, "checkpoint": spec.checkpoint})
    return preset
