"""The tensors of each paper preset's OpenFlamingo `checkpoint.pt`, derived from open_flamingo's own code.

The real checkpoints (3-9 GB each) cannot be downloaded here. What they hold follows from how they were
made: open_flamingo's `create_model_and_transforms` assembles the model (its own factory, run here with
the weights left out: everything on the meta device, the vision tower without pretrained weights, the
language model built from its config, a stand-in tokenizer of the GPT-NeoX-20B length), and its
training script saves `filter_state_dict_to_trainable(model, model.state_dict())`. This module does
exactly that and writes every name and shape to tests/assets/openflamingo/checkpoint-keys.txt:

    /work/main/.venv/bin/python -m tests.model.openflamingo_keys     # rewrite the file
"""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path
from unittest import mock

KEYS_FILE = Path(__file__).resolve().parents[1] / "assets" / "openflamingo" / "checkpoint-keys.txt"
GPT_NEOX_20B_TOKENIZER = 50277  # len(AutoTokenizer.from_pretrained("EleutherAI/gpt-neox-20b")), all five LMs
# presets with the same architecture (the instruct checkpoints are the same modules, other weights)
GROUPS = {"3b": ("3b", "3b-instruct"), "4b": ("4b", "4b-instruct"), "9b": ("9b",)}
HEADER = """\
# Tensors of the OpenFlamingo checkpoint.pt of each paper preset: name, then shape.
# Derived, not read from the real files (no download here): open_flamingo's own create_model_and_transforms
# assembled each model on the meta device (vision tower without pretrained weights, language model from
# the config in unimp_core/model/openflamingo/presets.py, a stand-in tokenizer of the GPT-NeoX-20B length 50277), and
# open_flamingo's filter_state_dict_to_trainable (what its train.py saves) chose the tensors.
# The MPT language models are transformers' built-in MPT (the hub's MosaicGPT code cannot run offline):
# the Perceiver, cross-attention and embedding names are the same (transformer.blocks, transformer.wte).
# Regenerate: python -m tests.model.openflamingo_keys
"""


def _filter_state_dict_to_trainable():
    """open_flamingo's own function, taken from its installed source: its module imports wandb, which a
    machine without experiment tracking lacks."""
    import open_flamingo.train as train_pkg
    import torch

    path = Path(train_pkg.__file__).parent / "train_utils.py"
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "filter_state_dict_to_trainable")
    scope = {"torch": torch}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), scope)
    return scope["filter_state_dict_to_trainable"]


def checkpoint_keys(preset_name: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor open_flamingo would save for this preset, in state-dict order."""
    import open_clip
    import torch
    from open_flamingo.src import factory as of_factory
    from transformers import AutoConfig, AutoModelForCausalLM

    from unimp_core.model.openflamingo.factory import standin_tokenizer
    from unimp_core.model.openflamingo.presets import PRESETS

    preset = PRESETS[preset_name]
    real_clip = open_clip.create_model_and_transforms

    def clip_without_weights(name, pretrained=None, **kw):
        return real_clip(name, pretrained=None, device="meta")

    def lm_from_config(path, **kw):
        assert path == preset.lm
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**preset.lm_config))

    patches = [
        mock.patch.object(of_factory.open_clip, "create_model_and_transforms", clip_without_weights),
        mock.patch.object(of_factory.AutoTokenizer, "from_pretrained",
                          lambda *a, **kw: standin_tokenizer(GPT_NEOX_20B_TOKENIZER)),
        mock.patch.object(of_factory.AutoModelForCausalLM, "from_pretrained", lm_from_config),
    ]
    with contextlib.ExitStack() as stack, torch.device("meta"):
        for p in patches:
            stack.enter_context(p)
        stack.enter_context(contextlib.redirect_stdout(None))  # its "initialized with N parameters" print
        model, _, _ = of_factory.create_model_and_transforms(
            preset.vision, preset.vision_pretrained, preset.lm, preset.tokenizer,
            cross_attn_every_n_layers=preset.cross_attn_every_n_layers)
    state = _filter_state_dict_to_trainable()(model, model.state_dict())
    return [(name, tuple(t.shape)) for name, t in state.items()]


def read_keys(path: Path = KEYS_FILE) -> dict[str, dict[str, tuple[int, ...]]]:
    """preset name -> {tensor name: shape}, from the file."""
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    current: list[str] = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]").split()
            for name in current:
                out[name] = {}
            continue
        name, shape = line.split()
        for preset in current:
            out[preset][name] = tuple(int(x) for x in shape.split("x")) if shape != "scalar" else ()
    return out


def write_keys(path: Path = KEYS_FILE) -> None:
    lines = [HEADER]
    for first, names in GROUPS.items():
        lines.append(f"[{' '.join(names)}]")
        lines += [f"{name} {'x'.join(map(str, shape)) or 'scalar'}" for name, shape in checkpoint_keys(first)]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    write_keys()
    print(f"wrote {KEYS_FILE}")
