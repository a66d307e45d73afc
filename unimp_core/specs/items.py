"""Spec for `unimp tokenize-items`: which item embeddings and which residual quantiser give every item its
semantic id (a few codes from small per-level codebooks, plus a collision index).

TokenizeItemsSpec(data=..., source=["text", "collab"], quantizer="rkmeans", levels=3, codes=256). No torch import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from .base import Spec

SOURCES = ("text", "image", "collab")  # any other --source value is a Parquet file of the user's own vectors


class RQVAESpec(Spec):
    """The small RQ-VAE of `--quantizer rqvae`: an MLP encoder and decoder around a residual quantiser whose
    codebooks start from residual k-means on the encoder's outputs."""

    steps: int = Field(default=500, ge=1, description="RQ-VAE optimizer steps (the first fifth trains a plain autoencoder).")
    lr: float = Field(default=1e-3, gt=0, description="RQ-VAE learning rate (Adam).")
    batch_size: int = Field(default=1024, ge=2, description="Items per RQ-VAE training batch.")
    latent: int = Field(default=32, ge=2, le=1024, description="Width of the RQ-VAE latent that is quantised.")
    hidden: int = Field(default=128, ge=2, le=4096, description="Width of the RQ-VAE encoder's and decoder's hidden layer.")
    beta: float = Field(default=0.25, ge=0, description="Weight of the commitment loss (encoder output towards its codes).")


class TokenizeItemsSpec(Spec):
    """`unimp tokenize-items`: quantise item embeddings into semantic ids stored in the dataset folder."""

    data: Path = Field(description="Dataset folder written by `unimp prepare`.")
    source: list[str] = Field(
        default_factory=lambda: ["text"], min_length=1,
        description="Item embeddings, repeatable and concatenated: text (title, brand, category, description), "
        "image (the item images), collab (co-occurrence in the training part of the histories) or a Parquet "
        "FILE of your own (item_id + a list column, or item_id + numeric columns).",
    )
    text_encoder: str | None = Field(
        default=None,
        description="A sentence encoder for --source text (local folder or hub id; sentence-transformers when "
        "installed, else transformers with mean pooling). Without it: TF-IDF + truncated SVD, offline.",
    )
    dims: int = Field(default=64, ge=2, le=1024, description="Width of each embedding block made here (text TF-IDF, image, collab).")
    window: int = Field(default=5, ge=1, le=100, description="Collab: items at most this many positions apart in a training history co-occur.")
    quantizer: Literal["rkmeans", "rqvae"] = Field(default="rkmeans", description="Residual k-means, or an RQ-VAE trained from the k-means codebooks.")
    levels: int = Field(default=3, ge=1, le=8, description="Quantiser levels (codes per item, before the collision index).")
    codes: int = Field(
        default=256, ge=2, le=65536,
        description="Codes per level (capped at a quarter of the catalogue size for small catalogues).",
    )
    balance: bool = Field(
        default=True,
        description="Items that share all but the last code get distinct last codes where their group allows "
        "(an optimal assignment near each item's own code), so few items need the collision index.",
    )
    fit_items: int = Field(
        default=100_000, ge=1000,
        description="k-means is fitted on a seeded sample of at most this many items, then every item is assigned.",
    )
    seed: int = Field(default=0, description="Seed of every random choice (same seed and inputs: byte-identical codes).")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where the text encoder and the RQ-VAE run (auto: cuda when available).")
    force: bool = Field(default=False, description="Make the codes again even when up-to-date codes exist.")
    rqvae: RQVAESpec = Field(default_factory=RQVAESpec, description="The RQ-VAE's settings (--quantizer rqvae).")

    @field_validator("source", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):  # `--source text,collab` as well as `--source text --source collab`
            value = [part.strip() for v in value for part in (v.split(",") if isinstance(v, str) else [v])]
            value = [v for v in value if v != ""]
        return value

    @field_validator("source")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        seen = set()
        for v in value:
            if v in seen:
                raise ValueError(f"{v!r} is given twice")
            seen.add(v)
        return value

    def files(self) -> list[Path]:
        """The --source values that name a file of the user's own embeddings."""
        return [Path(s).expanduser() for s in self.source if s not in SOURCES]
