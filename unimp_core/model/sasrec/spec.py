"""SASRec's model spec (torch-free: specs validate with it): its settings, the training defaults it brings
and the training settings it refuses."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ...errors import UnimpError
from ...specs.model import FamilySpec

# Settings that mean nothing to SASRec (item ids, its own window, Adam at a constant rate, one process):
# setting one for a SASRec run is an error rather than silently ignored.
NOT_FOR_SASREC = {
    "data": ("task_weights", "history_len", "task_history_len", "max_tokens", "curriculum", "valid_users"),
    "optim": ("weight_decay", "decay_scope", "schedule", "warmup_ratio", "beta2", "grad_clip", "grad_accum", "gamma",
              "item_softmax"),
    "run": ("precision", "distributed", "accelerate_config", "cache_vision_features", "trackers", "num_workers"),
}


class SASRecSpec(FamilySpec):
    """SASRec (Kang & McAuley, ICDM 2018), the sequential-recommendation yardstick: item ids only, task rec only.

    Trained with Adam (betas 0.9, 0.98) at a constant learning rate on every position of every training
    sequence; the options in NOT_FOR_SASREC do not apply, and setting one is an error."""

    TITLE: ClassVar[str] = "SASRec"
    CLI_HELP: ClassVar[str] = ("the built-in SASRec baseline: item ids only, task rec, its own defaults: lr 1e-3, batch 128; "
                               "ce: at most 200 epochs, validation every epoch; bce: at most 250 epochs, validation every "
                               "2000 steps; both stop early after --patience validations without improvement")
    FLAGS: ClassVar[tuple[str, ...]] = ("loss",)

    family: Literal["sasrec"] = Field(default="sasrec", description="Model family: sasrec, the built-in baseline.")
    loss: Literal["bce", "ce"] = Field(
        default="ce",
        description="ce: softmax cross-entropy over the whole catalogue (the default: far better on Amazon Beauty, "
        "see the README); bce: the paper's binary cross-entropy with one sampled negative per position.",
    )
    hidden: int = Field(default=64, ge=8, le=1024, description="Hidden size (item and position embeddings).")
    blocks: int = Field(default=2, ge=1, le=12, description="Self-attention blocks.")
    heads: int = Field(default=1, ge=1, le=16, description="Attention heads per block.")
    max_len: int = Field(default=50, ge=2, le=512, description="Longest history the model reads (the most recent items).")
    dropout: float = Field(default=0.5, ge=0, lt=1, description="Dropout rate (0.5: the paper's for sparse data such as Amazon).")
    init_seed: int = Field(default=0, description="Seed of the initial weights.")

    @model_validator(mode="after")
    def _divisible(self) -> "SASRecSpec":
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")
        return self


    def train_defaults(self) -> dict[str, dict[str, Any]]:
        # Caps, not budgets: early stopping on the valid split ends the run (ce peaked near epoch 32 on Beauty).
        epochs, every = (200.0, None) if self.loss == "ce" else (250.0, 2000)
        return {"data": {"tasks": ["rec"]}, "optim": {"lr": 1e-3, "batch_size": 128},
                "run": {"epochs": epochs, "eval_every": every}}

    def check_train(self, spec: Any) -> None:
        for section, names in NOT_FOR_SASREC.items():
            part = getattr(spec, section)  # a saved spec holds every field: compare with the defaults
            given = [n for n in names if getattr(part, n) != type(part).model_fields[n].get_default(call_default_factory=True)]
            if given:
                raise ValueError(f"{section}.{given[0]} does not apply to SASRec (it reads item ids only, "
                                 "trains with Adam at a constant rate, in one process)")
        if spec.data.tasks != ["rec"]:
            raise ValueError(f"SASRec trains task rec only (got tasks {', '.join(spec.data.tasks)})")
        if spec.init_from is not None:
            raise ValueError("finetuning starts from an OpenFlamingo run; SASRec trains from scratch")

    def describe_inputs(self, report: dict[str, Any]) -> str:
        return "item ids (SASRec)"

    @classmethod
    def from_flags(cls, flags: dict[str, Any]) -> dict[str, Any]:
        if flags.get("item_ids") == "semantic":
            raise UnimpError("--item-ids semantic: SASRec learns one embedding per item id (atomic ids only)")
        return super().from_flags({**flags, "item_ids": None})  # atomic ids are the only ids it has
