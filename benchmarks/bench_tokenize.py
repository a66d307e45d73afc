"""Benchmark (not a test): `unimp tokenize-images` on the bundled synthetic sample with default settings.

Prints the codebook training time, the reconstruction quality (PSNR / SSIM on the held-out images) and
codebook usage, then the CPU encoding throughput in images/s: the whole path (JPEG decode + resize on a
thread pool + VQ encoder + quantizer) over the sample's images repeated `--repeat` times, and the model
alone on ready tensors. The load average is printed because a busy machine slows torch's threads a lot.

    .venv/bin/python benchmarks/bench_tokenize.py [--steps 400] [--resolution 32] [--repeat 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from unimp_core.prepare import run_prepare
from unimp_core.data.store import load_dataset
from unimp_core.imagegen import tokenize as tok_mod
from unimp_core.imagegen.vq import load_vq
from unimp_core.progress import Progress
from unimp_core.specs.data import PrepareSpec
from unimp_core.specs.images import TokenizeImagesSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=None, help="codebook training steps (default: the spec's)")
    ap.add_argument("--resolution", type=int, default=None, help="image side in pixels (default: the spec's)")
    ap.add_argument("--codebook-size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=20, help="encode the sample's images this many times over")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = run_prepare(PrepareSpec(datasets=["sample"], out=Path(tmp) / "sample", cache_dir=Path(tmp) / "cache"))
        over = {"data": root, "resolution": args.resolution, "batch_size": args.batch_size,
                "codebook": {"steps": args.steps, "size": args.codebook_size}}
        over["codebook"] = {k: v for k, v in over["codebook"].items() if v is not None}
        spec = TokenizeImagesSpec.model_validate({k: v for k, v in over.items() if v is not None})
        print(f"torch threads: {torch.get_num_threads()}, load average before: {os.getloadavg()[0]:.2f}")
        with Progress.rich() as progress:
            t = time.perf_counter()
            rec = tok_mod.run_tokenize_images(spec, progress)
            total = time.perf_counter() - t
        tr, q, u = rec["training"], rec["quality"], rec["codebook_usage"]
        print(f"sample: {rec['items']['encoded']} item images, {rec['resolution']} px, {rec['grid']}x{rec['grid']} codes, "
              f"codebook {rec['codebook_size']}")
        print(f"training: {tr['steps']} steps on {tr['train_images']} images in {tr['seconds']:.1f} s "
              f"({tr['seconds'] / tr['steps']:.3f} s/step); whole command {total:.1f} s")
        print(f"held-out reconstruction ({q['images']} images): PSNR {q['psnr']:.2f} dB, SSIM {q['ssim']:.4f}")
        print(f"codebook usage: {u['used']}/{rec['codebook_size']} ({u['share']:.0%}), perplexity {u['perplexity']}")

        # Encoding throughput on more images: the sample's rows repeated (the shards are thrown away).
        ds = load_dataset(root)
        rows, _ = tok_mod._image_rows(ds, root)
        many = [(i, rel, size) for i, (_, rel, size) in enumerate(rows * args.repeat)]
        vq = load_vq(root, device="cpu")
        identity = {"bench": True}
        t = time.perf_counter()
        df = tok_mod._encode_all(vq, root, many, spec.batch_size, identity, Progress())
        dt = time.perf_counter() - t
        print(f"encoding (decode JPEG + resize + encode): {df.height} images in {dt:.2f} s = {df.height / dt:.0f} images/s")
        x = torch.randint(0, 256, (256, 3, vq.resolution, vq.resolution), dtype=torch.uint8)
        vq.encode_tensor(x[: spec.batch_size])  # warm-up
        t = time.perf_counter()
        for start in range(0, len(x), spec.batch_size):
            vq.encode_tensor(x[start:start + spec.batch_size])
        dt = time.perf_counter() - t
        print(f"encoding (model only, batch {spec.batch_size}): {len(x) / dt:.0f} images/s")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
