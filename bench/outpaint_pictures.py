"""Before/after pictures of outpainting with no model, for the README.

    .venv/bin/python bench/outpaint_pictures.py

For three photos from scikit-image (astronaut, coffee, chelsea), 200 px added on the left
and the right: PatchMatch over the whole canvas (the classic provider's fill before the
band fill) above the band fill (now the default), seed 1. Ticks above and below mark the
photo's own edges. Written as JPEGs of at most 150 KB to docs/images/.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import retouch

PHOTOS = ("astronaut", "coffee", "chelsea")
SIDE = 200
WIDTH = 760
"""Width of each saved picture, in pixels."""
LIMIT = 150_000
OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


def labelled(pixels: np.ndarray, label: str) -> np.ndarray:
    """``pixels`` under a strip with ``label`` and ticks at the photo's own edges."""
    w = pixels.shape[1]
    head = np.full((26, w, 3), 255, np.uint8)
    cv2.putText(head, label, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for x in (SIDE, w - SIDE):
        head[16:, x - 1 : x + 1] = (200, 0, 0)
    return np.vstack([head, pixels])


def save_small(pixels: np.ndarray, path: Path) -> int:
    """Save as the best JPEG quality that stays under LIMIT bytes; returns the size."""
    image = Image.fromarray(pixels)
    for quality in range(90, 40, -5):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
        if buffer.tell() <= LIMIT:
            break
    path.write_bytes(buffer.getvalue())
    return buffer.tell()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        photo = np.ascontiguousarray(getattr(data, name)()[:, :, :3])
        before = retouch.outpaint(
            photo, left=SIDE, right=SIDE, seed=1, options={"method": "patchmatch"}
        ).image.pixels
        after = retouch.outpaint(photo, left=SIDE, right=SIDE, seed=1).image.pixels
        picture = np.vstack(
            [
                labelled(before, "before: PatchMatch over the whole picture"),
                labelled(after, "after: each strip from the band next to it (default)"),
            ]
        )
        scale = WIDTH / picture.shape[1]
        size = (WIDTH, round(picture.shape[0] * scale))
        small = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        path = OUT / f"outpaint-{name}.jpg"
        print(f"wrote {path.relative_to(OUT.parent.parent)} ({save_small(small, path) // 1000} KB)")


if __name__ == "__main__":
    main()
