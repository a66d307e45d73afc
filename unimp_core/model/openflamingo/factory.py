"""The one model factory: spec -> OpenFlamingo model + tokenizer + image transform + token ids.

Every preset takes the same path (open_flamingo's `create_model_and_transforms`, reorganised so tiny
and meta-device builds fit in):
  tokenizer (trained / loaded) + `<|endofchunk|>`, `<image>`, pad
  -> open_clip vision tower (`output_tokens=True`) -> causal LM + FlamingoLMMixin -> resize embeddings
  -> Flamingo(...) (tiny: a smaller Perceiver) -> OpenFlamingo checkpoint (strict=False)
  -> UniMP tokens (sized from the dataset: one per item, or semantic ids' code tokens) -> resize, new rows = mean (tiny: random, as its LM) -> freeze -> trainable count.
Downloads happen only here (open_clip weights, the LM, its tokenizer, the checkpoint); tiny needs none.

A run folder rebuilds its model offline: `save_bundle(bundle, run_dir)` writes `model.json` (the model
family, spec and catalogue size), `tokenizer/` and, for semantic item ids, `item_codes.npy`; `load_bundle(run_dir)`
reads them back. The trainable
weights themselves are the training checkpoint's business (`unimp_core.model.setup.trainable_state`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch
from torch import nn

from ... import run_folder as RF
from ...errors import UnimpError, first_line
from ...data.store import Dataset
from ...progress import Progress
from .presets import CHECKPOINT_FILE, Preset, resolve_preset
from .spec import ModelSpec, TinyModelSpec
from ..tokenizer import dataset_texts, load_tokenizer, save_tokenizer, train_bpe_tokenizer
from ..vocab import (VocabIds, add_flamingo_tokens, add_unimp_tokens, base_vocab_size, flamingo_vocab_size,
                    resize_embeddings, scale_input_embeddings, vocab_ids)
from .mixins import (EmbeddingFnMixin, LabelLogitsMixin, NoImageBatchMixin, OptionalMaskMixin, fp32_kwargs,
                     lacks_input_embeddings, set_generation_tokens)

if TYPE_CHECKING:
    from open_flamingo import Flamingo

    from ...itemcodes.codes import ItemCodes
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Length of EleutherAI/gpt-neox-20b's tokenizer, which RedPajama-INCITE and the MPT models all use:
# the meta-device assembly of a paper preset stands in a tokenizer of this size (no download).
GPT_NEOX_TOKENIZER_SIZE = 50277


@dataclass
class ModelBundle:
    """What the factory returns: the model and everything needed to feed it."""

    model: "Flamingo"
    tokenizer: "PreTrainedTokenizerBase"
    image_transform: Callable  # PIL image -> (C, H, W) float tensor
    ids: VocabIds
    image_size: int
    trainable: int  # number of trainable parameters
    total: int  # number of parameters
    spec: ModelSpec
    n_items: int
    checkpoint: dict[str, Any] | None = None  # what loading the OpenFlamingo checkpoint filled (None: none loaded)
    item_codes: "ItemCodes | None" = None  # semantic item ids: every item's code tuple (None: atomic ids)
    item_attributes: "tuple[list[str], list[list[int]]] | None" = None  # added to the item tokens (item_content)


def build_model(
    spec: ModelSpec,
    *,
    items_text: "Iterable[str] | Dataset | None" = None,
    n_items: int,
    device: str | torch.device = "cpu",
    tokenizer_dir: str | Path | None = None,
    tokenizer: "PreTrainedTokenizerBase | None" = None,
    progress: Progress | None = None,
    item_codes: "ItemCodes | None" = None,
    item_attributes: "tuple[list[str], list[list[int]]] | None" = None,
) -> ModelBundle:
    """Build the OpenFlamingo model a spec names, with its vocabulary extended for `n_items` items.

    Args:
        spec: the model spec (preset, sizes, what is trained).
        items_text: the dataset, or any texts (e.g. the dataset's chained with the tasks' prompt
            phrases), the tiny tokenizer is trained on; unused otherwise.
        n_items: catalogue size: one `item_<i>` token per item id 0..n_items-1.
        device: where the model lives; "meta" assembles it without weights (no download, no memory).
        tokenizer_dir: a saved (possibly already extended) tokenizer to use instead of training/loading one.
        tokenizer: a tokenizer object to use as is (it is extended in place).
        progress: where steps are reported (silent by default).
        item_codes: the items' code tuples; required when `spec.item_ids` is semantic (the vocabulary then
            holds code tokens, no `item_<i>`), refused otherwise (auto builds atomic ids: the choice is
            `unimp_core.model.item_ids.choose_item_ids`'s).
        item_attributes: (attribute vocabulary, each item's attribute indices): their embeddings are added to
            the item tokens' rows (`model.item_content`; atomic ids only).
    Returns:
        A ModelBundle; its `trainable` count was checked against the modules meant to train.
    """
    progress = progress or Progress()
    preset = resolve_preset(spec)
    _check_item_codes(spec, item_codes)
    if isinstance(items_text, Dataset) and items_text.items.height != n_items:
        raise UnimpError(f"model: n_items is {n_items} but the dataset has {items_text.items.height} items")
    meta = torch.device(device).type == "meta"
    if meta and not preset.is_tiny and not preset.lm_config:
        raise UnimpError(f"model.preset {spec.preset}: no known LM config to assemble on the meta device")
    with torch.random.fork_rng(devices=[]), (torch.device("meta") if meta else contextlib.nullcontext()):
        torch.manual_seed(spec.init_seed)
        with progress.task("building model", total=None) as advance:
            tok = tokenizer if tokenizer is not None else _base_tokenizer(spec, preset, items_text, tokenizer_dir, meta)
            base_vocab = base_vocab_size(tok)  # the tiny LM's own vocabulary, fresh or saved tokenizer alike
            add_flamingo_tokens(tok)
            advance(1)
            vision, transform, vis_dim, image_size = _vision_tower(spec, preset, meta)
            advance(1)
            lm = _language_model(spec, preset, meta, base_vocab, tok)
            advance(1)
            model = _assemble(spec, preset, vision, lm, tok, vis_dim)
            report = None
            # on the meta device only a local file is read: its names and shapes are checked, nothing is copied
            if preset.checkpoint is not None and (not meta or Path(preset.checkpoint).is_file()):
                report = _load_checkpoint(model, preset.checkpoint, progress, local_files_only=spec.local_files_only,
                                          meta=meta)
            add_unimp_tokens(tok, n_items, spec.image_gen_codes, item_codes)
            resize_embeddings(model.lang_encoder, len(tok), std=new_row_std(preset, lm))
            set_generation_tokens(model.lang_encoder, tok)
            ids = vocab_ids(tok, n_items, spec.image_gen_codes, item_codes)
            if item_attributes is not None:
                _add_item_content(model.lang_encoder, ids, item_attributes, new_row_std(preset, lm) or 0.02, spec)
            if preset.is_tiny and spec.tiny.scale_embeddings:
                scale_input_embeddings(model.lang_encoder, math.sqrt(spec.tiny.hidden_size))
            trainable = freeze(model, train_lm=spec.train_lm)
            advance(1)
    if not meta and torch.device(device).type != "cpu":
        model.to(device)
    total = sum(p.numel() for p in model.parameters())
    progress.log(f"model {spec.preset}: {trainable:,} trainable of {total:,} parameters")
    return ModelBundle(model, tok, transform, ids, image_size, trainable, total, spec, n_items, report, item_codes,
                       item_attributes)


def _add_item_content(lm, ids, item_attributes, std: float, spec: ModelSpec) -> None:
    from ..item_content import ItemContent, attach

    if ids.semantic:
        raise UnimpError("item attributes are added to atomic item ids (model.item_ids atomic), not to semantic ids")
    vocab, per_item = item_attributes
    hidden = lm.get_input_embeddings().embedding_dim
    content = ItemContent(len(vocab), hidden, per_item, std=std, dropout=spec.attribute_dropout,
                          loss_weight=spec.attribute_loss)
    attach(lm, content, ids.items, fusion=spec.attribute_fusion)


def _check_item_codes(spec: ModelSpec, item_codes: "ItemCodes | None") -> None:
    if spec.item_ids != "semantic":
        if item_codes is not None:
            raise UnimpError(f"model: item codes given but model.item_ids is {spec.item_ids} (semantic uses them)")
        return
    if item_codes is None:
        raise UnimpError("model: item_ids semantic needs the items' codes (`unimp tokenize-items`)")
    record = spec.item_codes
    if record is not None and (record.levels, record.codes, record.collision_codes) != (
            item_codes.levels, item_codes.codes, item_codes.collision_codes):
        raise UnimpError(f"model: item codes of {item_codes.levels} levels x {item_codes.codes} codes + "
                         f"{item_codes.collision_codes} do not match model.item_codes ({record.levels} x "
                         f"{record.codes} + {record.collision_codes})")


# ---------------------------------------------------------------------------------------- tokenizer


def _base_tokenizer(spec: ModelSpec, preset: Preset, items_text, tokenizer_dir, meta: bool):
    if tokenizer_dir is not None:
        return load_tokenizer(tokenizer_dir, trust_remote_code=spec.trust_remote_code, local_files_only=True)
    if preset.is_tiny:
        if items_text is None:
            raise UnimpError("model: the tiny preset trains its tokenizer on the dataset's text; none was given")
        if isinstance(items_text, Dataset):
            texts = dataset_texts(items_text)
        else:
            texts = [items_text] if isinstance(items_text, str) else items_text
        return train_bpe_tokenizer(texts, spec.tiny.vocab_size)
    if meta:
        return standin_tokenizer(GPT_NEOX_TOKENIZER_SIZE)
    return load_tokenizer(preset.tokenizer, trust_remote_code=spec.trust_remote_code,
                          local_files_only=spec.local_files_only)


def standin_tokenizer(size: int) -> "PreTrainedTokenizerBase":
    """A word-level tokenizer with `size` entries (an end-of-text token among them): it stands in for a
    hub tokenizer of that length when a preset is assembled on the meta device, offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")


# ------------------------------------------------------------------------------------- vision tower


def tiny_vision_config(tiny: TinyModelSpec) -> tuple[str, dict[str, Any]]:
    """The open_clip config (name, dict) of the tiny ViT; its text tower is minimal and discarded."""
    name = (f"unimp-tiny-vit-w{tiny.vision_width}-l{tiny.vision_layers}-hw{tiny.vision_head_width}"
            f"-p{tiny.patch_size}-i{tiny.image_size}")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": tiny.image_size, "layers": tiny.vision_layers, "width": tiny.vision_width,
                       "head_width": tiny.vision_head_width, "patch_size": tiny.patch_size, "mlp_ratio": 4.0},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 1, "layers": 1},
    }
    return name, cfg


