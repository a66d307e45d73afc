"""The bundled synthetic shop (`--datasets sample`): generated deterministically, offline, no download.

It is SYNTHETIC: every item is labelled so (domain "synthetic", manifest flag). Users follow learnable
preferences, so a trained model must clearly beat popularity:
- each category's items form a ring; a user mostly walks their favourite category's ring one step at a
  time (next item = successor of the last one), sometimes jumping within their favourite categories;
- ratings and review texts depend on whether the item's colour is the user's favourite colour;
- images are drawn from the item's attributes: shape by category, fill colour, pattern.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ...io import atomic_path
from ...progress import Progress
from ..raw import RawData

DOMAIN = "synthetic"
CATEGORIES = [  # (category, noun, shape drawn)
    ("Sneakers", "sneaker", "circle"), ("Handbags", "handbag", "square"), ("Hats", "hat", "triangle"),
    ("Mugs", "mug", "diamond"), ("Lamps", "lamp", "hexagon"), ("Scarves", "scarf", "star"),
]
COLOURS = {
    "red": (210, 40, 40), "blue": (40, 80, 210), "green": (40, 160, 70), "yellow": (230, 200, 40),
    "purple": (140, 60, 180), "orange": (240, 130, 30), "black": (30, 30, 30), "white": (235, 235, 235),
}
PATTERNS = ["plain", "striped", "dotted", "checked"]
BRANDS = ["Synthoria", "Fakely", "Mockwell", "Samplify", "Pretendo", "Dummix"]
IMAGE_SIZE = 64


def _polygon(shape: str, c: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        angles, radii = np.linspace(-np.pi / 2, 1.5 * np.pi, 4)[:-1], [r] * 3
    elif shape == "diamond":
        angles, radii = np.linspace(-np.pi / 2, 1.5 * np.pi, 5)[:-1], [r] * 4
    elif shape == "hexagon":
        angles, radii = np.linspace(0, 2 * np.pi, 7)[:-1], [r] * 6
    else:  # star
        angles = np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:-1]
        radii = [r if k % 2 == 0 else r * 0.45 for k in range(10)]
    return [(c + rr * np.cos(a), c + rr * np.sin(a)) for a, rr in zip(angles, radii)]


def draw_item(shape: str, colour: tuple[int, int, int], pattern: str, size: int = IMAGE_SIZE):
    """A product 'photo': a coloured shape with a pattern on a light background."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (245, 245, 240))
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    c, r = size / 2, size * 0.4
    if shape == "circle":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)
    elif shape == "square":
        d.rectangle([c - r * 0.85, c - r * 0.85, c + r * 0.85, c + r * 0.85], fill=255)
    else:
        d.polygon(_polygon(shape, c, r), fill=255)
    fg = Image.new("RGB", (size, size), colour)
    fd = ImageDraw.Draw(fg)
    dark = tuple(max(0, v - 90) for v in colour) if sum(colour) > 200 else (200, 200, 200)
    step = max(4, size // 8)
    if pattern == "striped":
        for x in range(0, size, step):
            fd.rectangle([x, 0, x + step // 3, size], fill=dark)
    elif pattern == "dotted":
        for x in range(step // 2, size, step):
            for y in range(step // 2, size, step):
                fd.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=dark)
    elif pattern == "checked":
        for x in range(0, size, step):
            for y in range(0, size, step):
                if (x // step + y // step) % 2:
                    fd.rectangle([x, y, x + step - 1, y + step - 1], fill=dark)
    img.paste(fg, (0, 0), mask)
    return img


def generate(n_users: int, n_items: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (interactions, items) raw tables for the synthetic shop."""
    rng = np.random.default_rng(seed)
    colour_names = list(COLOURS)
    n_cat = len(CATEGORIES)
    cat_of = np.arange(n_items) % n_cat
    items = []
    for i in range(n_items):
        cat, noun, _ = CATEGORIES[cat_of[i]]
        colour = colour_names[rng.integers(len(colour_names))]
        pattern = PATTERNS[rng.integers(len(PATTERNS))]
        brand = BRANDS[rng.integers(len(BRANDS))]
        items.append({
            "source_id": f"SYN{i:05d}",
            "domain": DOMAIN,
            "title": f"{colour.title()} {pattern} {noun} no. {i}",
            "brand": brand,
            "category": f"Synthetic Shop > {cat}",
            "price": float(np.round(rng.uniform(5, 120), 2)),
            "description": f"A synthetic {pattern} {colour} {noun} by {brand}.",
            "_colour": colour, "_pattern": pattern, "_noun": noun,
        })
    rings = [np.flatnonzero(cat_of == k) for k in range(n_cat)]
    ring_pos = {int(it): (k, j) for k, ring in enumerate(rings) for j, it in enumerate(ring)}

    rows = []
    t0 = 1_600_000_000
    for u in range(n_users):
        favs = list(rng.choice(n_cat, size=1 if rng.random() < 0.6 else 2, replace=False))
        fav_colour = colour_names[rng.integers(len(colour_names))]
        length = int(rng.integers(10, 21))
        k = int(favs[0])
        cur = int(rings[k][rng.integers(len(rings[k]))])
        t = t0 + int(rng.integers(0, 10_000_000))
        for _ in range(length):
            it = items[cur]
            liked = it["_colour"] == fav_colour
            rating = float(np.clip(rng.normal(4.6 if liked else 3.2, 0.5), 1, 5).round())
            if rating >= 4:
                summary = f"love the {it['_colour']} colour"
            else:
                summary = f"{it['_pattern']} is fine but not my colour"
            review = f"Bought the {it['_colour']} {it['_noun']}. {summary.capitalize()}. Brand {it['brand']}."
            rows.append((f"{DOMAIN}:u{u:05d}", it["source_id"], t, rating, review, summary))
            # Same-second purchases happen: equal timestamps exercise the seeded tie-break.
            t += 0 if rng.random() < 0.05 else int(rng.integers(3600, 30 * 86400))
            if rng.random() < 0.85:
                kk, j = ring_pos[cur]
                cur = int(rings[kk][(j + 1) % len(rings[kk])])
            else:
                kk = int(favs[rng.integers(len(favs))])
                cur = int(rings[kk][rng.integers(len(rings[kk]))])
    inter = pl.DataFrame(rows, schema=["user_key", "source_id", "timestamp", "rating", "review", "summary"], orient="row")
    items_df = pl.DataFrame(items)
    return inter, items_df


def load(spec, progress: Progress) -> RawData:
    """Generate the synthetic shop; images are drawn once into the cache dir and reused."""
    inter, items = generate(spec.sample_users, spec.sample_items, spec.seed)
    image_dir = Path(spec.cache_dir) / "sample" / f"images-{IMAGE_SIZE}"
    image_dir.mkdir(parents=True, exist_ok=True)
    shapes = {cat: shape for cat, _, shape in CATEGORIES}
    paths = []
    for row in progress.track(items.iter_rows(named=True), "drawing synthetic item images", total=items.height):
        path = image_dir / f"{row['source_id']}.jpg"
        if not path.exists():
            img = draw_item(shapes[row["category"].split(" > ")[1]], COLOURS[row["_colour"]], row["_pattern"])
            with atomic_path(path) as tmp:
                img.save(tmp, format="JPEG", quality=90)
        paths.append(str(path))
    items = items.drop("_colour", "_pattern", "_noun").with_columns(pl.Series("image_path", paths))
    return RawData(interactions=inter, items=items, synthetic=True,
                   notes={"synthetic": "generated by unimp's bundled sample shop; not real users or products"})
