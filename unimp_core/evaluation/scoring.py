"""How each kind of task is decoded and scored: the pieces a task's `records` and `summary` name.

    records(ev, samples, mine, advance) -> one JSON-able record per instance index in `mine`
    summary(records, samples, ev)       -> the task's entry in metrics.json (without users/seconds)

rec / search rank the whole catalogue (or beam-search item ids); exp / img_sel generate text and
parse it; img_gen generates one image's codes. `EvalContext` holds what they share: the loaded run,
the spec, the training statistics and the evaluation folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .. import rank_metrics as RM
from ..data.store import load_dataset
from ..errors import UnimpError
from ..io import write_bytes_atomic
from ..run_folder import IMAGES
from ..specs.evaluate import EvaluateSpec
from . import metrics as M

if TYPE_CHECKING:
    from ..model.setup import LoadedRun

SLOT_TOKENS = 12  # img_sel answers are a few slot tokens ("s_0 s_2") and the end of the chunk


@dataclass
class EvalContext:
    """What every task's decoding and scoring may read during one `unimp evaluate`."""

    loaded: "LoadedRun"
    spec: EvaluateSpec
    out_dir: Path  # RUN/evaluations/<name>/
    counts: np.ndarray  # (n_items,) training interactions per item (popularity baseline)
    train_ratings: list[float]  # every rating training could see (the rating baseline)
    is_main: bool = True  # the main process writes files and computes main-only metrics (FID)
    cache: dict[str, Any] = field(default_factory=dict)  # resources loaded once (VQ model, WordNet)

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]


def _greedy_or_beams(beams: int) -> str:
    return "greedy" if beams == 1 else f"beam-{beams}"


def image_tokenizer(loaded: LoadedRun, device):
    """The dataset's VQ model, checked against the run's img_<k> tokens."""
    from ..imagegen.vq import load_vq

    n_tokens = int(loaded.bundle.ids.image_codes.numel())
    if n_tokens == 0:
        raise UnimpError(f"{loaded.run}: the run was not trained with img_gen (no img_<k> tokens); "
                         "train with --tasks ... img_gen")
    vq = load_vq(loaded.dataset.root, device="cpu" if str(device) == "cpu" else "auto")
    if vq.codebook_size != n_tokens:
        raise UnimpError(f"{loaded.dataset.root}: the VQ codebook has {vq.codebook_size} codes but the run has "
                         f"{n_tokens} img_<k> tokens (were the images re-tokenized after training?)")
    return vq


def _batches(indices: list[int], size: int):
    for start in range(0, len(indices), size):
        yield indices[start:start + size]


def ranking_batches(indices, samples, size: int):
    """`indices` in batches of `size`, shortest histories first: batches of similar lengths pad little, and a
    prompt model's cost is its padded length (the records are keyed by index, the metrics order-free)."""
    return _batches(sorted(indices, key=lambda i: len(samples[i].meta["history"])), size)


def ranking_records(ev: EvalContext, samples, mine: list[int], advance) -> list[dict]:
    """rec / search: the target's rank over the whole catalogue (or among the beams) and the top items."""
    loaded, spec = ev.loaded, ev.spec
    R = None if spec.decode == "rank" else loaded.setup.decoder  # beams: a token model's decoding

    # each item's token sequence after <answer> (vocab_ids checked that the tokenizer spells it so)
    trie = None if spec.decode == "rank" else R.TokenTrie.build(loaded.bundle.ids.item_tokens.tolist())
    collate = loaded.collator() if spec.decode != "rank" else None
    records = []
    for chunk in ranking_batches(mine, samples, spec.batch_size):
        group = [samples[i] for i in chunk]
        if spec.decode == "rank":
            records += _exact_ranks(loaded, chunk, group, spec)
        else:
            records += _beam_ranks(loaded, R.to_device(collate(group), loaded.device), chunk, group, spec, trie)
        advance(len(chunk))
    return records


def _record(index: int, sample, rank: int, items: list, scores: list[float]) -> dict:
    return {"index": index, "user_id": sample.meta["user_id"], "target": sample.meta["target"], "rank": int(rank),
            "top": [[item, round(score, 5)] for item, score in zip(items, scores)
                    if score != float("-inf")]}  # an excluded item is never listed (nor -Infinity written)