def register_tiny_vision(tiny: TinyModelSpec) -> str:
    """Register the tiny ViT with open_clip (once) and return its model name."""
    import tempfile

    import open_clip

    name, cfg = tiny_vision_config(tiny)
    if name in open_clip.list_models():
        return name
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(cfg))
        open_clip.add_model_config(path)  # the registry keeps the config after the file is gone
    return name


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # open_clip warns on the root logger for random weights, which tiny and meta builds want
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _vision_tower(spec: ModelSpec, preset: Preset, meta: bool):
    import open_clip

    if preset.is_tiny:
        name, pretrained = register_tiny_vision(spec.tiny), None
    else:
        name, pretrained = preset.vision, (None if meta else preset.vision_pretrained)
    if open_clip.get_model_config(name) is None:
        raise UnimpError(f"model.vision: {name!r} is not an open_clip model (see open_clip.list_models())")
    quiet = _quiet_root_logger() if pretrained is None else contextlib.nullcontext()
    try:
        with quiet:
            clip, _, transform = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device="meta" if meta else "cpu"
            )
    except Exception as exc:
        raise UnimpError(f"model.vision: cannot create {name} ({pretrained}): {first_line(exc)}") from exc
    clip.visual.output_tokens = True  # Flamingo reads the patch tokens, not the pooled embedding
    vis_dim = open_clip.get_model_config(name)["vision_cfg"]["width"]
    size = clip.visual.image_size
    image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return clip, transform, vis_dim, image_size


