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


# --- Amazon Reviews 2023: field names, order and types as in the McAuley Lab's JSON lines ------------


def review_2023(user: str, parent: str, rating: float = 5.0, ts_ms: int = 1_588_687_728_923, text: str = "great",
                title: str = "nice", asin: str | None = None, images: list | None = None) -> str:
    """A 2023 review line; `asin` is the variant bought (default: the parent itself)."""
    r = {"rating": rating, "title": title, "text": text, "images": images or [], "asin": asin or parent,
         "parent_asin": parent, "user_id": user, "timestamp": ts_ms, "helpful_vote": 0, "verified_purchase": True}
    return json.dumps(r)


def review_image_2023(stem: str) -> dict:
    """A picture a reviewer attached (reviews' `images`, unlike meta's, are these three sizes)."""
    base = f"https://images-na.ssl-images-amazon.com/images/I/{stem}"
    return {"small_image_url": f"{base}._SL256_.jpg", "medium_image_url": f"{base}._SL800_.jpg",
            "large_image_url": f"{base}.jpg", "attachment_type": "IMAGE"}


def image_2023(stem: str, variant: str = "MAIN", hi_res: bool = True) -> dict:
    """One entry of a 2023 meta line's `images` list."""
    base = f"https://m.media-amazon.com/images/I/{stem}"
    return {"thumb": f"{base}._SS40_.jpg", "large": f"{base}.jpg", "variant": variant,
            "hi_res": f"{base}._SL1500_.jpg" if hi_res else None}


def meta_2023(parent: str, **fields) -> str:
    """A 2023 meta line with every field present (empty lists / null where the item has nothing)."""
    d = {"main_category": "All Beauty", "title": "", "average_rating": 4.5, "rating_number": 10, "features": [],
         "description": [], "price": None, "images": [], "videos": [], "store": None, "categories": [],
         "details": {}, "parent_asin": parent, "bought_together": None}
    d.update(fields)
    return json.dumps(d)


def shop_2023(users: int = 6, items: int = 5, prefix: str = "B0", seed: int = 0) -> dict[str, bytes]:
    """A small All_Beauty category where every user reviews every item, as {relative path: gzip bytes}
    in the official layout (review_categories/, meta_categories/)."""
    rng = random.Random(seed)
    parents = [f"{prefix}{i:08d}" for i in range(items)]
    reviews = [review_2023(f"AG{u:026d}", p, float(rng.randint(1, 5)), 1_600_000_000_000 + 86_400_000 * (u + i) + u,
                           f"text {u} {p}", f"title {p}", asin=f"{p[:-1]}V" if i % 2 else None)
               for u in range(users) for i, p in enumerate(parents)]
    meta = [meta_2023(p, title=f"Item {p}", features=[f"feature of {p}"], description=[f"About {p}."],
                      price=9.99 + i, images=[image_2023(f"{p}alt", "PT01"), image_2023(p)], store="Shop",
                      details={"Brand": "Shop", "Item Weight": "2 ounces"})
            for i, p in enumerate(parents)]
    meta.append(meta_2023("B0NEVERSEEN", title="never reviewed"))
    return {"review_categories/All_Beauty.jsonl.gz": gz(reviews), "meta_categories/meta_All_Beauty.jsonl.gz": gz(meta)}
