"""`unimp evaluate`: load a run, score the stored evaluation instances, write metrics and predictions.

    setup (run folder -> model with its weights, dataset, task context)
    -> per task: this process's share of the instances -> records (one per instance, keyed by its index)
    -> gather the records of every process (no duplicates, no drops) -> metrics (+ popularity baseline)
    -> evaluations/<name>/metrics.json and predictions/<task>.jsonl (main process, atomic writes)

Where the results go: `RUN/evaluations/<checkpoint>-<split>[-<decode>][-exclude-history][-h<N>][-first<N>]/`
(e.g. `runs/x/evaluations/final-test/metrics.json`), so evaluating another checkpoint, split or
protocol never overwrites a result; evaluating more tasks into the same folder adds them to its
metrics.json (a task evaluated again replaces its own entry).

Under `accelerate launch` (several processes) each process takes every n-th instance; the records are
gathered with `accelerate.utils.gather_object` and de-duplicated by instance index, so the metrics are
exactly those of a one-process evaluation.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .. import run_folder as RF
from ..data.store import Dataset, load_dataset
from ..errors import UnimpError
from ..io import atomic_path, write_bytes_atomic
from ..progress import Progress
from ..run_folder import IMAGES, PREDICTIONS
from ..specs.evaluate import EVAL_TASKS, EvaluateSpec
from ..tasks import TaskContext, build_eval_samples, history_lengths, instance_table
from . import metrics as M

if TYPE_CHECKING:
    from ..model.setup import LoadedRun

SLOT_TOKENS = 12  # img_sel answers are a few slot tokens ("s_0 s_2") and the end of the chunk


# ------------------------------------------------------------------------------------- training data


def training_interactions(ds: Dataset, ctx: TaskContext) -> tuple[np.ndarray, list[float]]:
    """Item ids and ratings that training could see: every interaction of the training users
    (user-split), or each user's prefix before the validation and test items (leave-one-out)."""
    if ctx.protocol == "leave-one-out":
        users = {u: len(s) - 2 for u, s in ctx.sequences.items()}
    else:
        train = ds.users.filter(ds.users["split"] == "train")["user_id"].to_list()
        users = {u: len(ctx.sequences[u]) for u in train if u in ctx.sequences}
    items = [ctx.sequences[u][:n] for u, n in users.items() if n > 0]
    ratings = [r for u, n in users.items() for r in ctx.ratings[u][:max(n, 0)]
               if r is not None and np.isfinite(r)]
    return (np.concatenate(items) if items else np.zeros(0, dtype=np.int64)), ratings


# --------------------------------------------------------------------------------------- per task


def eval_history(loaded: LoadedRun, spec: EvaluateSpec, tasks: list[str]) -> dict[str, int]:
    """task -> history length: --history-len for every task when given, else the run's own lengths
    (its per-task overrides, the task's default such as img_gen's 2, else the run's history_len)."""
    if spec.history_len is not None:
        return {t: spec.history_len for t in tasks}
    data = loaded.train_spec.data
    return history_lengths(tasks, data.history_len, data.task_history_len)


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


def _rank_records(loaded: LoadedRun, samples, mine: list[int], spec: EvaluateSpec, advance) -> list[dict]:
    """rec / search: the target's rank over the whole catalogue (or among the beams) and the top items."""
    from . import ranking as R

    trie = None if spec.decode == "rank" else R.TokenTrie.build(R.item_token_sequences(loaded.bundle.tokenizer,
                                                                                         loaded.bundle.n_items))
    collate = loaded.collator()
    records = []
    for chunk in _batches(mine, spec.batch_size):
        group = [samples[i] for i in chunk]
        batch = R.to_device(collate(group), loaded.device)
        if spec.decode == "rank":
            records += _exact_ranks(loaded, batch, chunk, group, spec)
        else:
            records += _beam_ranks(loaded, batch, chunk, group, spec, trie)
        advance(len(chunk))
    return records


def _record(index: int, sample, rank: int, items: list, scores: list[float]) -> dict:
    return {"index": index, "user_id": sample.meta["user_id"], "target": sample.meta["target"], "rank": int(rank),
            "top": [[item, round(score, 5)] for item, score in zip(items, scores)]}


def _exact_ranks(loaded: LoadedRun, batch, chunk: list[int], group, spec: EvaluateSpec) -> list[dict]:
    """One forward pass: every item token's logit, the target's rank (pessimistic ties), the top items."""
    from . import ranking as R

    targets = [s.meta["target"] for s in group]
    mask = (R.exclusion_mask([s.meta["history"] for s in group], targets, loaded.bundle.n_items)
            if spec.exclude_history else None)  # (B, N)
    scores = R.item_scores(R.answer_logits(loaded.bundle.model, batch, spec.precision), loaded.bundle.ids.items).cpu()
    ranks = M.target_ranks(scores.numpy(), targets, None if mask is None else mask.numpy())
    top_scores, top_items = R.top_items(scores, spec.save_top, mask)
    return [_record(i, s, r, items, values)
            for i, s, r, items, values in zip(chunk, group, ranks, top_items.tolist(), top_scores.tolist())]


