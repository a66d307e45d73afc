"""Item content in the item's own representation: attribute embeddings shared across the catalogue.

An atomic item token `item_<i>` is read (input embedding) and scored (output head) with its own row
plus the mean of its attributes' embeddings (brand, categories, ...):

    e_i = E[item_<i>] + mean_{a in attrs(i)} A[a]

The attribute rows are shared by every item that has the attribute, so an item seen a few times in
training borrows what its brand and categories learned from the others (the rare items are where ids
alone fail). Reading the attributes as prompt words instead costs tokens per history item and, measured
on Beauty, buys nothing (docs/benchmarks.md).

The input embedding and the output head compute with `weight + content` (their classes gain a forward
that adds it; their parameters and names are untouched), so every path that runs the LM (training,
validation, exact ranking, generation with a KV cache) sees the same vectors at the cost of one (V, d)
addition per call, not a second pass over the logits.

`fusion="attention"` (NOVA, Liu et al. 2021; DIF-SR, Xie et al. 2022) keeps the item rows pure ids and
lets content decide only where attention looks: at every decoder layer an item position's queries and
keys also read its content vector, its values and the residual stream do not,

    q_t = W_q(x_t + s_t),  k_t = W_k(x_t + s_t),  v_t = W_v x_t,   s_t = content of the item at t (else 0)

so content shapes which history items a prediction draws on without blending every item of a brand into
one vector (early fusion, measured on Beauty: faster to learn, no better at its best).

`dropout` drops an item's whole content vector in training (each call, with probability p; the kept
ones are scaled by 1/(1-p)), so the item's own row must learn what content does not say.

`loss_weight` adds a second softmax on every item answer in training, the catalogue scored by the content
vectors alone (h . c_j, no own rows), at that weight beside the ordinary one: the attributes must tell
items apart by themselves instead of leaving it to the own rows. The ordinary scores, and everything
ranked at evaluation, are unchanged (docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import orjson
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnimpError
from ..io import write_bytes_atomic

RUN_FILE = "item_attributes.json"  # in the run folder: the attribute vocabulary and each item's attribute indices


class ItemContent(nn.Module):
    """(n_items, d) content vectors: the mean of each item's attribute embeddings (zero without attributes)."""

    def __init__(self, n_attributes: int, hidden: int, per_item: Sequence[Sequence[int]], std: float = 0.02,
                 dropout: float = 0.0, loss_weight: float = 0.0):
        super().__init__()
        self.n_items = len(per_item)
        self.dropout = dropout
        self.loss_weight = loss_weight  # of the content-alone softmax in training (`scores_alone`)
        self.attributes = nn.Embedding(max(n_attributes, 1), hidden)
        nn.init.normal_(self.attributes.weight, std=std)
        flat = [a for attrs in per_item for a in attrs]
        if any(not 0 <= a < n_attributes for a in flat):
            raise UnimpError(f"item attributes: an index outside 0..{n_attributes - 1}")
        offsets = [0]
        for attrs in per_item[:-1]:
            offsets.append(offsets[-1] + len(attrs))
        # rebuilt from the run folder's item_attributes.json, so not part of the weights
        self.register_buffer("flat", torch.tensor(flat, dtype=torch.long), persistent=False)  # (L,)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)  # (n_items,)

    def forward(self) -> torch.Tensor:
        # (n_items, d); an empty bag (an item without attributes) is a zero vector
        content = F.embedding_bag(self.flat, self.attributes.weight, self.offsets, mode="mean")
        if self.training and self.dropout:
            keep = torch.rand(self.n_items, 1, device=content.device) >= self.dropout
            content = content * keep / (1.0 - self.dropout)
        return content

    def scores_alone(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, n_items) the item answers' hidden states (N, d) scored by the content vectors alone."""
        return F.linear(hidden, self().to(hidden.dtype))


