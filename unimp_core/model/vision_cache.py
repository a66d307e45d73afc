"""Item images for the model, and the frozen vision tower's features computed once per item.

The vision tower is frozen, so its output for an item never changes during a run. With
`--cache-vision-features` every item's patch features (v, d) are computed once, stored as a
memory-mapped .npy file, and training feeds them straight to the Perceiver.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.store import Dataset
from ..errors import UnimpError
from ..io import atomic_path, safe_join
from ..progress import Progress



class ItemImages:
    """item_id -> (C, H, W) tensor through the model's image transform (recently used ones cached)."""

    def __init__(self, dataset: Dataset, transform: Callable, cache_size: int = 4096) -> None:
        self.root = dataset.root
        self.paths = dataset.items["image"].to_list()
        self.transform = transform
        self.cache_size = cache_size
        self._load = lru_cache(maxsize=cache_size)(self._load_uncached)

    def _load_uncached(self, item_id: int) -> torch.Tensor:
        from PIL import Image

        rel = self.paths[item_id]
        if rel is None or self.root is None:
            raise UnimpError(f"item {item_id} has no image")
        path = safe_join(self.root, rel)  # a tampered items.parquet must not reach outside the folder
        try:
            with Image.open(path) as img:
                return self.transform(img.convert("RGB"))
        except UnimpError:
            raise
        except Exception as exc:
            raise UnimpError(f"{path}: unreadable image ({exc}); run `unimp filter-images`") from exc

    def __call__(self, item_id: int) -> torch.Tensor:
        return self._load(int(item_id))

    def __getstate__(self):  # picklable for DataLoader workers: the cache is rebuilt there
        state = dict(self.__dict__)
        state.pop("_load")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load = lru_cache(maxsize=self.cache_size)(self._load_uncached)


class ItemFeatures:
    """item_id -> (v, d) vision features read from the memory-mapped cache."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.array = np.load(self.path, mmap_mode="r")  # (N, v, d)

    def __call__(self, item_id: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[int(item_id)]))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])


@torch.no_grad()
def vision_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """The frozen tower's patch features, exactly as open_flamingo computes them: (B, C, H, W) -> (B, v, d)."""
    return model.vision_encoder(pixels)[1]


def build_feature_cache(model, dataset: Dataset, images: ItemImages, path: Path, batch_size: int = 64,
                        progress: Progress | None = None) -> ItemFeatures:
    """Compute every item's features once into `path` (reused when it exists and matches)."""
    progress = progress or Progress()
    path = Path(path)
    n = dataset.items.height
    if path.is_file():
        cached = ItemFeatures(path)
        if cached.array.shape[0] == n:
            return cached
    with_image = [i for i, rel in enumerate(images.paths) if rel is not None]
    first = vision_features(model, images(with_image[0])[None]) if with_image else None
    if first is None:
        raise UnimpError(f"{dataset.root}: no item has an image; nothing to cache")
    v, d = first.shape[1:]
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, v, d))
        out[:] = 0
        with progress.task("caching vision features", total=len(with_image)) as advance:
            for start in range(0, len(with_image), batch_size):
                chunk = with_image[start:start + batch_size]
                feats = vision_features(model, torch.stack([images(i) for i in chunk]))
                out[chunk] = feats.float().cpu().numpy()
                advance(len(chunk))
        out.flush()
        del out
    return ItemFeatures(path)


class CachedFeaturesMixin:
    """Let a Flamingo model take cached features (B, T_img, F, v, d) instead of pixels (B, T_img, F, C, H, W).

    Features skip the vision tower and go straight to the Perceiver, as in open_flamingo's
    `_encode_vision_x` after its `vision_encoder(...)[1]` call.
    """

    def _encode_vision_x(self, vision_x: torch.Tensor):
        if vision_x.ndim != 5:
            return super()._encode_vision_x(vision_x)
        if vision_x.shape[1] == 0:  # no sample has an image: one blank slot, never attended
            b, _, f, v, d = vision_x.shape
            vision_x = vision_x.new_zeros(b, 1, f, v, d)
        vision_x = self.perceiver(vision_x)  # (B, T_img, n_latents, d)
        for layer in self.lang_encoder._get_decoder_layers():
            layer.condition_vis_x(vision_x)


def use_cached_features(model) -> None:
    from open_flamingo.src.utils import extend_instance

    if not isinstance(model, CachedFeaturesMixin):
        extend_instance(model, CachedFeaturesMixin)
