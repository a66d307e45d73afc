"""Writers of small Amazon Review files in the exact real formats (gzip JSON lines; 2014 meta as one
single-quoted Python dict literal per line, as the original dumps were written with str(dict))."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path


def gz(lines: list[str | bytes]) -> bytes:
    """Gzip-compressed bytes of `lines`, one per line."""
    body = b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)
    return gzip.compress(body, mtime=0)


def write_gz(path: Path, lines: list[str | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gz(lines))
    return path


def review_2014(user: str, asin: str, rating: float = 5.0, ts: int = 1_400_000_000, text: str = "great",
                summary: str = "nice", name: str | None = "Ann") -> str:
    r = {"reviewerID": user, "asin": asin}
    if name is not None:  # reviewerName is missing in some real lines
        r["reviewerName"] = name
    r.update({"helpful": [0, 0], "reviewText": text, "overall": rating, "summary": summary,
              "unixReviewTime": ts, "reviewTime": "05 13, 2014"})
    return json.dumps(r)


def review_2018(user: str, asin: str, rating: float = 5.0, ts: int = 1_500_000_000, text: str = "great",
                summary: str = "nice") -> str:
    r = {"overall": rating, "verified": True, "reviewTime": "07 14, 2017", "reviewerID": user, "asin": asin,
         "style": {"Size:": " Large"}, "reviewerName": "Bo", "reviewText": text, "summary": summary,
         "unixReviewTime": ts}
    return json.dumps(r)


def meta_2014(asin: str, **fields) -> str:
    """A 2014 meta line: str() of a dict, so single quotes; only the given optional fields appear."""
    d = {"asin": asin}
    d.update(fields)
    return str(d)


def meta_2018(asin: str, **fields) -> str:
    d = {"category": [], "tech1": "", "description": [], "fit": "", "title": "", "also_buy": [], "brand": "",
         "feature": [], "rank": [], "also_view": [], "main_cat": "", "similar_item": "", "date": "",
         "price": "", "asin": asin, "imageURL": [], "imageURLHighRes": []}
    d.update(fields)
    return json.dumps(d)


def shop_2014(root: Path, stem: str, users: int = 6, items: int = 5, prefix: str = "B", seed: int = 0) -> dict:
    """A small 2014 category: every user reviews every item (so any k-core keeps it whole).

    Returns {"reviews": path, "meta": path, "asins": [...], "users": [...]}.
    """
    rng = random.Random(seed)
    asins = [f"{prefix}{i:09d}" for i in range(items)]
    user_ids = [f"U{stem[:3].upper()}{u:05d}" for u in range(users)]
    reviews = [review_2014(u, a, float(rng.randint(1, 5)), 1_300_000_000 + 86400 * (i + j),
                           f"text {u} {a}", f"sum {a}", name=None if j % 2 else "Ann")
               for i, u in enumerate(user_ids) for j, a in enumerate(asins)]
    meta = [meta_2014(a, title=f"Item {a}", price=float(i) + 0.99, imUrl=f"http://img.example/{a}.jpg",
                      related={"also_bought": asins[:3], "bought_together": [asins[-1]]},
                      salesRank={stem: i}, categories=[[stem, "Sub"], ["Other"]])
            for i, a in enumerate(asins)]
    meta.append(meta_2014("Z999999999", title="never reviewed"))
    return {
        "reviews": write_gz(root / f"reviews_{stem}_5.json.gz", reviews),
        "meta": write_gz(root / f"meta_{stem}.json.gz", meta),
        "asins": asins,
        "users": user_ids,
    }


def big_reviews_2014(path: Path, lines: int, users: int = 50_000, items: int = 20_000, seed: int = 0) -> Path:
    """A large reviews file with realistic line lengths, for throughput measurements."""
    rng = random.Random(seed)
    words = "this product is great and works well but the size was a bit small for me overall happy".split()
    text = " ".join(rng.choice(words) for _ in range(120))  # ~600 bytes, like a typical review
    with gzip.open(path, "wb", compresslevel=6) as f:
        block = []
        for n in range(lines):
            block.append(review_2014(f"A{rng.randrange(users):013d}", f"B{rng.randrange(items):09d}",
                                     float(rng.randint(1, 5)), 1_200_000_000 + n, text[: 200 + n % 400],
                                     "good value"))
            if len(block) == 10_000:
                f.write(("\n".join(block) + "\n").encode())
                block = []
        if block:
            f.write(("\n".join(block) + "\n").encode())
    return path
