"""Image bytes for tests: real JPEG/PNG/GIF files, truncated files and a decompression bomb."""

import io
import zlib
import struct

from PIL import Image


def jpeg(color=(200, 30, 30), size=(32, 32), pattern=True) -> bytes:
    img = Image.new("RGB", size, color)
    if pattern:
        for x in range(0, size[0], 4):
            for y in range(size[1]):
                img.putpixel((x, y), (0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def gif_1x1() -> bytes:
    """Amazon's placeholder is a 1x1 transparent GIF."""
    buf = io.BytesIO()
    Image.new("P", (1, 1), 0).save(buf, format="GIF", transparency=0)
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg(size=(64, 64))
    return data[: len(data) // 2]


def png_bomb(side: int = 20000) -> bytes:
    """A tiny PNG file that claims side x side pixels (400 MPx, beyond Pillow's 2x limit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    raw = b"".join(comp.compress(row) for _ in range(64)) + comp.flush()  # only the first rows: still refused
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