# ---------------------------------------------------------------------------------- language model


def tiny_lm_config(tiny: TinyModelSpec, vocab_size: int, tok: "PreTrainedTokenizerBase"):
    """The transformers config of the tiny causal LM (its decoder layers are where open_flamingo looks)."""
    from transformers import GPTNeoXConfig, LlamaConfig

    common = dict(vocab_size=vocab_size, hidden_size=tiny.hidden_size, num_hidden_layers=tiny.layers,
                  num_attention_heads=tiny.heads, intermediate_size=tiny.ffn_size or 4 * tiny.hidden_size,
                  max_position_embeddings=tiny.max_positions, eos_token_id=tok.eos_token_id,
                  bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id,
                  tie_word_embeddings=tiny.tie_embeddings)
    if tiny.activation is not None:
        common["hidden_act"] = tiny.activation
    if tiny.lm_arch == "llama":
        return LlamaConfig(num_key_value_heads=tiny.heads, attention_dropout=tiny.dropout, **common)
    return GPTNeoXConfig(use_parallel_residual=False, attention_dropout=tiny.dropout, hidden_dropout=tiny.dropout,
                         **common)


def _language_model(spec: ModelSpec, preset: Preset, meta: bool, base_vocab: int, tok) -> "PreTrainedModel":
    from open_flamingo.src.factory import _infer_decoder_layers_attr_name
    from open_flamingo.src.flamingo_lm import FlamingoLMMixin
    from open_flamingo.src.utils import extend_instance
    from transformers import AutoConfig, AutoModelForCausalLM

    if preset.is_tiny:
        lm = AutoModelForCausalLM.from_config(tiny_lm_config(spec.tiny, base_vocab, tok))
    elif meta:
        lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**preset.lm_config))
    else:
        try:
            lm = AutoModelForCausalLM.from_pretrained(
                preset.lm, trust_remote_code=spec.trust_remote_code, local_files_only=spec.local_files_only,
                **fp32_kwargs(),
            )
        except Exception as exc:
            raise UnimpError(f"model.lm: cannot load {preset.lm!r}: {first_line(exc)}") from exc
    if lacks_input_embeddings(lm):
        extend_instance(lm, EmbeddingFnMixin)
    extend_instance(lm, FlamingoLMMixin)
    extend_instance(lm, OptionalMaskMixin)  # outermost: its forward runs first
    try:
        lm.set_decoder_layers_attr_name(_infer_decoder_layers_attr_name(lm))
    except ValueError as exc:
        raise UnimpError(f"model.lm: {type(lm).__name__}: open_flamingo does not know where its decoder layers are") from exc
    # what an OpenFlamingo checkpoint is sized for
    resize_embeddings(lm, flamingo_vocab_size(tok), std=new_row_std(preset, lm))
    return lm


