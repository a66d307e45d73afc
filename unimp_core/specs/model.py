"""The model part of a run spec: `FamilySpec`, what every model family's spec provides (each family's own
spec class lives in its package, found through `unimp_core.model.families`), and the item-id settings that
families with item tokens share.

No torch import here: specs are validated (and printed by `--dry-run`) instantly.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ..errors import UnimpError
from .base import Spec


class FamilySpec(Spec):
    """The model section of a run spec, as each model family (`unimp_core.model.families`) spells it: a
    `family: Literal["<name>"]` field, the family's settings, and what it asks of the rest of the spec."""

    TITLE: ClassVar[str] = ""  # how messages name the family
    CLI_HELP: ClassVar[str] = ""  # `--model <name>`'s help: what the family is and the defaults it brings
    FLAGS: ClassVar[tuple[str, ...]] = ()  # `unimp train` model flags only this family has (field names)

    @classmethod
    def variants(cls) -> list[type["FamilySpec"]]:
        """The spec classes a field typed `FamilySpec` may hold: every registered family's."""
        from ..model.families import FAMILIES, spec_class

        return [spec_class(name) for name in FAMILIES] if cls is FamilySpec else [cls]

    def train_defaults(self) -> dict[str, dict[str, Any]]:
        """Settings of the other sections that this family fills when the spec leaves them out (or None),
        e.g. {"optim": {"lr": 1e-3}}; a saved spec holds them all, so it reads back the same."""
        return {}

    def check_train(self, spec: Any) -> None:
        """Raise ValueError for a training setting of `spec` (the whole TrainSpec) this family cannot honour."""

    def describe_inputs(self, report: dict[str, Any]) -> str:
        """What the model read, for `unimp evaluate`'s header."""
        return f"history {report['history_len']}"

    @classmethod
    def from_flags(cls, flags: dict[str, Any]) -> dict[str, Any]:
        """The model section's settings from `unimp train`'s model flags (field name -> value, None: not given). A flag
        that another family owns (its FLAGS) is a one-line error naming that family; any other flag goes to
        the spec, which refuses what it does not know."""
        from ..model.families import FAMILIES, spec_class

        out: dict[str, Any] = {}
        for name, value in flags.items():
            if value is None:
                continue
            if name not in cls.model_fields:
                owner = next((f for f in FAMILIES if name in spec_class(f).FLAGS), None)
                if owner is not None:
                    raise UnimpError(f"--{name.replace('_', '-')} is a {spec_class(owner).TITLE} setting "
                                     f"(--model {owner})")
            out[name] = value
        return out

ItemIds = Literal["auto", "atomic", "semantic"]
# Above this many items `auto` picks semantic ids (when the dataset has item codes): one atomic item is an
# input and an output row of hidden size, so 200k items are ~1.0B parameters on the 4b preset (hidden 2560),
# a quarter of the model, and 16 GB of fp32 weights, gradients and Adam state; semantic ids add
# levels * codes + collision rows whatever the catalogue (3 x 256 + 4: 772 rows, 4M parameters).
AUTO_SEMANTIC_ITEMS = 200_000


class ItemCodesRecord(Spec):
    """The semantic ids a run was built with (copied from the dataset's item_codes manifest record)."""

    levels: int = Field(ge=1, le=25, description="Quantiser levels (each item: levels codes + one collision index).")
    codes: int = Field(ge=1, description="Codes per level.")
    collision_codes: int = Field(ge=1, description="Size of the collision level.")
    sha256: str | None = Field(default=None, description="Hash of the dataset's item_codes.parquet the run was trained on.")

    @property
    def n_tokens(self) -> int:
        """Tokens these ids add to the vocabulary."""
        return self.levels * self.codes + self.collision_codes
