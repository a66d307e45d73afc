"""Spec for `unimp tokenize-images`: which VQ image model turns item images into discrete codes.

TokenizeImagesSpec(data=..., vq=... | train_codebook=True, codebook=CodebookSpec(...)). No torch import here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import Spec

# Resolution of the trained codebook when --resolution is not given (a pretrained --vq uses its own sample_size).
DEFAULT_TRAIN_RESOLUTION = 32


class CodebookSpec(Spec):
    """The small diffusers VQModel that `--train-codebook` builds and trains on the dataset's own images."""

    size: int = Field(default=512, ge=2, le=65536, description="Codebook entries (distinct image tokens).")
    dim: int = Field(default=8, ge=1, le=256, description="Width of one codebook vector (the latent channels).")
    factor: Literal[2, 4, 8, 16] = Field(default=8, description="Downsampling factor f: the code grid is resolution/f on a side.")
    width: int = Field(default=16, ge=8, le=512, description="Channels of the first encoder level (later levels use twice as many); a multiple of 8.")
    layers_per_block: int = Field(default=1, ge=1, le=4, description="Residual blocks per encoder level (the decoder has one more).")
    attention: bool = Field(default=False, description="Self-attention in the middle block (slower on CPU; helps larger images).")
    steps: int = Field(default=400, ge=1, description="Optimizer steps of codebook training.")
    lr: float = Field(default=2e-3, gt=0, description="Peak learning rate (AdamW, short warmup, cosine decay to a tenth).")
    ae_warmup: float = Field(
        default=0.1, ge=0, lt=1,
        description="Share of the steps trained as a plain autoencoder before the codebook is initialised by k-means "
        "on the encoder's outputs (avoids codebook collapse).",
    )
    restart_every: int = Field(default=25, ge=0, description="Every this many steps, move codes unused since the last check onto encoder outputs of the batch (0: never).")
    holdout: float = Field(default=0.1, ge=0, lt=1, description="Share of the images held out of training; reconstruction quality is measured on them.")
    max_train_images: int = Field(default=20000, ge=1, description="At most this many training images are loaded (a seeded sample of larger datasets).")
    save_every: int = Field(default=100, ge=1, description="Write a resumable training checkpoint every this many steps.")
    seed: int = Field(default=0, description="Seed for weights, the held-out images, batches and code restarts.")

    @model_validator(mode="after")
    def _check(self) -> "CodebookSpec":
        if self.width % 8:
            raise ValueError(f"width {self.width} is not a multiple of 8 (group normalisation uses 8 groups)")
        return self

    def channels(self) -> list[int]:
        """Channels per level: one level per halving of the resolution, plus the first."""
        levels = self.factor.bit_length() - 1
        return [self.width] + [self.width * 2] * levels


class TokenizeImagesSpec(Spec):
    """`unimp tokenize-images`: encode every item image of a dataset folder into a grid of discrete codes."""

    data: Path = Field(description="Dataset folder written by `unimp prepare` (with images).")
    vq: str | None = Field(
        default=None,
        description="A pretrained diffusers VQModel: local folder or Hugging Face hub id (owner/name, or owner/name/subfolder). "
        "Without it a codebook is trained on the dataset's images.",
    )
    train_codebook: bool = Field(default=True, description="Train a small VQ model on the dataset's own images (the offline default; off with --vq).")
    resolution: int | None = Field(
        default=None, ge=16, le=1024,
        description=f"Side in pixels that images are resized to before encoding (default: {DEFAULT_TRAIN_RESOLUTION} for a "
        "trained codebook, the model's sample_size for --vq).",
    )
    batch_size: int = Field(default=32, ge=1, le=4096, description="Images per batch for training and encoding.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where the VQ model runs (auto: cuda when available).")
    force: bool = Field(default=False, description="Retrain the codebook and re-encode even when up-to-date results exist.")
    codebook: CodebookSpec = Field(default_factory=CodebookSpec, description="The trained codebook's model and training settings.")

    @model_validator(mode="after")
    def _check(self) -> "TokenizeImagesSpec":
        if self.vq is not None:
            if "train_codebook" in self.model_fields_set and self.train_codebook:
                raise ValueError("vq: give either --vq or --train-codebook, not both")
            self.__dict__["train_codebook"] = False
        elif not self.train_codebook:
            raise ValueError("vq: without --train-codebook give a pretrained model with --vq PATH_OR_HUB_ID")
        if self.train_codebook:
            res = self.train_resolution()
            if res % self.codebook.factor:
                raise ValueError(f"resolution {res} is not a multiple of codebook.factor {self.codebook.factor}")
        return self

    def train_resolution(self) -> int:
        return self.resolution or DEFAULT_TRAIN_RESOLUTION