def new_row_std(preset: Preset, lm) -> float | None:
    """How added token rows start: None (the mean of the existing rows) for a pretrained LM; the
    tiny LM's own init std (`initializer_range`), so every item token starts as a distinct vector."""
    if not preset.is_tiny:
        return None
    return float(getattr(lm.config, "initializer_range", 0.02))


# --------------------------------------------------------------------------------- Flamingo assembly


def _assemble(spec: ModelSpec, preset: Preset, vision, lm, tok, vis_dim: int) -> "Flamingo":
    from open_flamingo import Flamingo
    from open_flamingo.src.helpers import PerceiverResampler

    model = Flamingo(
        vision, lm,
        eoc_token_id=tok.convert_tokens_to_ids("<|endofchunk|>"),
        media_token_id=tok.convert_tokens_to_ids("<image>"),
        vis_dim=vis_dim,
        # 0: none (open_flamingo adds one before layer i when (i + 1) % n == 0; no model has 10**9 layers)
        cross_attn_every_n_layers=preset.cross_attn_every_n_layers or 10**9,
    )
    from open_flamingo.src.utils import extend_instance

    extend_instance(model, NoImageBatchMixin)
    extend_instance(model, LabelLogitsMixin)
    if preset.is_tiny:
        # Flamingo's constructor fixes the Perceiver at depth 6 / 64 latents; tiny swaps in a small one
        t = spec.tiny
        model.perceiver = PerceiverResampler(dim=vis_dim, depth=t.perceiver_depth, num_latents=t.perceiver_latents,
                                             heads=t.perceiver_heads, dim_head=t.perceiver_dim_head)
        model.perceiver._use_gradient_checkpointing = False
    return model


