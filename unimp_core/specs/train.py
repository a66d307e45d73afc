"""Specs for `unimp train` and `unimp finetune`, grouped the way a config file reads:
TrainSpec(model=..., data=..., optim=..., run=...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializeAsAny, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ..model.families import DEFAULT_FAMILY, FAMILIES, spec_class
from ..task_names import DEFAULT_TASK_WEIGHTS, DEFAULT_TRAIN_TASKS, TaskName, task_names
from .base import Spec
from .model import FamilySpec


class DataSpec(Spec):
    """Which dataset folder and which tasks to train on."""

    path: Path = Field(description="Dataset folder written by `unimp prepare`.")
    tasks: list[TaskName] = Field(
        default_factory=lambda: list(DEFAULT_TRAIN_TASKS),
        description="Tasks mixed into one training stream (one task: single-task training).",
    )
    task_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_TASK_WEIGHTS),
        description="Per-task loss weight (unlisted tasks: 1.0; rec 2.0 as the paper's code)."
    )
    history_len: int = Field(default=5, ge=1, le=50, description="History items per prompt (training windows and evaluation).")
    task_history_len: dict[str, int] = Field(
        default_factory=dict,
        description="Per-task history length, overriding history_len (img_gen defaults to 2, the paper's code's).",
    )
    max_tokens: int = Field(default=512, ge=32, description="Longest prompt in tokens; longer ones lose their oldest history items.")
    curriculum: bool = Field(default=False, description="Add tasks in stages across epochs (the curriculum of the paper's code).")
    group_by_length: bool = Field(
        default=False,
        description="Batch prompts of similar length together (less padding; batches still come in a seeded "
        "random order). Worth it when prompt lengths vary a lot, e.g. rec with long histories.",
    )
    valid_users: int = Field(default=64, ge=0, description="Validation instances per task for the periodic validation loss (0: off).")

    @model_validator(mode="after")
    def _check(self) -> "DataSpec":
        if not self.tasks:
            raise ValueError("tasks: name at least one task")
        unknown = set(self.task_weights) - set(task_names())
        if unknown:
            raise ValueError(f"task_weights: unknown task(s) {sorted(unknown)}")
        negative = {t: w for t, w in self.task_weights.items() if w < 0}
        if negative:
            raise ValueError(f"task_weights: weights must be >= 0 (got {negative})")
        if all(self.task_weights.get(t, 1.0) == 0 for t in self.tasks):
            raise ValueError("task_weights: every trained task has weight 0; nothing would be learned")
        unknown = set(self.task_history_len) - set(task_names())
        if unknown:
            raise ValueError(f"task_history_len: unknown task(s) {sorted(unknown)}")
        bad = {t: n for t, n in self.task_history_len.items() if not 1 <= n <= 50}
        if bad:
            raise ValueError(f"task_history_len: lengths must lie in 1..50 (got {bad})")
        return self


DecayScope = Literal["cross_attention", "all"]  # which weights AdamW decays (training/optim.py::decays)


class OptimSpec(Spec):
    """AdamW, schedule, clipping, accumulation."""

    lr: float | None = Field(
        default=None, gt=0,
        description="Peak learning rate (default: 3e-3 for the tiny preset, which starts from random weights; "
        "1e-4, the paper's, for the OpenFlamingo presets).",
    )
    weight_decay: float = Field(default=0.1, ge=0, description="AdamW weight decay on the weights `decay_scope` names.")
    decay_scope: DecayScope = Field(
        default="cross_attention",
        description="What weight decay applies to: the gated cross-attention matrices (the paper's code's rule), or "
        "every trained matrix and embedding (norms, biases and gates excepted).",
    )
    schedule: Literal["constant", "linear", "cosine"] = Field(default="cosine", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1, description="Share of the steps spent warming up linearly.")
    beta2: float = Field(
        default=0.999, gt=0, lt=1,
        description="Adam's second-moment decay (SASRec's is 0.98; on Beauty it did not help the unimp model, "
        "docs/benchmarks.md).",
    )
    grad_clip: float = Field(default=1.0, ge=0, description="Clip the gradients' norm to this (0: no clipping).")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    batch_size: int | None = Field(default=None, ge=1, description="Samples per micro-batch per process (default: 8; "
                                   "SASRec: 128 sequences, the paper's).")
    item_softmax: bool = Field(
        default=True,
        description="An answer that names an item is scored by a softmax over the item tokens alone (the "
        "catalogue, as SASRec), not over the whole vocabulary (the paper's).",
    )
    gamma: float = Field(default=2.0, ge=0, description="Focal term (1-p)^gamma on each answer token's loss (0: plain cross-entropy).")
    average_epochs: float = Field(
        default=0.0, ge=0,
        description="Validate, keep (best/) and save (final/) a moving average of the trained weights over about this "
        "many epochs (0: the weights as trained). For long runs at a constant rate, whose weights wander once the "
        "valid metric stops rising.",
    )


class RunSpec(Spec):
    """Where the run lives and how it is executed."""

    out: Path = Field(description="Run folder (spec, tokenizer, checkpoints, final weights, metrics log).")
    epochs: float | None = Field(
        default=None, gt=0, description="Passes over the training samples, at most (ignored with max_steps; default 1; SASRec: 200 with ce, 250 with bce; "
        "early stopping usually ends a run sooner, see patience)."
    )
    max_steps: int | None = Field(default=None, ge=1, description="Optimizer steps to train for (overrides epochs).")
    seed: int = Field(default=42, ge=0, description="Seed for weights of new parameters, sampling and data order.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(default="fp32", description="Mixed precision (bf16 is the paper's setting on GPUs).")
    save_every: int = Field(default=200, ge=1, description="Save a checkpoint every this many optimizer steps.")
    keep_last: int = Field(default=2, ge=1, description="Checkpoints kept (older ones are deleted).")
    eval_every: int | None = Field(
        default=None, ge=1,
        description="Validate every this many optimizer steps (default: once per epoch; SASRec with bce: every 2000 steps) and at the end: the validation "
        "loss, and for a run that trains rec the rank metrics of the valid split (whole catalogue, history items "
        "excluded) that select the best checkpoint.",
    )
    select_metric: str = Field(
        default="ndcg@10", description="Valid-split metric that picks the best checkpoint (RUN/best): hr@K, ndcg@K or mrr@K."
    )
    select_users: int | None = Field(
        default=None, ge=0,
        description="Rank only the first N valid-split rec instances at each validation (default: all; 0: no rank "
        "validation and no best checkpoint).",
    )
    patience: int = Field(
        default=10, ge=0,
        description="Stop after this many validations in a row without a better selection metric (0: never): "
        "training runs until validation stops improving, with epochs (or max_steps) as the cap. 10, as RecBole's "
        "stopping_step: on small data the valid metric can sit still for 5 epochs and then climb again.",
    )
    log_every: int = Field(default=10, ge=1, description="Write a metrics line every this many optimizer steps.")
    resume: bool = Field(default=False, description="Continue the run in `out` from its last checkpoint.")
    distributed: Literal["auto", "ddp", "zero2", "zero3", "fsdp"] = Field(
        default="auto",
        description="auto (what `accelerate launch` set up; one process without it), ddp, zero2 / zero3 (DeepSpeed, "
        "also as one process without a launcher), fsdp. On CPU: accelerate launch --multi_gpu --num_processes N.",
    )
    accelerate_config: Path | None = Field(default=None, description="A user's accelerate config file (overrides --distributed).")
    cache_vision_features: bool = Field(
        default=False,
        description="Compute each item's frozen vision features once (memory-mapped, in the run folder) and skip the vision tower.",
    )
    trackers: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list, description="Experiment trackers (through accelerate).")
    num_workers: int = Field(default=0, ge=0, description="DataLoader worker processes.")


class TrainSpec(Spec):
    """Everything `unimp train` needs; saved as train_spec.json in the run folder."""

    model: SerializeAsAny[FamilySpec] = Field(default_factory=lambda: spec_class(DEFAULT_FAMILY)(),
                                              description="Which model to build (its family and settings).")
    data: DataSpec = Field(description="Dataset folder and tasks.")
    optim: OptimSpec = Field(default_factory=OptimSpec, description="Optimizer and schedule.")
    run: RunSpec = Field(description="Run folder and execution.")
    init_from: Path | None = Field(default=None, description="Start from this run's final weights (set by `unimp finetune --from`).")

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """The model section validated by its family's spec class, and the settings the spec leaves out
        (or None) filled from the family's `train_defaults` (a saved spec holds them, so it reads back the same)."""
        if not isinstance(data, dict):
            return data
        model = _model_spec(data.get("model"))
        data = {**data, "model": model}
        for section, values in model.train_defaults().items():
            if section in data or not cls.model_fields[section].is_required():  # a missing one stays an error
                data[section] = _fill(data.get(section), values)
        return data

    @model_validator(mode="after")
    def _check(self) -> "TrainSpec":
        from ..rank_metrics import metric_name

        metric_name(self.run.select_metric)  # a bad name fails before anything runs
        self.model.check_train(self)
        # img_gen's codebook size (model.image_gen_codes) is not checked here: `run_train` sets it from the
        # dataset's manifest (its image_tokens record), never from a hand-set value.
        return self