def _exact_ranks(loaded: LoadedRun, chunk: list[int], group, spec: EvaluateSpec) -> list[dict]:
    """One forward pass: every item's score (the model family's), the target's rank (pessimistic ties), the top items."""
    from . import topk

    targets = [s.meta["target"] for s in group]
    mask = (topk.exclusion_mask([s.meta["history"] for s in group], targets, loaded.bundle.n_items)
            if spec.exclude_history else None)  # (B, N)
    scores = loaded.setup.family.rank_scores(loaded.setup, loaded.bundle.model, group, device=loaded.device,
                                             max_tokens=loaded.max_tokens, precision=spec.precision)  # (B, N)
    ranks = M.target_ranks(scores.numpy(), targets, None if mask is None else mask.numpy())
    top_scores, top_items = topk.top_items(scores, spec.save_top, mask)
    return [_record(i, s, r, items, values)
            for i, s, r, items, values in zip(chunk, group, ranks, top_items.tolist(), top_scores.tolist())]


def _beam_ranks(loaded: LoadedRun, batch, chunk: list[int], group, spec: EvaluateSpec, trie) -> list[dict]:
    """Beam search, constrained to valid item ids (beam) or not (free): the target's place among the beams."""
    R = loaded.setup.decoder
    ids = loaded.bundle.ids
    banned = ([set(s.meta["history"]) - {s.meta["target"]} for s in group]
              if spec.exclude_history else [set()] * len(group))
    if spec.decode == "beam":
        result = R.constrained_beam(loaded.bundle.model, batch, trie, num_beams=spec.num_beams, eoc_id=ids.eoc,
                                    pad_id=ids.pad, banned=banned if spec.exclude_history else None,
                                    precision=spec.precision)
    else:
        codes = loaded.ctx.item_codes
        result = R.free_beam(loaded.bundle.model, batch, loaded.bundle.tokenizer, loaded.bundle.n_items, num_beams=spec.num_beams,
                             max_new_tokens=trie.depth + 2, eoc_id=ids.eoc, pad_id=ids.pad, precision=spec.precision,
                             codes=None if codes is None else {t: i for i, t in enumerate(codes.tuples)})
    records = []
    for row, (i, s) in enumerate(zip(chunk, group)):
        # free decoding cannot be steered: history items are dropped from its outputs afterwards
        keep = [k for k, item in enumerate(result.items[row]) if item not in banned[row]]
        items = [result.items[row][k] for k in keep]
        target = s.meta["target"]
        rec = _record(i, s, items.index(target) if target in items else M.ABSENT, items,
                      [result.scores[row][k] for k in keep])
        if spec.decode == "free":
            rec["outputs"] = result.texts[row]
            rec["invalid"] = sum(item is None for item in result.items[row])
        records.append(rec)
    return records


def _text_records(ev: EvalContext, samples, mine: list[int], advance, max_new: int,
                  parse: Callable[[Any, str], dict]) -> list[dict]:
    """Generate each answer; `parse(sample, text)` turns it into the record's task fields."""
    loaded, spec = ev.loaded, ev.spec
    R = loaded.setup.decoder
    collate = loaded.collator()
    ids = loaded.bundle.ids
    records = []
    for chunk in _batches(mine, spec.batch_size):
        group = [samples[i] for i in chunk]
        batch = R.to_device(collate(group), loaded.device)
        texts = R.generate_texts(loaded.bundle.model, batch, loaded.bundle.tokenizer, max_new_tokens=max_new,
                                 num_beams=spec.text_beams, eoc_id=ids.eoc, pad_id=ids.pad, eos_id=ids.eos,
                                 precision=spec.precision)
        records += [{"index": i, "user_id": s.meta["user_id"], "generated": text, **parse(s, text)}
                    for i, s, text in zip(chunk, group, texts)]
        advance(len(chunk))
    return records


def exp_records(ev: EvalContext, samples, mine: list[int], advance) -> list[dict]:
    """exp: the generated rating and explanation beside the true ones."""
    def parse(s, text: str) -> dict:
        rating, explanation = M.parse_exp_output(text)
        true = s.meta.get("rating")
        return {"target": s.meta["target"], "rating": rating,
                "true_rating": None if true is None or not np.isfinite(true) else float(true),
                "explanation": explanation, "true_explanation": s.meta["explanation"]}

    return _text_records(ev, samples, mine, advance, ev.spec.max_new_tokens, parse)


def selection_records(ev: EvalContext, samples, mine: list[int], advance) -> list[dict]:
    """img_sel: the selected slots beside the true ones."""
    def parse(s, text: str) -> dict:
        slots, others = M.parse_slots(text)
        return {"candidates": s.meta["candidates"], "slots": sorted(slots), "other_tokens": others,
                "true_slots": s.meta["slots"]}

    return _text_records(ev, samples, mine, advance, SLOT_TOKENS, parse)


def check_image_tokenizer(ev: EvalContext) -> None:
    """img_gen: the dataset's VQ model fits the run (checked before any task is evaluated)."""
    ev.once("vq", lambda: image_tokenizer(ev.loaded, ev.loaded.device))


