"""How a test tells a drawn chart from an empty one."""

from __future__ import annotations

import base64
import io


def coloured_pixels(png: bytes | str) -> int:
    """Pixels of a strong colour (lines, bars, markers; never the white ground, black text or grey grid),
    in a PNG given as bytes or a data URI."""
    import numpy as np
    from PIL import Image

    if isinstance(png, str):
        png = base64.b64decode(png.split(",", 1)[1])
    img = Image.open(io.BytesIO(png)).convert("RGB")
    rgb = np.asarray(img, dtype=np.int16)  # (H, W, 3)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 80).sum())