def _model_spec(value: Any) -> FamilySpec:
    """The model section as its family's spec (the default family's when none is named)."""
    if isinstance(value, FamilySpec):
        return value
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise ValueError(f"model: expected a mapping of settings, got {type(value).__name__}")
    name = value.get("family") or DEFAULT_FAMILY
    if name not in FAMILIES:
        tags = ", ".join(repr(f) for f in FAMILIES)
        raise ValidationError.from_exception_data("TrainSpec", [{
            "type": PydanticCustomError("union_tag_invalid", f"Input tag {name!r} does not match any of the expected "
                                        f"tags: {tags}"), "loc": ("model",), "input": value}])
    try:
        return spec_class(name).model_validate(value)
    except ValidationError as exc:  # located under model.<family>.
        raise ValidationError.from_exception_data("TrainSpec", [
            {"type": e["type"], "loc": ("model", name, *e["loc"]), "input": e["input"], **({"ctx": e["ctx"]} if "ctx" in e else {})}
            for e in exc.errors()]) from None


def _fill(section: Any, defaults: dict[str, Any]) -> Any:
    """`section` (raw settings or a spec) with each of `defaults` that it leaves out or sets to None."""
    if isinstance(section, Spec):
        missing = {k: v for k, v in defaults.items() if k not in section.model_fields_set or getattr(section, k) is None}
        return section.model_copy(update=missing) if missing else section
    section = dict(section or {})
    for key, value in defaults.items():
        if section.get(key) is None:
            section[key] = value
    return section
