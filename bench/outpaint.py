"""Outpaint with no model: the band fill against plain PatchMatch, time and quality.

    .venv/bin/python bench/outpaint.py [--repeat 3]

Each photo from scikit-image (astronaut, coffee, chelsea, rocket) grows 200 px on the left
and the right. Timing: seconds per megapixel of new area for ``retouch.outpaint`` (the
band fill, the Toolkit's seam blend included) and for a plain PatchMatch fill of the same
canvas (pypatchmatch on the canvas and fill mask the provider used before, no Toolkit),
best of ``--repeat`` runs, interleaved in the same process so both see the same machine;
the ratio is ours / PatchMatch. Wall and CPU time both: on a shared machine CPU time is the
steadier figure.

Quality, for both fills, per strip (left / right):
- copies: 32 x 32 blocks of the strip that copy a block of the subject (normalised
  cross-correlation of the detail layer above 0.9; the subject is what
  ``retouch.subject_mask`` finds), and the highest correlation;
- repeats: structured blocks of the strip that occur again elsewhere in the strip (a
  stamp used twice; a flag's stripes repeat by nature);
- faces: OpenCV's frontal face cascade;
- seam: the colour step across the border, and the gradient energy of the 8 px band over
  the bands beside it, with the photo's own 5-95th percentiles for the same figures;
- orange: the share of the suit's saturated orange in the astronaut's left strip.
The reuse penalty's effect is shown by the repeats of the astronaut filled without it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import retouch
from retouch import compose, fill
from retouch.providers.classic import patchmatch_fill

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SIDE = 200
BLOCK = 32


def photo(name: str) -> np.ndarray:
    pixels: np.ndarray = getattr(data, name)()
    return np.ascontiguousarray(pixels[:, :, :3])


def detail(rgb: np.ndarray) -> np.ndarray:
    pixels = np.ascontiguousarray(rgb).astype(np.float32)
    out: np.ndarray = pixels - cv2.GaussianBlur(pixels, (0, 0), 4.0)
    return out


def structured_blocks(strip: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    new = detail(strip)
    blocks = []
    for y in range(0, new.shape[0] - BLOCK + 1, 16):
        for x in range(0, new.shape[1] - BLOCK + 1, 16):
            block = np.ascontiguousarray(new[y : y + BLOCK, x : x + BLOCK])
            if block.std() >= 5.0:
                blocks.append((y, x, block))
    return blocks


def copies(strip: np.ndarray, picture: np.ndarray, subject: np.ndarray) -> tuple[int, float]:
    """(blocks copying the subject, highest correlation)."""
    inside = (subject > 127).astype(np.float32)
    share = cv2.boxFilter(inside, -1, (BLOCK, BLOCK), anchor=(0, 0))
    h, w = inside.shape
    of_subject = share[: h - BLOCK + 1, : w - BLOCK + 1] >= 0.75
    if not of_subject.any():
        return 0, 0.0
    whole = detail(picture)
    scores = [
        float(cv2.matchTemplate(whole, block, cv2.TM_CCOEFF_NORMED)[of_subject].max())
        for _, _, block in structured_blocks(strip)
    ]
    return sum(s > 0.9 for s in scores), max(scores, default=0.0)


def repeats(strip: np.ndarray) -> tuple[int, int]:
    """(structured blocks found again at least a block away, structured blocks)."""
    new = detail(strip)
    found = 0
    blocks = structured_blocks(strip)
    for y, x, block in blocks:
        score = cv2.matchTemplate(new, block, cv2.TM_CCOEFF_NORMED)
        ys, xs = np.mgrid[0 : score.shape[0], 0 : score.shape[1]]
        apart = (np.abs(ys - y) >= BLOCK) | (np.abs(xs - x) >= BLOCK)
        found += bool((score[apart] > 0.9).any())
    return found, len(blocks)


CASCADE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def faces(rgb: np.ndarray) -> int:
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return len(CASCADE.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)))


def seam(picture: np.ndarray, x: int) -> tuple[float, float]:
    """(colour step, energy ratio) across the line between columns x - 1 and x."""
    f = picture.astype(np.float32)
    step = float(np.abs(f[:, x] - f[:, x - 1]).mean())
    grey = cv2.cvtColor(np.ascontiguousarray(picture), cv2.COLOR_RGB2GRAY).astype(np.float32)
    gy, gx = np.gradient(grey)
    energy = np.hypot(gx, gy).mean(axis=0)
    beside = (energy[x - 12 : x - 4].mean() + energy[x + 4 : x + 12].mean()) / 2
    return step, float(energy[x - 4 : x + 4].mean() / max(beside, 1e-6))


def orange(rgb: np.ndarray) -> float:
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    low, high = np.array([5, 150, 190], np.uint8), np.array([10, 255, 255], np.uint8)
    return float((cv2.inRange(hsv, low, high) > 0).mean())


def timed(run: object) -> tuple[np.ndarray, float, float]:
    assert callable(run)
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def ours(picture: np.ndarray) -> np.ndarray:
    pixels: np.ndarray = retouch.outpaint(picture, left=SIDE, right=SIDE, seed=1).image.pixels
    return pixels


def plain_patchmatch(picture: np.ndarray) -> np.ndarray:
    canvas, to_fill, _ = compose.outpaint_canvas(
        picture, left=SIDE, right=SIDE, top=0, bottom=0, feather=16
    )
    return patchmatch_fill(canvas, to_fill, patch_size=5, seed=1)


def without_reuse_penalty(picture: np.ndarray) -> np.ndarray:
    canvas, _, blend = compose.outpaint_canvas(
        picture, left=SIDE, right=SIDE, top=0, bottom=0, feather=16
    )
    filled = fill.extend(
        picture,
        left=SIDE,
        right=SIDE,
        top=0,
        bottom=0,
        seed=1,
        seam=16,
        settings=fill.FillSettings(reuse_penalty=0.0),
    )
    return compose.paste_back(canvas, filled, blend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{SIDE} px added left and right; best of {args.repeat}, interleaved\n")
    print(
        f"{'photo':<10} {'new MP':>6} {'ours s/MP':>10} {'cpu':>6} {'PM s/MP':>8} {'cpu':>6}"
        f" {'ratio':>6} {'cpu ratio':>9}"
    )
    results: dict[str, dict[str, np.ndarray]] = {}
    ratios = []
    for name in PHOTOS:
        picture = photo(name)
        area = 2 * SIDE * picture.shape[0] / 1e6
        best = {"ours": (np.inf, np.inf), "patchmatch": (np.inf, np.inf)}
        outputs = {}
        for _ in range(args.repeat):
            for label, run in (("ours", ours), ("patchmatch", plain_patchmatch)):
                out, wall, cpu = timed(lambda run=run, picture=picture: run(picture))
                outputs[label] = out
                best[label] = (min(best[label][0], wall), min(best[label][1], cpu))
        results[name] = outputs
        (ow, oc), (pw, pc) = best["ours"], best["patchmatch"]
        ratios.append((ow / pw, oc / pc))
        print(
            f"{name:<10} {area:>6.3f} {ow / area:>10.1f} {oc / area:>6.1f} {pw / area:>8.1f}"
            f" {pc / area:>6.1f} {ow / pw:>6.2f} {oc / pc:>9.2f}"
        )
    print(
        f"ours / PatchMatch: wall {min(r[0] for r in ratios):.2f}-{max(r[0] for r in ratios):.2f}, "
        f"cpu {min(r[1] for r in ratios):.2f}-{max(r[1] for r in ratios):.2f}\n"
    )
    print(
        f"{'photo':<10} {'fill':<10} {'copies L/R (max NCC)':>24} {'repeats L':>10} {'repeats R':>10}"
        f" {'faces':>6} {'seam step L/R':>14} {'energy L/R':>11}  photo's own 5-95%"
    )
    for name in PHOTOS:
        picture = photo(name)
        subject = retouch.subject_mask(picture)
        w = picture.shape[1]
        own = np.array([seam(picture, x) for x in range(12, w - 12)])
        low, high = np.percentile(own, 5, axis=0), np.percentile(own, 95, axis=0)
        for label, out in results[name].items():
            left, right = out[:, :SIDE], out[:, -SIDE:]
            (cl, ml), (cr, mr) = copies(left, picture, subject), copies(right, picture, subject)
            rl, rr = repeats(left), repeats(right)
            (sl, el), (sr, er) = seam(out, SIDE), seam(out, out.shape[1] - SIDE)
            print(
                f"{name:<10} {label:<10} {f'{cl}/{cr} ({ml:.2f}/{mr:.2f})':>24}"
                f" {f'{rl[0]}/{rl[1]}':>10} {f'{rr[0]}/{rr[1]}':>10}"
                f" {faces(left) + faces(right):>6} {f'{sl:.1f}/{sr:.1f}':>14}"
                f" {f'{el:.2f}/{er:.2f}':>11}  step <= {high[0]:.1f},"
                f" energy {low[1]:.2f}-{high[1]:.2f}"
            )
    astronaut = photo("astronaut")
    print(
        f"\nastronaut, suit's orange in the left strip: ours {orange(results['astronaut']['ours'][:, :SIDE]):.1%},"
        f" PatchMatch {orange(results['astronaut']['patchmatch'][:, :SIDE]):.1%}"
        f" (the photo's outer 30 px: {orange(astronaut[:, :30]):.1%}, left 100 px: {orange(astronaut[:, :100]):.1%})"
    )
    plain = without_reuse_penalty(astronaut)
    with_penalty = results["astronaut"]["ours"]
    for label, out in (("with", with_penalty), ("without", plain)):
        rl, rr = repeats(out[:, :SIDE]), repeats(out[:, -SIDE:])
        print(
            f"astronaut {label} the reuse penalty: repeats left {rl[0]}/{rl[1]}, right {rr[0]}/{rr[1]}"
        )


if __name__ == "__main__":
    main()