def attach(lm: nn.Module, content: ItemContent, item_ids: torch.Tensor, fusion: str = "rows") -> None:
    """Register `content` on `lm` and add it, for the item tokens `item_ids` (item-id order, contiguous
    token ids), to their rows wherever the LM embeds or scores them (`fusion="rows"`), or to the
    queries and keys of their positions (`"attention"`)."""
    if len(item_ids) != content.n_items:
        raise UnimpError(f"item attributes: {content.n_items} items described, the vocabulary has {len(item_ids)}")
    lo = int(item_ids[0])
    if not torch.equal(item_ids, torch.arange(lo, lo + len(item_ids), device=item_ids.device)):
        raise UnimpError("item attributes need the item tokens as one contiguous block of the vocabulary")
    lm.item_content = content
    rows = torch.arange(lo, lo + content.n_items)
    if fusion == "attention":
        _attach_attention(lm, content, rows)
        return
    # The modules keep their parameters (and names); only their forward reads weight + content.
    for module, kind in ((lm.get_input_embeddings(), _ContentEmbedding), (lm.get_output_embeddings(), _ContentHead)):
        if module is None:
            raise UnimpError("item attributes: the language model has no output head to score items with")
        module.__class__ = type(kind.__name__, (kind, type(module)), {})
        object.__setattr__(module, "_content", content)  # not a submodule: the LM owns it once
        module.register_buffer("_content_rows", rows, persistent=False)


def _attach_attention(lm: nn.Module, content: ItemContent, rows: torch.Tensor) -> None:
    embedding = lm.get_input_embeddings()
    side = _SideVectors(content, rows)
    embedding.register_forward_pre_hook(side.read_ids)
    hooked = 0
    for module in lm.modules():
        if isinstance(getattr(module, "query_key_value", None), nn.Linear) and hasattr(module, "head_size"):
            # GPT-NeoX: one projection, per head [q | k | v] of head_size each
            qk = (torch.arange(module.query_key_value.out_features) % (3 * module.head_size)) < 2 * module.head_size
            module.query_key_value.register_forward_hook(side.adder(qk))
            hooked += 1
        elif all(isinstance(getattr(module, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj")):
            for proj in (module.q_proj, module.k_proj):  # Llama-style: separate projections, values untouched
                proj.register_forward_hook(side.adder(None))
            hooked += 1
    if not hooked:
        raise UnimpError(f"item attributes (fusion attention): no self-attention projections found in {type(lm).__name__}")


class _SideVectors:
    """The content vector of each position of the ids the LM embeds last (zero off the item tokens),
    added through each attention projection's own weight to its query and key outputs."""

    def __init__(self, content: ItemContent, rows: torch.Tensor):
        self.content, self.lo, self.hi = content, int(rows[0]), int(rows[-1]) + 1
        self.side: torch.Tensor | None = None

    def read_ids(self, module, args) -> None:
        ids = args[0]
        is_item = (ids >= self.lo) & (ids < self.hi)
        vectors = self.content()
        self.side = torch.where(is_item[..., None], vectors[(ids - self.lo).clamp(0, self.content.n_items - 1)],
                                vectors.new_zeros(()))  # (..., d)

    def adder(self, mask: torch.Tensor | None):
        def hook(proj: nn.Linear, args, output: torch.Tensor) -> torch.Tensor:
            side = self.side
            if side is None or side.shape[:-1] != output.shape[:-1]:
                raise UnimpError("item attributes (fusion attention): the attention ran on positions whose ids "
                                 "the embedding did not read")
            extra = F.linear(side.to(output.dtype), proj.weight)
            return output + (extra if mask is None else extra * mask.to(extra.device, extra.dtype))
        return hook


def _with_content(module) -> torch.Tensor:
    """(V, d) the module's weight with each item row plus its content vector (one index_add per call)."""
    rows = module._content_rows.to(module.weight.device)
    return module.weight.index_add(0, rows, module._content().to(module.weight.dtype))


class _ContentEmbedding:
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, _with_content(self), self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)


class _ContentHead:
    def scoring_weight(self) -> torch.Tensor:
        """(V, d) what the head scores with (a head computing a part of its rows reads it)."""
        return _with_content(self)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.scoring_weight(), self.bias)


def save_run_attributes(run_dir: Path, vocab: Sequence[str], per_item: Sequence[Sequence[int]]) -> None:
    write_bytes_atomic(Path(run_dir) / RUN_FILE, orjson.dumps({"vocab": list(vocab), "items": [list(a) for a in per_item]}))


def load_run_attributes(run_dir: Path, n_items: int) -> tuple[list[str], list[list[int]]]:
    path = Path(run_dir) / RUN_FILE
    try:
        record = orjson.loads(path.read_bytes())
        vocab, per_item = list(record["vocab"]), [list(map(int, a)) for a in record["items"]]
    except FileNotFoundError:
        raise UnimpError(f"{path}: missing (the run was trained with item attributes)") from None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UnimpError(f"{path}: unreadable: {exc}") from exc
    if len(per_item) != n_items:
        raise UnimpError(f"{path}: {len(per_item)} items, the run has {n_items}")
    return vocab, per_item
