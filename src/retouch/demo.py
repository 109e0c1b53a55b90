"""``python -m retouch.demo OUTDIR``: erase the shuttle model from the astronaut photo.

Uses the photo in scikit-image (``pip install 'retouch[samples]'``) and the mask bundled
with retouch; writes the photo, the mask, the result and a before/after strip to OUTDIR.
"""

from __future__ import annotations

import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

from retouch import imageio
from retouch.api import Toolkit
from retouch.errors import DependencyMissing, RetouchError

MASK = "astronaut-shuttle-mask.png"


def sample_mask_path() -> Path:
    return Path(str(resources.files("retouch") / "data" / MASK))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "out")
    try:
        from skimage import data
    except ImportError:
        print(
            f"retouch: error: {DependencyMissing('scikit-image', 'samples', 'the sample photo')}",
            file=sys.stderr,
        )
        return 6
    out.mkdir(parents=True, exist_ok=True)
    photo = data.astronaut()  # type: ignore[no-untyped-call]
    imageio.save_image(photo, out / "astronaut.png", overwrite=True)
    mask_path = out / "astronaut-mask.png"
    mask_path.write_bytes(sample_mask_path().read_bytes())
    try:
        started = time.perf_counter()
        result = Toolkit().erase(out / "astronaut.png", mask_path, seed=7)
        seconds = time.perf_counter() - started
        result.save(out / "astronaut-erased.png", overwrite=True)
    except RetouchError as exc:
        print(f"retouch: error: {exc}", file=sys.stderr)
        return 1
    erased = result.image.pixels
    mask = imageio.load_image(mask_path).rgb8()[:, :, 0] > 0
    outside = int(np.abs(erased.astype(int) - photo.astype(int))[~mask].max())
    inside = float(np.abs(erased.astype(int) - photo.astype(int))[mask].mean())
    imageio.save_image(np.hstack([photo, erased]), out / "before-after.png", overwrite=True)
    print(f"erased the shuttle with {result.provider}/{result.model} in {seconds:.2f}s")
    print(
        f"  max change outside the mask: {outside} (0 = untouched); mean change inside: {inside:.1f}"
    )
    print(
        f"  wrote {out}/astronaut.png, astronaut-mask.png, astronaut-erased.png, before-after.png"
    )
    print(
        f"  the same from the command line: retouch erase {out}/astronaut.png --mask {mask_path} -o clean.png"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