# The released checkpoints were saved under transformers 4, which called GPT-NeoX's (RedPajama's) output
# embedding `embed_out`; transformers 5 calls it `lm_head`.
_RENAMED = {"lang_encoder.embed_out.weight": "lang_encoder.lm_head.weight"}


def _load_checkpoint(model: nn.Module, ref: str, progress: Progress, local_files_only: bool = False,
                     meta: bool = False) -> dict[str, Any]:
    """Load an OpenFlamingo checkpoint (a local file, or a hub repo's checkpoint.pt) with strict=False.

    Non-strict, because a checkpoint holds only what OpenFlamingo trained (and the language model's
    embeddings), never the frozen towers. So that a checkpoint of another model cannot half-load
    unnoticed, every Perceiver and cross-attention parameter must be filled (else UnimpError).
    Returns {"file", "tensors", "ignored": names the model lacks, "unloaded_trainable": trainable
    parameters the checkpoint did not fill (kept from the language model)}.
    """
    path = Path(ref)
    if not path.is_file():
        if path.suffix == ".pt" or path.exists() or ref.count("/") != 1:
            raise UnimpError(f"model.checkpoint: {ref}: not a checkpoint file nor a hub repo id (owner/name)")
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(ref, CHECKPOINT_FILE, local_files_only=local_files_only))
        except Exception as exc:
            raise UnimpError(f"model.checkpoint: cannot download {ref}/{CHECKPOINT_FILE}: {first_line(exc)}") from exc
    try:
        state = torch.load(path, map_location="meta" if meta else "cpu", weights_only=True)
    except Exception as exc:
        raise UnimpError(f"model.checkpoint: {path}: unreadable: {first_line(exc)}") from exc
    if isinstance(state, dict) and "model_state_dict" in state:  # a training checkpoint, not a bare state dict
        state = state["model_state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    names = set(model.state_dict())
    state = {(_RENAMED.get(k, k) if k not in names and _RENAMED.get(k) in names else k): v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches stay errors under strict=False
        raise UnimpError(f"model.checkpoint: {path}: does not fit this model: {first_line(exc)}") from exc
    if len(result.unexpected_keys) == len(state):
        raise UnimpError(f"model.checkpoint: {path}: none of its {len(state)} tensors belong to this model")
    if result.unexpected_keys:
        progress.log(f"checkpoint {path}: {len(result.unexpected_keys)} tensors ignored, e.g. {result.unexpected_keys[0]}")
    # A parameter counts as loaded when any of its names is in the checkpoint: open_flamingo registers the
    # cross-attention layers twice (gated_cross_attn_layers.i and <decoder layers>.i.gated_cross_attn_layer)
    # and saves one of the two.
    loaded = {id(p) for name, p in model.named_parameters(remove_duplicate=False) if name in state}
    new_modules = [model.perceiver, model.lang_encoder.gated_cross_attn_layers]
    required = {id(p) for m in new_modules for p in m.parameters()}
    trainable = {id(p) for m in trainable_modules(model, train_lm=False) for p in m.parameters()}
    missing = [n for n, p in model.named_parameters() if id(p) in required and id(p) not in loaded]
    if missing:
        raise UnimpError(f"model.checkpoint: {path}: lacks {len(missing)} Perceiver/cross-attention tensors of this "
                         f"model, e.g. {missing[0]} (a checkpoint of another model or cross-attention interval?)")
    unloaded = [n for n, p in model.named_parameters() if id(p) in trainable and id(p) not in loaded]
    if unloaded:
        progress.log(f"checkpoint {path}: {', '.join(unloaded)} not in it (the language model's own weights kept)")
    return {"file": str(path), "tensors": len(state), "ignored": list(result.unexpected_keys),
            "unloaded_trainable": unloaded}


# ------------------------------------------------------------------------------------------ freezing


def trainable_modules(model: "Flamingo", train_lm: bool) -> list[nn.Module]:
    """The modules OpenFlamingo trains: Perceiver, gated cross-attention, input and output embeddings
    (whole matrices: the new tokens' rows need both); with `train_lm` the whole language model too."""
    lm = model.lang_encoder
    modules: list[nn.Module] = [model.perceiver, lm.gated_cross_attn_layers, lm.get_input_embeddings()]
    if lm.get_output_embeddings() is not None:
        modules.append(lm.get_output_embeddings())
    if getattr(lm, "item_content", None) is not None:
        modules.append(lm.item_content)
    if train_lm:
        modules.append(lm)
    return modules


def freeze(model: "Flamingo", train_lm: bool = False) -> int:
    """Freeze everything but `trainable_modules`; return the trainable parameter count (checked)."""
    model.requires_grad_(False)
    intended: dict[int, nn.Parameter] = {}
    for module in trainable_modules(model, train_lm):
        module.requires_grad_(True)
        intended.update((id(p), p) for p in module.parameters())
    model.vision_encoder.requires_grad_(False)  # frozen even with train_lm: features can then be cached
    actual = {id(p): p for p in model.parameters() if p.requires_grad}
    if set(actual) != set(intended):
        raise UnimpError("model: trainable parameters differ from the intended modules (a shared vision/LM weight?)")
    count = sum(p.numel() for p in actual.values())
    if count <= 0:
        raise UnimpError("model: nothing to train")
    return count


# ----------------------------------------------------------------------------------------- run folder


def save_bundle(bundle: ModelBundle, run_dir: str | Path) -> None:
    """Write what rebuilds the model offline: `model.json` (family, spec, catalogue size), `tokenizer/` and the
    items' code tuples of semantic ids."""
    from ..item_content import save_run_attributes
    from ..item_ids import save_run_codes

    save_tokenizer(bundle.tokenizer, run_dir)
    if bundle.item_codes is not None:
        save_run_codes(Path(run_dir), bundle.item_codes)
    if bundle.item_attributes is not None:
        save_run_attributes(Path(run_dir), *bundle.item_attributes)
    RF.write_model_meta(run_dir, bundle.spec.family, bundle.spec.model_dump(mode="json"), bundle.n_items)


def load_bundle(run_dir: str | Path, device: str | torch.device = "cpu",
                progress: Progress | None = None) -> ModelBundle:
    """Rebuild a run's model and tokenizer from its folder (tiny: fully offline; presets: the LM and
    checkpoint come from the local cache). Trainable weights are loaded by the caller."""
    from ..item_content import RUN_FILE as RUN_ATTRIBUTES, load_run_attributes

    meta = RF.read_model_meta(run_dir)
    tokenizer_dir = RF.tokenizer_dir(run_dir)
    if not tokenizer_dir.is_dir():
        raise UnimpError(f"{run_dir}: not a run folder (no {RF.TOKENIZER_DIR}/)")
    try:
        spec = ModelSpec.model_validate(meta["spec"])
    except Exception as exc:
        raise UnimpError(f"{Path(run_dir) / RF.MODEL_META}: unreadable: {first_line(exc)}") from exc
    codes = None
    if spec.item_ids == "semantic":
        from ..item_ids import load_run_codes

        if spec.item_codes is None:
            raise UnimpError(f"{Path(run_dir) / RF.MODEL_META}: semantic item ids without their item_codes record")
        codes = load_run_codes(Path(run_dir), spec.item_codes, meta["n_items"])
    attributes = None
    if (Path(run_dir) / RUN_ATTRIBUTES).is_file():
        attributes = load_run_attributes(Path(run_dir), meta["n_items"])
    return build_model(spec, n_items=meta["n_items"], device=device, tokenizer_dir=tokenizer_dir, progress=progress,
                       item_codes=codes, item_attributes=attributes)