def image_records(ev: EvalContext, samples, mine: list[int], advance) -> list[dict]:
    """img_gen: exactly one image's codes per prompt, decoded and scored against the true picture.

    The first `spec.image_pairs` instances also get a generated|true PNG in `out_dir/images/`."""
    loaded, spec, out_dir = ev.loaded, ev.spec, ev.out_dir
    vq = ev.once("vq", lambda: image_tokenizer(loaded, loaded.device))
    from ..imagegen.quality import psnr, ssim, to_unit
    from . import image_gen as IG

    R = loaded.setup.decoder
    collate = loaded.collator()
    ids = loaded.bundle.ids
    images = dict(zip(loaded.dataset.items["item_id"].to_list(), loaded.dataset.items["image"].to_list()))
    records = []
    for chunk in _batches(mine, spec.batch_size):
        group = [samples[i] for i in chunk]
        batch = R.to_device(collate(group), loaded.device)
        codes = IG.generate_codes(R, loaded.bundle.model, batch, ids.image_codes, vq.codes_per_image, eoc_id=ids.eoc,
                                  pad_id=ids.pad, num_beams=spec.text_beams, precision=spec.precision)  # (B, n)
        true_codes = _torch_long([s.meta["codes"] for s in group])
        generated, reconstructed = vq.decode(codes), vq.decode(true_codes)
        for row, (i, s) in enumerate(zip(chunk, group)):
            rec = {"index": i, "user_id": s.meta["user_id"], "target": s.meta["target"], "query": s.meta["query"],
                   "codes": codes[row].tolist(), "true_codes": s.meta["codes"],
                   "code_accuracy": IG.code_accuracy(codes[row].tolist(), s.meta["codes"])}
            truth = IG.true_image(loaded.dataset.root, images.get(s.meta["target"]), vq.resolution)
            if truth is not None:
                t = to_unit(truth)
                rec.update(psnr=min(psnr(to_unit(generated[row]), t), 100.0), ssim=ssim(to_unit(generated[row]), t),
                           vq_psnr=min(psnr(to_unit(reconstructed[row]), t), 100.0),
                           vq_ssim=ssim(to_unit(reconstructed[row]), t))
                if i < spec.image_pairs:
                    name = f"{i:04d}-user{s.meta['user_id']}-item{s.meta['target']}.png"
                    write_bytes_atomic(out_dir / IMAGES / name, IG.pair_png(generated[row], truth))
                    rec["pair"] = f"{IMAGES}/{name}"
            records.append(rec)
        advance(len(chunk))
    return records


def _torch_long(rows: list[list[int]]):
    import torch

    return torch.tensor(rows, dtype=torch.long)


def image_summary(records: list[dict], samples, ev: EvalContext) -> dict:
    """Means over the instances (PSNR/SSIM over those whose true picture could be read) and FID's status
    (the main process only: FID runs there)."""
    if not ev.is_main:
        return {}
    spec, vq, root = ev.spec, ev.cache["vq"], ev.loaded.dataset.root
    from . import image_gen as IG

    scored = [r for r in records if "psnr" in r]

    def mean(key: str, rows: list[dict]) -> float | None:
        return float(np.mean([r[key] for r in rows])) if rows else None

    out: dict[str, Any] = {
        "decode": _greedy_or_beams(spec.text_beams),
        "grid": vq.grid, "codes_per_image": vq.codes_per_image, "codebook_size": vq.codebook_size,
        "resolution": vq.resolution,
        "metrics": {"code_accuracy": mean("code_accuracy", records), "psnr": mean("psnr", scored),
                    "ssim": mean("ssim", scored)},
        "scored_images": len(scored),
        # the same metrics for the true codes decoded: the best any generation can do with this VQ
        "vq_reconstruction": {"psnr": mean("vq_psnr", scored), "ssim": mean("vq_ssim", scored)},
        "pairs": f"{IMAGES}/" if any("pair" in r for r in records) else None,
    }
    net, why = IG.load_inception()
    if net is None or len(scored) < IG.FID_MIN_IMAGES:
        out["fid"] = {"available": False,
                      "message": why or f"FID unavailable: needs at least {IG.FID_MIN_IMAGES} scored images"}
    else:
        items = load_dataset(root).items
        images = dict(zip(items["item_id"].to_list(), items["image"].to_list()))
        generated = vq.decode(_torch_long([r["codes"] for r in scored]))
        true = [IG.true_image(root, images.get(r["target"]), vq.resolution) for r in scored]
        out["fid"] = IG.fid_report(generated, true)
    return out