def _beam_ranks(loaded: LoadedRun, batch, chunk: list[int], group, spec: EvaluateSpec, trie) -> list[dict]:
    """Beam search, constrained to valid item ids (beam) or not (free): the target's place among the beams."""
    from . import ranking as R

    ids = loaded.bundle.ids
    banned = ([set(s.meta["history"]) - {s.meta["target"]} for s in group]
              if spec.exclude_history else [set()] * len(group))
    if spec.decode == "beam":
        result = R.constrained_beam(loaded.bundle.model, batch, trie, num_beams=spec.num_beams, eoc_id=ids.eoc,
                                    pad_id=ids.pad, banned=banned if spec.exclude_history else None,
                                    precision=spec.precision)
    else:
        result = R.free_beam(loaded.bundle.model, batch, loaded.bundle.tokenizer, loaded.bundle.n_items, num_beams=spec.num_beams,
                             max_new_tokens=trie.depth + 2, eoc_id=ids.eoc, pad_id=ids.pad, precision=spec.precision)
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


def _text_records(loaded: LoadedRun, samples, mine: list[int], spec: EvaluateSpec, advance, task: str) -> list[dict]:
    """exp / img_sel: generate each answer and parse it."""
    from . import ranking as R

    collate = loaded.collator()
    ids = loaded.bundle.ids
    max_new = spec.max_new_tokens if task == "exp" else SLOT_TOKENS
    records = []
    for chunk in _batches(mine, spec.batch_size):
        group = [samples[i] for i in chunk]
        batch = R.to_device(collate(group), loaded.device)
        texts = R.generate_texts(loaded.bundle.model, batch, loaded.bundle.tokenizer, max_new_tokens=max_new,
                                 num_beams=spec.text_beams, eoc_id=ids.eoc, pad_id=ids.pad, eos_id=ids.eos,
                                 precision=spec.precision)
        for i, s, text in zip(chunk, group, texts):
            rec = {"index": i, "user_id": s.meta["user_id"], "generated": text}
            if task == "exp":
                rating, explanation = M.parse_exp_output(text)
                true = s.meta.get("rating")
                rec.update(target=s.meta["target"], rating=rating,
                           true_rating=None if true is None or not np.isfinite(true) else float(true),
                           explanation=explanation, true_explanation=s.meta["explanation"])
            else:
                slots, others = M.parse_slots(text)
                rec.update(candidates=s.meta["candidates"], slots=sorted(slots), other_tokens=others,
                           true_slots=s.meta["slots"])
            records.append(rec)
        advance(len(chunk))
    return records


def _image_records(loaded: LoadedRun, samples, mine: list[int], spec: EvaluateSpec, advance, vq,
                   out_dir: Path) -> list[dict]:
    """img_gen: exactly one image's codes per prompt, decoded and scored against the true picture.

    The first `spec.image_pairs` instances also get a generated|true PNG in `out_dir/images/`."""
    from ..imagegen.quality import psnr, ssim, to_unit
    from . import image_gen as IG
    from . import ranking as R

    collate = loaded.collator()
    ids = loaded.bundle.ids
    images = dict(zip(loaded.dataset.items["item_id"].to_list(), loaded.dataset.items["image"].to_list()))
    records = []
    for chunk in _batches(mine, spec.batch_size):
        group = [samples[i] for i in chunk]
        batch = R.to_device(collate(group), loaded.device)
        codes = IG.generate_codes(loaded.bundle.model, batch, ids.image_codes, vq.codes_per_image, eoc_id=ids.eoc,
                                  pad_id=ids.pad, num_beams=spec.text_beams, precision=spec.precision)  # (B, n)
        true_codes = torch_long([s.meta["codes"] for s in group])
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


def torch_long(rows: list[list[int]]):
    import torch

    return torch.tensor(rows, dtype=torch.long)


# ---------------------------------------------------------------------------------------- metrics


