"""The prompt vocabulary's spellings: the one home of every marker and added token (no torch, no polars).

Prompts, the vocabulary extension, the collator and the parsers of generated text all take their
spellings (and the patterns that find them in text) from here, so renaming a token is a one-line change.
"""

from __future__ import annotations

import math
import re

IMAGE = "<image>"
EOC = "<|endofchunk|>"
ANSWER = "<answer>"
PAD = "<PAD>"  # added only when a tokenizer has no pad token

ITEM, RATE, SLOT, IMAGE_CODE = "item_", "rate_", "s_", "img_"  # prefixes of the numbered tokens
RATINGS = (1, 2, 3, 4, 5)
N_SLOTS = 5  # img_sel candidates are named s_0 .. s_4

# Free text never carries the structural markers: a title holding "<image>" would otherwise add
# an image slot that has no picture.
MARKERS_RE = re.compile("|".join(re.escape(m) for m in (IMAGE, EOC, ANSWER)))
# Every marker and numbered token (the tiny BPE tokenizer learns the prompt phrases without them).
ADDED_TOKEN_RE = re.compile(r"<[^>\s]+>|\b(?:" + "|".join(p[:-1] for p in (ITEM, RATE, SLOT, IMAGE_CODE)) + r")_\d+\b")
ITEM_RE = re.compile(ITEM + r"(\d+)")  # fullmatch: a generated answer that is exactly one item
# Semantic item ids (`--item-ids semantic`): an item is its code tuple, one token per level, `<a_12><b_7><c_201>`,
# then its collision index on the next letter, `<d_0>`. Tokens are shared by every item, so the vocabulary
# grows by levels * codes + collision codes, never by the catalogue size.
SEMANTIC_LEVELS = "abcdefghijklmnopqrstuvwxyz"  # level k's letter; the last (collision) level takes the next one
SEMANTIC_TOKEN_RE = re.compile(r"<([a-z])_(\d+)>")
# fullmatch: a generated answer that is exactly one code tuple (spaces between its tokens tolerated)
SEMANTIC_ITEM_RE = re.compile(r"\s*(?:<[a-z]_\d+>\s*)+")
SLOT_RE = re.compile(SLOT + r"(\d+)")  # fullmatch: one img_sel pick
# A rating token in generated text: spaces after the underscore tolerated, not glued to a preceding
# letter or digit.
RATE_RE = re.compile(r"(?<![0-9A-Za-z])" + RATE + r"\s*(\d+)")


def answer_span(answer: str) -> str:
    """`answer<|endofchunk|>`: an answer and its end marker, as every prompt writes them.

    No space before the marker (OpenFlamingo's own texts end a chunk right after its last word):
    a space there would be one more token per answer, to store, attend over and predict.
    """
    return f"{answer}{EOC}"


def item_token(item_id: int) -> str:
    return f"{ITEM}{item_id}"


def semantic_token(level: int, code: int) -> str:
    """`<a_12>`: code `code` of level `level` (0-based; the collision index is the level after the last)."""
    return f"<{SEMANTIC_LEVELS[level]}_{code}>"


def semantic_tokens(codes) -> list[str]:
    """An item's tokens under semantic ids: one per entry of its code tuple (levels, then the collision index)."""
    return [semantic_token(level, int(code)) for level, code in enumerate(codes)]


def semantic_item(codes) -> str:
    """An item's name under semantic ids: its tokens without spaces (`<a_12><b_7><c_201><d_0>`)."""
    return "".join(semantic_tokens(codes))


def semantic_vocabulary(levels: int, codes: int, collision_codes: int) -> list[list[str]]:
    """Every semantic-id token, per level: `levels` lists of `codes` tokens, then the collision level's."""
    sizes = [codes] * levels + [collision_codes]
    return [[semantic_token(level, code) for code in range(size)] for level, size in enumerate(sizes)]


def parse_semantic_item(text: str) -> tuple[int, ...] | None:
    """The code tuple a text spells when it is exactly one item's tokens, in level order; else None."""
    if not SEMANTIC_ITEM_RE.fullmatch(text):
        return None
    found = SEMANTIC_TOKEN_RE.findall(text)
    if [letter for letter, _ in found] != list(SEMANTIC_LEVELS[:len(found)]):
        return None
    return tuple(int(code) for _, code in found)


def rate_token(rating: float) -> str:
    return f"{RATE}{rating_value(rating)}"


def slot_token(slot: int) -> str:
    return f"{SLOT}{slot}"


def image_code_token(code: int) -> str:
    return f"{IMAGE_CODE}{code}"


def rating_value(rating: float) -> int:
    """Clip to 1..5, then round half up (Python's round() would send 2.5 to 2)."""
    return int(math.floor(min(5.0, max(1.0, float(rating))) + 0.5))
