"""A run's model, built once for training or rebuilt from its folder for evaluation and generation.

    setup_model(spec, ds, run_dir, fresh=True)   training: build (or a finetune's source) and save
    load_run(run, "final", device="cuda")         evaluate / generate: the run's model with its weights

Both dispatch on the model family (`unimp_core.model.families`): a new run's `spec.model.family`, a
saved run's model.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import run_folder as RF
from ..data.store import Dataset, dataset_identity, load_dataset
from ..errors import UnimpError, first_line
from ..io import verify_checksums
from ..progress import Progress
from ..specs.train import TrainSpec
from ..tasks import TaskContext, context
from .families import Family, capability, family


@dataclass
class Setup:
    """A model with everything that feeds it: what training and evaluation share."""

    dataset: Dataset
    bundle: Any  # the family's bundle: .model, .n_items, .spec (token families: .tokenizer, .ids)
    images: Any  # item_id -> tensor (pixels or cached features); None for a family without images
    image_shape: tuple[int, ...]
    family: Family
    ctx: TaskContext  # the dataset indexed for the tasks, naming items the way the model does (atomic or semantic ids)

    # collators made so far: making one looks up every added token, as long as the catalogue
    _collators: dict = field(default_factory=dict, repr=False, compare=False)

    def collator(self, max_length: int, padding_side: str = "right",
                 task_weights: dict[str, float] | None = None) -> Callable:
        """Samples -> batch; "right" padding for training and validation, "left" for generation (made
        once per arguments: validation ranks every epoch)."""
        key = (max_length, padding_side, tuple(sorted((task_weights or {}).items())))
        if key not in self._collators:
            self._collators[key] = self._token_model("collator")(self.bundle, self.images, self.image_shape,
                                                                 max_length, padding_side, task_weights)
        return self._collators[key]

    def forward(self, model, batch: dict[str, Any], item_range: tuple[int, int] | None = None):
        """The logits the loss reads: (B, T, V) or, at the label positions, (N, V) or split by item labels
        (`training.loss.SplitLogits`, with `item_range`); `model` may be the accelerate-wrapped one."""
        return self._token_model("forward")(model, batch, item_range)

    @property
    def decoder(self) -> Any:
        """The family's token decoding (answer logits, beam search, text generation; `Family`'s `decoder`)."""
        return self._token_model("decoder")

    def _token_model(self, name: str) -> Any:
        found = capability(self.family, name)
        if found is None:
            raise UnimpError(f"a {self.family.NAME} run reads item ids, not prompts (it has no {name})")
        return found


def setup_model(spec: TrainSpec, ds: Dataset, run_dir: Path, fresh: bool, progress: Progress) -> Setup:
    """Build or rebuild the model, and the function that gives an item's image.

    Args:
        fresh: build the model from the spec (a finetune: from `spec.init_from`'s folder) and write
            model.json (+ the family's files, e.g. tokenizer/) into `run_dir`; otherwise rebuild it from `run_dir`.
    Returns:
        A Setup whose model holds its built weights: trainable weights (a checkpoint, `final/`, the
        finetune source) are the caller's to load.
    """
    source = spec.init_from if fresh else run_dir
    if source is None:
        fam = family(spec.model.family)
        bundle = fam.build(spec, ds, progress)
    else:
        meta = RF.read_model_meta(source)
        fam = family(meta["family"])
        bundle = fam.load(Path(source), meta, progress)
        if bundle.n_items != ds.items.height:
            raise UnimpError(f"{source}: the model knows {bundle.n_items} items, {ds.root} has {ds.items.height}")
    if fresh:
        fam.save(bundle, run_dir)
    inputs = capability(fam, "inputs")
    images, shape = inputs(bundle, spec, ds, Path(run_dir), progress) if inputs is not None else (None, ())
    ctx = context(ds, getattr(bundle, "item_codes", None)).with_prompts(
        getattr(bundle.spec, "rec_prompt", "chunks"), getattr(bundle.spec, "describe_items", True))
    return Setup(ds, bundle, images, shape, fam, ctx)


def load_weights(run_dir: Path, checkpoint: str = RF.FINAL) -> dict[str, torch.Tensor]:
    """A run's trainable weights: `final` or `step-N`, checked against the checkpoint's checksums."""
    path = RF.weights_file(run_dir, checkpoint)
    damage = verify_checksums(path.parent, RF.CHECKSUMS)
    if damage:
        raise UnimpError(f"{path.parent}: damaged checkpoint: {damage}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UnimpError(f"{path}: unreadable checkpoint file ({first_line(exc)})") from None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters that train (the frozen backbone is rebuilt from the spec), copied to the CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor], origin: str) -> None:
    """Copy `weights` into the model's trainable parameters; every one of them must be given, with its shape."""
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    unknown = [n for n in weights if n not in params]
    if unknown or missing:
        bad = (unknown or missing)[0]
        raise UnimpError(f"{origin}: weights do not fit this model ({len(unknown)} unknown, {len(missing)} missing, e.g. {bad})")
    with torch.no_grad():
        for name, value in weights.items():
            if params[name].shape != value.shape:
                raise UnimpError(f"{origin}: {name} has shape {tuple(value.shape)}, the model {tuple(params[name].shape)}")
            params[name].copy_(value)


@dataclass
class LoadedRun:
    """A run's model with its weights, its dataset and everything needed to build prompts."""

    run: Path
    checkpoint: str
    train_spec: TrainSpec
    setup: Setup
    ctx: TaskContext
    device: torch.device
    history_len: int
    max_tokens: int

    @property
    def dataset(self) -> Dataset:
        return self.setup.dataset

    @property
    def bundle(self) -> Any:
        return self.setup.bundle

    def collator(self) -> Callable:
        """Left-padding collator for prompts that end at `<answer>`."""
        return self.setup.collator(self.max_tokens, padding_side="left")


def load_run(run: Path, checkpoint: str = RF.FINAL, data: Path | None = None, *, device=None,
             history_len: int | None = None, max_tokens: int | None = None,
             progress: Progress | None = None) -> LoadedRun:
    """Rebuild a run's model from its folder, load `checkpoint`'s weights, read its dataset.

    Args:
        run: the run folder (see unimp_core.run_folder).
        checkpoint: "final" or "step-N".
        data: the dataset folder (default: the one in train_spec.json).
        device: where the model goes (default: CPU).
        history_len, max_tokens: prompt settings (default: the run's).
    """
    progress = progress or Progress()
    run = Path(run)
    train_spec = RF.read_train_spec(run)
    ds = load_dataset(RF.dataset_folder(run, train_spec, data))
    RF.check_dataset_identity(run, ds.root, dataset_identity(ds.manifest))
    weights = load_weights(run, checkpoint)  # fails early, naming the checkpoints that exist
    setup = setup_model(train_spec, ds, run, fresh=False, progress=progress)
    model = setup.bundle.model
    load_trainable(model, weights, f"{run}/{checkpoint}")
    device = torch.device(device or "cpu")
    model.to(device).eval()
    return LoadedRun(run, checkpoint, train_spec, setup, setup.ctx, device,
                     history_len or train_spec.data.history_len, max_tokens or train_spec.data.max_tokens)