def _image_summary(records: list[dict], spec: EvaluateSpec, vq, root: Path) -> dict:
    """Means over the instances (PSNR/SSIM over those whose true picture could be read) and FID's status."""
    from . import image_gen as IG

    scored = [r for r in records if "psnr" in r]

    def mean(key: str, rows: list[dict]) -> float | None:
        return float(np.mean([r[key] for r in rows])) if rows else None

    out: dict[str, Any] = {
        "decode": "greedy" if spec.text_beams == 1 else f"beam-{spec.text_beams}",
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
        generated = vq.decode(torch_long([r["codes"] for r in scored]))
        true = [IG.true_image(root, images.get(r["target"]), vq.resolution) for r in scored]
        out["fid"] = IG.fid_report(generated, true)
    return out


def _ranking_summary(records: list[dict], spec: EvaluateSpec, counts: np.ndarray, samples) -> dict:
    ranks = np.array([r["rank"] for r in records], dtype=np.int64)
    targets = [r["target"] for r in records]
    exclude = [samples[r["index"]].meta["history"] for r in records] if spec.exclude_history else None
    out: dict[str, Any] = {"decode": spec.decode, "exclude_history": spec.exclude_history}
    if spec.decode == "rank":
        out["metrics"] = M.ranking_metrics(ranks, spec.ks)
        out["ties"] = "pessimistic: items scoring exactly the target's score count as ranked above it"
    else:
        # a beam search returns num_beams items: deeper cut-offs cannot be measured
        ks = [k for k in spec.ks if k <= spec.num_beams]
        values = M.ranking_metrics(ranks, ks) if ks else {}
        out["metrics"] = {f"{m}@{k}": values.get(f"{m}@{k}") for m in M.RANK_METRICS for k in spec.ks}
        out["num_beams"] = spec.num_beams
        if len(ks) < len(spec.ks):
            out["note"] = f"k > {spec.num_beams} not measurable with {spec.num_beams} beams (null)"
    if spec.decode == "free":
        outputs = sum(len(r["outputs"]) for r in records)
        out["invalid_share"] = sum(r["invalid"] for r in records) / max(outputs, 1)
        out["invalid_top1_share"] = float(np.mean([r["top"][0][0] is None if r["top"] else True for r in records]))
    out["popularity"] = M.popularity_metrics(counts, targets, spec.ks, exclude)
    return out


def _exp_summary(records: list[dict], spec: EvaluateSpec, train_ratings: list[float], wordnet) -> dict:
    from .text_metrics import explanation_metrics

    mean = float(np.mean(train_ratings)) if train_ratings else None
    if spec.rating_policy == "fill" and mean is None:
        raise UnimpError("rating_policy fill: the training data has no ratings to take the mean of")
    predicted = [r["rating"] for r in records]
    true = [r["true_rating"] for r in records]
    out: dict[str, Any] = {"decode": "greedy" if spec.text_beams == 1 else f"beam-{spec.text_beams}",
                           "max_new_tokens": spec.max_new_tokens}
    out["rating"] = M.rating_metrics(predicted, true, spec.rating_policy, mean if spec.rating_policy == "fill" else None)
    if mean is not None:
        out["rating_baseline"] = {"predict": f"training mean rating {mean:.4f}",
                                  **M.rating_metrics([mean] * len(true), true, "exclude")}
    out["explanation"] = explanation_metrics([r["explanation"] for r in records],
                                             [r["true_explanation"] for r in records], wordnet)
    return out


def _selection_summary(records: list[dict], spec: EvaluateSpec) -> dict:
    return {"decode": "greedy" if spec.text_beams == 1 else f"beam-{spec.text_beams}",
            "metrics": M.selection_metrics([r["slots"] for r in records], [r["true_slots"] for r in records],
                                           [r["other_tokens"] for r in records])}


# --------------------------------------------------------------------------------- distributed


def gather_records(records: list[dict], n: int, gather: Callable[[list], list] | None = None) -> list[dict]:
    """Every process's records, one per instance index 0..n-1, in index order.

    `gather` collects a list from every process (accelerate's `gather_object`; None: one process).
    Raises UnimpError when an instance is missing (a dropped shard) rather than scoring fewer users.
    """
    merged = gather(records) if gather is not None else records
    by_index: dict[int, dict] = {}
    for rec in merged:
        by_index.setdefault(int(rec["index"]), rec)
    missing = sorted(set(range(n)) - set(by_index))
    if missing or len(by_index) != n:
        raise UnimpError(f"evaluation: {len(missing)} of {n} instances missing after gathering (e.g. {missing[:3]})")
    return [by_index[i] for i in range(n)]


def shard(n: int, rank: int, world: int) -> list[int]:
    """The instance indices process `rank` of `world` evaluates (every world-th one)."""
    return list(range(rank, n, world))


# ------------------------------------------------------------------------------------------- output


def evaluation_name(spec: EvaluateSpec, run_history_len: int, tasks: list[str] | None = None) -> str:
    """The folder under RUN/evaluations/ that holds this evaluation (see the module docstring).

    --decode and --exclude-history only change rec/search numbers, so they name the folder only when
    one of those is evaluated; a task's own generation settings are recorded in its entry.
    """
    parts = [spec.checkpoint, spec.split]
    ranking = tasks is None or bool({"rec", "search"} & set(tasks))
    if spec.decode != "rank" and ranking:
        parts.append(spec.decode)
    if spec.exclude_history and ranking:
        parts.append("exclude-history")
    if spec.history_len is not None and spec.history_len != run_history_len:
        parts.append(f"h{spec.history_len}")
    if spec.limit is not None:
        parts.append(f"first{spec.limit}")
    return "-".join(parts)


def _write_predictions(path: Path, records: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")


def _merge_previous(out_dir: Path, tasks: dict[str, Any]) -> dict[str, Any]:
    """Tasks evaluated earlier into the same folder stay in its metrics.json."""
    previous = (RF.read_evaluation(out_dir) or {}).get("tasks")
    if not isinstance(previous, dict):
        return tasks
    return {**{t: v for t, v in previous.items() if t not in tasks}, **tasks}


# -------------------------------------------------------------------------------------------- entry


def run_evaluate(spec: EvaluateSpec, progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate a run; returns the metrics (what metrics.json holds) on every process.

    The main process writes RUN/evaluations/<name>/metrics.json and predictions/<task>.jsonl.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from ..model.setup import load_run

    progress = progress or Progress()
    started = time.perf_counter()
    # cpu=True where there is no GPU: `accelerate launch --multi_gpu` then runs gloo processes on the CPU
    state = PartialState(cpu=not torch.cuda.is_available())
    loaded = load_run(spec.run, spec.checkpoint, spec.data, device=state.device, history_len=spec.history_len,
                  max_tokens=spec.max_tokens, progress=progress)
    tasks = spec.tasks or [t for t in loaded.train_spec.data.tasks if t in EVAL_TASKS]
    missing = [t for t in tasks if instance_table(t) not in loaded.dataset.instances]
    if missing:
        raise UnimpError(f"{loaded.dataset.root}: no evaluation instances for {', '.join(missing)} (rerun `unimp prepare`)")
    train_items, train_ratings = training_interactions(loaded.dataset, loaded.ctx)
    counts = M.item_counts(train_items, loaded.bundle.n_items)
    gather = gather_object if state.num_processes > 1 else None
    out_dir = RF.evaluation_dir(spec.run, evaluation_name(spec, loaded.train_spec.data.history_len, tasks))

    results: dict[str, Any] = {}
    wordnet = None
    vq = image_tokenizer(loaded, state.device) if "img_gen" in tasks else None
    lengths = eval_history(loaded, spec, tasks)
    for task in tasks:
        samples = build_eval_samples(loaded.dataset, task, spec.split, lengths, loaded.ctx)[: spec.limit]
        if not samples:
            results[task] = {"users": 0, "note": f"no {spec.split} instances"}
            continue
        mine = shard(len(samples), state.process_index, state.num_processes)
        t0 = time.perf_counter()
        with progress.task(f"evaluating {task}", total=len(mine)) as advance:
            if task in ("rec", "search"):
                records = _rank_records(loaded, samples, mine, spec, advance)
            elif task == "img_gen":
                records = _image_records(loaded, samples, mine, spec, advance, vq, out_dir)
            else:
                records = _text_records(loaded, samples, mine, spec, advance, task)
        seconds = [time.perf_counter() - t0]
        records = gather_records(records, len(samples), gather)
        seconds = max(gather(seconds) if gather else seconds)  # the slowest process sets the pace
        if task in ("rec", "search"):
            summary = _ranking_summary(records, spec, counts, samples)
        elif task == "exp":
            if wordnet is None:
                from .text_metrics import find_wordnet

                wordnet = find_wordnet()
            summary = _exp_summary(records, spec, train_ratings, wordnet)
        elif task == "img_gen":
            summary = _image_summary(records, spec, vq, loaded.dataset.root) if state.is_main_process else {}
        else:
            summary = _selection_summary(records, spec)
        results[task] = {"users": len(samples), **summary, "seconds": round(seconds, 3),
                         "users_per_s": round(len(samples) / max(seconds, 1e-9), 2),
                         "predictions": f"{PREDICTIONS}/{task}.jsonl"}
        if state.is_main_process:
            _write_predictions(RF.predictions_file(out_dir, task), records)

    report = {
        "run": str(spec.run), "checkpoint": spec.checkpoint, "split": spec.split, "protocol": loaded.ctx.protocol,
        "dataset": str(loaded.dataset.root), "synthetic": bool(loaded.dataset.manifest.get("synthetic", False)),
        "history_len": loaded.history_len, "task_history_len": lengths, "processes": state.num_processes,
        "device": str(loaded.device),
        "folder": str(out_dir), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3), "spec": spec.model_dump(mode="json"),
    }
    report["evaluated"] = list(results)
    report["tasks"] = _merge_previous(out_dir, results) if state.is_main_process else results
    if state.is_main_process:
        RF.write_evaluation(out_dir, report)
    state.wait_for_everyone()
    return report
