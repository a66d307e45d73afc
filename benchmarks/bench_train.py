"""Benchmark (not a test): training speed of the tiny preset, the vision-feature cache, and a projection
for ViT-L-14 at 224 px.

    .venv/bin/python benchmarks/bench_train.py [--threads N] [--steps 10] [--vit-images 4] [--skip-vit]

(a) one training step of the default tiny model on a batch of 4 histories of 5 images (collate, forward,
    backward, clipping, AdamW step), median over --steps, with pixels and with cached features;
(b) samples/s of `run_train` on tiny (rec, batch 8, 40 steps) with and without --cache-vision-features;
(c) the forward time of open_clip ViT-L-14 (random weights) at 224 px per image on this CPU, set against
    the rest of the step measured in (a); then a FLOP-count projection for the paper's models
    (clearly a projection: nothing of the 3B/4B models runs here).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from unimp_core.prepare import run_prepare
from unimp_core.data.store import load_dataset
from unimp_core.progress import Progress
from unimp_core.specs.data import PrepareSpec
from unimp_core.specs.train import TrainSpec
from unimp_core.training.collate import make_collator
from unimp_core.training.loss import answer_loss_parts
from unimp_core.training.optim import build_optimizer
from unimp_core.training.samples import TrainingSamples
from unimp_core.model.setup import setup_model
from unimp_core.training.train import run_train

HISTORY = 5
BATCH = 4


def spec_for(data: Path, out: Path, cached: bool, **run) -> TrainSpec:
    return TrainSpec.model_validate({
        "data": {"path": str(data), "tasks": ["rec"], "history_len": HISTORY, "valid_users": 0},
        "optim": {"batch_size": 8},
        "run": {"out": str(out), "cache_vision_features": cached, "save_every": 10**6, **run},
    })


def step_times(data: Path, root: Path, cached: bool, steps: int) -> tuple[float, tuple[int, ...], float]:
    """Median seconds of one training step on BATCH histories of HISTORY images; the batch's vision_x
    shape; and the mean prompt length in tokens."""
    spec = spec_for(data, root / f"step-{cached}", cached)
    spec.run.out.mkdir(parents=True)
    ds = load_dataset(data)
    setup = setup_model(spec, ds, spec.run.out, fresh=True, progress=Progress())
    model = setup.bundle.model
    model.train()
    stream = [s for s in TrainingSamples(ds, ["rec"], HISTORY, seed=0) if len(s.image_items) == HISTORY]
    collate = make_collator(setup.bundle.tokenizer, max_length=512, images=setup.images, image_shape=setup.image_shape)
    optimizer = build_optimizer(model, 1e-4)
    params = [p for p in model.parameters() if p.requires_grad]
    times, lengths, shape = [], [], ()
    for k in range(steps + 2):
        group = stream[(k * BATCH) % (len(stream) - BATCH):][:BATCH]
        t = time.perf_counter()
        batch = collate(group)  # (B, T) tokens, vision_x (B, T_img, 1, C, H, W) or (B, T_img, 1, v, d)
        logits = model(vision_x=batch["vision_x"], lang_x=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits
        answer_loss_parts(logits, batch["labels"], batch["weights"], 2.0).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if k >= 2:  # the first steps warm up allocators and caches
            times.append(time.perf_counter() - t)
        shape = tuple(batch["vision_x"].shape)
        lengths += batch["attention_mask"].sum(dim=1).tolist()
    return statistics.median(times), shape, sum(lengths) / len(lengths)


def samples_per_second(data: Path, root: Path, cached: bool, steps: int) -> tuple[float, float]:
    """(samples/s of the training loop as `run_train` logs it, wall seconds including setup)."""
    spec = spec_for(data, root / f"run-{cached}", cached, max_steps=steps, log_every=steps)
    t = time.perf_counter()
    out = run_train(spec, Progress())
    wall = time.perf_counter() - t
    import json

    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    return last["samples_per_s"], wall


def vit_l14_seconds_per_image(n_images: int) -> float:
    """Forward of open_clip ViT-L-14's vision tower (random weights) at 224 px, as Flamingo calls it."""
    import logging

    import open_clip

    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns about random weights
    model = open_clip.create_model("ViT-L-14", pretrained=None)
    visual = model.visual.eval()
    visual.output_tokens = True
    x = torch.randn(n_images, 3, 224, 224)
    with torch.no_grad():
        visual(x[:1])  # warm-up
        t = time.perf_counter()
        _, tokens = visual(x)
        dt = time.perf_counter() - t
    assert tokens.shape == (n_images, 256, 1024), tokens.shape  # what the cache stores per image
    return dt / n_images


# Forward FLOPs of ViT-L/14 at 224 px (open_clip's model profile: 81 GMACs = 162 GFLOP per image) and
# the language models of the paper's presets (parameters). A training step with a frozen LM body costs
# about 4 * N * T FLOPs in the LM (forward 2NT, backward through activations only 2NT; no weight grads).
VIT_L14_GFLOP = 162.0
LMS = {"3b (mpt-1b-redpajama)": 1.3e9, "4b (RedPajama-INCITE-3B)": 2.8e9, "9b (mpt-7b)": 6.7e9}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--run-steps", type=int, default=40)
    ap.add_argument("--vit-images", type=int, default=4)
    ap.add_argument("--skip-vit", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = run_prepare(PrepareSpec(datasets=["sample"], out=root / "sample", cache_dir=root / "cache",
                                       sample_users=200, sample_items=120))
        print("\n(a) one training step, tiny preset, batch of 4 histories x 5 images")
        step = {}
        for cached in (False, True):
            step[cached], shape, tokens = step_times(data, root, cached, args.steps)
            label = "cached features" if cached else "pixels         "
            print(f"  {label}: {step[cached] * 1000:7.1f} ms/step (median of {args.steps}), vision_x {shape}, "
                  f"{tokens:.0f} tokens/prompt")
        print("\n(b) run_train samples/s, tiny preset, rec, batch 8")
        for cached in (False, True):
            rate, wall = samples_per_second(data, root, cached, args.run_steps)
            label = "--cache-vision-features   " if cached else "no cache (pixels)         "
            print(f"  {label}: {rate:6.1f} samples/s in the loop ({args.run_steps} steps; {wall:.1f} s with setup)")
    if args.skip_vit:
        return
    print("\n(c) ViT-L-14 at 224 px (open_clip, random weights), measured on this CPU")
    per_image = vit_l14_seconds_per_image(args.vit_images)
    images = BATCH * HISTORY
    rest = step[True]
    print(f"  forward: {per_image:.2f} s/image -> {per_image * images:.1f} s for the {images} images of one batch")
    print(f"  the rest of the tiny step (cached features): {rest * 1000:.0f} ms")
    print(f"  PROJECTION, this CPU, tiny LM behind a ViT-L-14 tower: {per_image * images + rest:.1f} s/step "
          f"without the cache vs {rest:.2f} s with it (x{(per_image * images + rest) / rest:.0f}); the frozen "
          f"tower is then nearly all of the step")
    print(f"  PROJECTION, paper models (FLOP counts, not measured; {HISTORY} images per sample, T tokens per prompt):")
    vision = HISTORY * VIT_L14_GFLOP * 1e9
    for name, n in LMS.items():
        parts = []
        for t in (round(tokens), 512):
            lm = 4 * n * t
            parts.append(f"T={t}: vision {vision / (vision + lm):4.0%} of the FLOPs, cache x{(vision + lm) / lm:.2f}")
        print(f"    {name:26s}: " + "; ".join(parts))

if __name__ == "__main__":
    main()
