"""Amazon Review releases (2014, 2018, 2023): short dataset names, category file stems and where the files live.

This is the one place that knows the official URLs and file layouts; `--mirror` replaces the base URL
and keeps the same relative paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnimpError


@dataclass(frozen=True)
class Release:
    """One Amazon Review release: its official base URL and how a category stem becomes file paths."""

    base_url: str
    reviews: str  # relative path of the 5-core reviews, with {stem}
    meta: str  # relative path of the item metadata, with {stem}
    categories: dict[str, str]  # short name -> category file stem


# The 2014 release (McAuley et al., SIGIR 2015): 24 categories, the 5-core review files UniMP uses.
_AMAZON_2014 = Release(
    base_url="http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/",
    reviews="reviews_{stem}_5.json.gz",
    meta="meta_{stem}.json.gz",
    categories={
        "beauty": "Beauty",
        "sports": "Sports_and_Outdoors",
        "toys": "Toys_and_Games",
        "baby": "Baby",
        "clothing": "Clothing_Shoes_and_Jewelry",
        "grocery": "Grocery_and_Gourmet_Food",
        "office": "Office_Products",
        "tools": "Tools_and_Home_Improvement",
        "home": "Home_and_Kitchen",
        "electronics": "Electronics",
        "books": "Books",
        "movies": "Movies_and_TV",
        "cds": "CDs_and_Vinyl",
        "kindle": "Kindle_Store",
        "phones": "Cell_Phones_and_Accessories",
        "health": "Health_and_Personal_Care",
        "games": "Video_Games",
        "apps": "Apps_for_Android",
        "pets": "Pet_Supplies",
        "automotive": "Automotive",
        "garden": "Patio_Lawn_and_Garden",
        "music": "Digital_Music",
        "instruments": "Musical_Instruments",
        "video": "Amazon_Instant_Video",
    },
)

# The 2018 release (Ni et al., EMNLP 2019). 5-core reviews live in categoryFilesSmall/, the
# de-duplicated metadata in metaFiles2/. The same tree is also served under
# https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/ (usable with --mirror).
_AMAZON_2018 = Release(
    base_url="https://jmcauley.ucsd.edu/data/amazon_v2/",
    reviews="categoryFilesSmall/{stem}_5.json.gz",
    meta="metaFiles2/meta_{stem}.json.gz",
    categories={
        "fashion": "AMAZON_FASHION",
        "beauty": "All_Beauty",
        "appliances": "Appliances",
        "arts": "Arts_Crafts_and_Sewing",
        "automotive": "Automotive",
        "books": "Books",
        "cds": "CDs_and_Vinyl",
        "phones": "Cell_Phones_and_Accessories",
        "clothing": "Clothing_Shoes_and_Jewelry",
        "music": "Digital_Music",
        "electronics": "Electronics",
        "giftcards": "Gift_Cards",
        "grocery": "Grocery_and_Gourmet_Food",
        "home": "Home_and_Kitchen",
        "industrial": "Industrial_and_Scientific",
        "kindle": "Kindle_Store",
        "luxury": "Luxury_Beauty",
        "magazines": "Magazine_Subscriptions",
        "movies": "Movies_and_TV",
        "instruments": "Musical_Instruments",
        "office": "Office_Products",
        "garden": "Patio_Lawn_and_Garden",
        "pets": "Pet_Supplies",
        "pantry": "Prime_Pantry",
        "software": "Software",
        "sports": "Sports_and_Outdoors",
        "tools": "Tools_and_Home_Improvement",
        "toys": "Toys_and_Games",
        "games": "Video_Games",
    },
)

# Amazon Reviews 2023 (Hou et al., 2024): 33 categories and "Unknown", all reviews (not 5-core: the
# k-core is ours) in review_categories/, item metadata in meta_categories/. The same tree is served
# under https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023/raw/ (usable with --mirror).
# The 2014 short names map to their 2023 category wherever one exists (apps and video have none).
_AMAZON_2023 = Release(
    base_url="https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/",
    reviews="review_categories/{stem}.jsonl.gz",
    meta="meta_categories/meta_{stem}.jsonl.gz",
    categories={
        "beauty": "All_Beauty",
        "fashion": "Amazon_Fashion",
        "appliances": "Appliances",
        "arts": "Arts_Crafts_and_Sewing",
        "automotive": "Automotive",
        "baby": "Baby_Products",
        "personal_care": "Beauty_and_Personal_Care",
        "books": "Books",
        "cds": "CDs_and_Vinyl",
        "phones": "Cell_Phones_and_Accessories",
        "clothing": "Clothing_Shoes_and_Jewelry",
        "music": "Digital_Music",
        "electronics": "Electronics",
        "giftcards": "Gift_Cards",
        "grocery": "Grocery_and_Gourmet_Food",
        "handmade": "Handmade_Products",
        "household": "Health_and_Household",
        "health": "Health_and_Personal_Care",
        "home": "Home_and_Kitchen",
        "industrial": "Industrial_and_Scientific",
        "kindle": "Kindle_Store",
        "magazines": "Magazine_Subscriptions",
        "movies": "Movies_and_TV",
        "instruments": "Musical_Instruments",
        "office": "Office_Products",
        "garden": "Patio_Lawn_and_Garden",
        "pets": "Pet_Supplies",
        "software": "Software",
        "sports": "Sports_and_Outdoors",
        "subscriptions": "Subscription_Boxes",
        "tools": "Tools_and_Home_Improvement",
        "toys": "Toys_and_Games",
        "games": "Video_Games",
        "unknown": "Unknown",
    },
)

RELEASES: dict[str, Release] = {"amazon2014": _AMAZON_2014, "amazon2018": _AMAZON_2018, "amazon2023": _AMAZON_2023}


def release(name: str) -> Release:
    """The release called `name` (amazon2014, amazon2018 or amazon2023)."""
    try:
        return RELEASES[name]
    except KeyError:
        raise UnimpError(f"unknown Amazon release {name!r}; valid: {', '.join(RELEASES)}") from None


def resolve(release_name: str, short_name: str) -> str:
    """Category file stem for a short dataset name, e.g. ('amazon2014', 'sports') -> 'Sports_and_Outdoors'.

    Raises UnimpError listing the valid names when `short_name` is unknown.
    """
    categories = release(release_name).categories
    try:
        return categories[short_name]
    except KeyError:
        raise UnimpError(
            f"unknown {release_name} dataset {short_name!r}; valid: {', '.join(sorted(categories))}"
        ) from None


def list_datasets(release_name: str) -> list[tuple[str, str]]:
    """(short name, category stem) pairs of a release, sorted by short name."""
    return sorted(release(release_name).categories.items())


def files(release_name: str, short_name: str) -> tuple[str, str]:
    """Relative paths (under the release base URL or a mirror) of a category's reviews and metadata."""
    rel = release(release_name)
    stem = resolve(release_name, short_name)
    return rel.reviews.format(stem=stem), rel.meta.format(stem=stem)