def ranking_summary(records: list[dict], samples, ev: EvalContext) -> dict:
    """HR/NDCG/MRR@k of the target's rank, and the popularity baseline on the same instances, overall and by
    the target's popularity in training.

    The entry (the task's part of metrics.json) holds, beside the protocol fields:
        "metrics":    {"HR@1": float, ..., "MRR@20": float}   the model, every user
        "popularity": {"HR@1": ..., ...}                       the most-popular baseline, every user
        "by_popularity": {"<5": {"users": n, "HR@1": ..., ..., "MRR@20": ...}, "5-19": {...}, "20+": {...}}
            the model over the users whose target the training data holds fewer than 5 times, 5 to 19
            times, 20 times or more (`metrics.POPULARITY_EDGES`); the same metric names as "metrics"; every
            bucket present, in that order; an empty bucket has "users": 0 and null metrics
        "popularity_by_popularity": the same for the popularity baseline
    "Training data" is what the popularity baseline counts (`runner.training_interactions`). A metric that
    cannot be measured (k beyond the beams) is null in every one of them.
    """
    spec, counts = ev.spec, ev.counts
    ranks = np.array([r["rank"] for r in records], dtype=np.int64)
    targets = np.array([r["target"] for r in records], dtype=np.int64)
    exclude = [samples[r["index"]].meta["history"] for r in records] if spec.exclude_history else None
    out: dict[str, Any] = {"decode": spec.decode, "exclude_history": spec.exclude_history}
    # a beam search returns num_beams items: deeper cut-offs cannot be measured
    ks = list(spec.ks) if spec.decode == "rank" else [k for k in spec.ks if k <= spec.num_beams]
    measured = set(RM.names(ks))
    values = M.ranking_metrics(ranks, ks) if ks else {}
    out["metrics"] = {name: values.get(name) for name in RM.names(spec.ks)}
    if spec.decode == "rank":
        out["ties"] = "pessimistic: items scoring exactly the target's score count as ranked above it"
    else:
        out["num_beams"] = spec.num_beams
        if len(ks) < len(spec.ks):
            out["note"] = f"k > {spec.num_beams} not measurable with {spec.num_beams} beams (null)"
    if spec.decode == "free":
        outputs = sum(len(r["outputs"]) for r in records)
        out["invalid_share"] = sum(r["invalid"] for r in records) / max(outputs, 1)
        out["invalid_top1_share"] = float(np.mean([r["top"][0][0] is None if r["top"] else True for r in records]))
    popularity_ranks = M.popularity_ranks(counts, targets, exclude)
    out["popularity"] = M.ranking_metrics(popularity_ranks, spec.ks)
    seen = counts[targets]  # (B,) how often each target occurs in the training data
    by_model = M.metrics_by_popularity(ranks, seen, spec.ks)
    out["by_popularity"] = {label: {name: v if name == "users" or name in measured else None for name, v in b.items()}
                            for label, b in by_model.items()}
    out["popularity_by_popularity"] = M.metrics_by_popularity(popularity_ranks, seen, spec.ks)
    out["candidates"] = (f"the whole catalogue ({len(counts):,} items)" if spec.decode == "rank"
                         else f"the {spec.num_beams} items of a {spec.decode} beam search")
    return out


def exp_summary(records: list[dict], samples, ev: EvalContext) -> dict:
    """RMSE/MAE of the ratings (beside the training mean) and BLEU/ROUGE/METEOR of the explanations."""
    from .text_metrics import explanation_metrics, find_wordnet

    spec, train_ratings = ev.spec, ev.train_ratings
    wordnet = ev.once("wordnet", find_wordnet)

    mean = float(np.mean(train_ratings)) if train_ratings else None
    if spec.rating_policy == "fill" and mean is None:
        raise UnimpError("rating_policy fill: the training data has no ratings to take the mean of")
    predicted = [r["rating"] for r in records]
    true = [r["true_rating"] for r in records]
    out: dict[str, Any] = {"decode": _greedy_or_beams(spec.text_beams),
                           "max_new_tokens": spec.max_new_tokens}
    out["rating"] = M.rating_metrics(predicted, true, spec.rating_policy, mean if spec.rating_policy == "fill" else None)
    if mean is not None:
        out["rating_baseline"] = {"predict": f"training mean rating {mean:.4f}",
                                  **M.rating_metrics([mean] * len(true), true, "exclude")}
    out["explanation"] = explanation_metrics([r["explanation"] for r in records],
                                             [r["true_explanation"] for r in records], wordnet)
    return out


def selection_summary(records: list[dict], samples, ev: EvalContext) -> dict:
    """Precision/recall/F1 of the selected slots."""
    spec = ev.spec
    return {"decode": _greedy_or_beams(spec.text_beams),
            "metrics": M.selection_metrics([r["slots"] for r in records], [r["true_slots"] for r in records],
                                           [r["other_tokens"] for r in records])}
