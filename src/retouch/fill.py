"""Fill a hole from the pixels next to it, coarse to fine, without stamping a source twice.

PatchMatch over the whole picture copies the picture's strongest structures into a hole:
an outpaint strip gets a second subject, an erased object next to a head comes back as
hair. Here a hole is filled only from the known pixels within ``band`` of it, so what
continues into the hole is what touches it:

- coarse to fine: at the coarsest level the hole is grown ring by ring from its border,
  each pixel taken from the source patches that best continue its known neighbours, with
  the border's blurred extension as the colour it should keep (sky stays sky even when the
  band also holds a subject); every finer level starts from the one below and compares
  patches on that result too, so it adds detail without moving the structure;
- each level is patch synthesis (Wexler et al. 2007): PatchMatch search (Barnes et al.
  2009) over PCA-projected patches, then every hole pixel is the vote of the source patches
  that cover it, patches near the known pixels counting most;
- a reuse penalty: a source patch that another target already copies costs more, in
  proportion to how rare it is in the band (a badge shows when repeated, stripes and sky
  do not);
- far from the border, beyond ``reach``, the detail fades into a blurred extension (each
  row of a strip continues its own border colour, blurred along the border): a band
  narrower than the extension cannot supply it without repeating itself, and a soft
  continuation reads better than a visible repeat.

``extend`` grows a picture on any side, each strip from the band next to its side;
``fill_hole`` fills an erase hole (one that touches the image border) by the same rules;
``fill_from_band`` is what both use. RGB uint8 in and out; numpy and OpenCV only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.float32]
"""H x W x 3 float32 pixels in 0..255."""
BoolMap = NDArray[np.bool_]
Coords = NDArray[np.int32]
OnRound = Callable[[int, int], None]
"""Told (rounds done, rounds planned) after each round of search and vote; raising from it
(a cancel) stops the fill."""
RGB8 = NDArray[np.uint8]


@dataclass(frozen=True)
class FillSettings:
    patch_radius: int = 3
    """Patches span (2r+1)^2 pixels at every level of the pyramid."""
    components: int = 16
    """Patches are compared in this many PCA dimensions (exactly where known pixels meet
    the hole)."""
    coarsest_depth: int = 12
    """The pyramid stops when the hole is this few pixels deep, or the band too thin."""
    coarse_iterations: int = 5
    """Search-and-vote rounds at the coarsest level, where the structure is decided."""
    middle_iterations: int = 3
    fine_iterations: int = 2
    """Rounds at full resolution, where only detail is left to choose."""
    onion_matches: int = 8
    """At the coarsest level a new pixel is the mean centre of this many best matches of
    its known neighbourhood (one match's centre is a lottery where they all look alike)."""
    colour_weight: float = 1.0
    """Weight, at the coarsest level, of a source's mean colour against the border's
    blurred extension: what keeps sky sky when the band also holds a subject."""
    guide_weight: float = 1.0
    """Weight of the coarser level's result in the patch distance at finer levels."""
    estimate_weight: float = 0.2
    """Weight of not-yet-final pixels against known ones in patches that hold both."""
    confidence_decay: float = 1.0
    """Votes lose weight by e for every this many patch widths from the known pixels."""
    final_vote_radius: int = 0
    """The last vote at full resolution uses each patch's central (2r+1)^2 pixels only (0:
    the centre, as copied): averaging whole patches blurs fine texture (a mottled wall kept
    half its gradient energy with whole patches, 80% with centres)."""
    reuse_penalty: float = 0.5
    """Extra cost of a source patch that another target already copies, times its rarity
    (its distance to the most similar patch it does not overlap, over the band's typical
    one). Bounded: a second use costs what a tenth does, so it never makes a poor match
    win."""

    def __post_init__(self) -> None:
        if not 1 <= self.patch_radius <= 8:
            raise ValueError(f"patch_radius must be 1..8, got {self.patch_radius}")
        if not 1 <= self.components <= 3 * (2 * self.patch_radius + 1) ** 2:
            raise ValueError(f"components must be 1..patch size, got {self.components}")
        if self.onion_matches < 1:
            raise ValueError(f"onion_matches must be >= 1, got {self.onion_matches}")


DEFAULT = FillSettings()
MIN_BAND = 16
"""The narrowest band a strip is filled from, in pixels."""
ONION_SOURCES = 1500
"""The coarsest level's ring-by-ring start compares each pixel with at most this many
source patches (a random pool), which bounds its cost on big erase holes."""
STRUCTURE_ZOOM = 2
"""The coarsest level averages matches and anchors colour when one of its pixels spans at
least this many of the picture's."""
RARITY_SOURCES = 4000
"""Rarity is measured exactly on levels with at most this many source patches and carried
up to the finer ones."""


def _resize(image: NDArray[np.float32], size: tuple[int, int], *, area: bool) -> Image:
    """``image`` at ``size`` (width, height): area averaging down, bilinear up."""
    import cv2

    method = cv2.INTER_AREA if area else cv2.INTER_LINEAR
    out: Image = np.asarray(cv2.resize(image, size, interpolation=method), np.float32)
    return out


# --- the blurred extension --------------------------------------------------------------


def blurred_extension(pixels: Image, known: BoolMap, *, ring: int = 4) -> Image:
    """Known pixels kept, unknown ones filled by push-pull from the known pixels within
    ``ring`` of them: the border's colours averaged over more of the border the farther
    from it, so the fill blurs as it leaves the border (and nothing deeper leaks in)."""
    import cv2

    near = cv2.distanceTransform(known.astype(np.uint8), cv2.DIST_L2, 3) <= ring
    weight = (known & near).astype(np.float32)
    values = pixels * weight[:, :, None]
    stack: list[tuple[Image, NDArray[np.float32]]] = []
    while True:
        stack.append((values, weight))
        h, w = weight.shape
        if (weight > 0).all() or min(h, w) <= 1:
            break
        size = ((w + 1) // 2, (h + 1) // 2)
        values = _resize(values, size, area=True)
        weight = _resize(weight, size, area=True)
    values, weight = stack.pop()
    estimate: Image = (values / np.maximum(weight, 1e-6)[:, :, None]).astype(np.float32)
    while stack:
        values, weight = stack.pop()
        h, w = weight.shape
        up = _resize(estimate, (w, h), area=False)
        trust = np.clip(weight * 4.0, 0.0, 1.0)[:, :, None]
        mean = values / np.maximum(weight, 1e-6)[:, :, None]
        estimate = (mean * trust + up * (1.0 - trust)).astype(np.float32)
    out: Image = np.where(known[:, :, None], pixels, estimate).astype(np.float32)
    return out


def streaks(pixels: Image, known: BoolMap, *, ring: int = 4, spread: float = 0.3) -> Image:
    """Known pixels kept; each unknown pixel continues the known pixels nearest to it in
    its row (their mean over ``ring``), blurred along the column by ``spread`` x its
    distance from them: a strip beside a picture keeps its horizon where push-pull would
    average sky and ground together. Rows with nothing known take push-pull's values."""
    import cv2

    h, w = known.shape
    xs = np.broadcast_to(np.arange(w), (h, w))
    gap = np.iinfo(np.int32).max
    before = np.maximum.accumulate(np.where(known, xs, -1), axis=1)
    after = np.minimum.accumulate(np.where(known, xs, w)[:, ::-1], axis=1)[:, ::-1]
    to_before = np.where(before >= 0, xs - before, gap)
    to_after = np.where(after < w, after - xs, gap)
    nearest = np.where(to_before <= to_after, before, after).clip(0, w - 1)
    depth = np.minimum(to_before, to_after)
    weight = known.astype(np.float32)
    kernel = (2 * ring + 1, 1)
    border = (
        cv2.blur(pixels * weight[:, :, None], kernel)
        / np.maximum(cv2.blur(weight, kernel), 1e-6)[:, :, None]
    )
    line = border[np.arange(h)[:, None], nearest]
    out = np.where(known[:, :, None], pixels, line).astype(np.float32)
    reached = ~known & (depth < gap)
    if reached.any():
        sigmas = spread * depth[reached].astype(np.float32)
        steps = np.concatenate([[0.0], np.geomspace(0.5, max(0.5, float(sigmas.max())), 10)])
        blurred = np.stack(
            [line[reached]]
            + [
                np.asarray(
                    cv2.GaussianBlur(line, (1, 0), sigmaX=0.1, sigmaY=float(sigma)), np.float32
                )[reached]
                for sigma in steps[1:]
            ]
        )
        position = np.interp(sigmas, steps, np.arange(steps.size))
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, steps.size - 1)
        frac = (position - low)[:, None]
        n = np.arange(low.size)
        out[reached] = blurred[low, n] * (1.0 - frac) + blurred[high, n] * frac
    if (~known & ~reached).any():
        fallback = blurred_extension(pixels, known, ring=ring)
        out[~known & ~reached] = fallback[~known & ~reached]
    return out


Direction = Literal["rows", "columns"] | None
"""How a strip continues the picture: along its rows (left and right of it), its columns
(above and below), or neither (a hole inside the picture)."""


def far_field(pixels: Image, known: BoolMap, direction: Direction, *, spread: float = 0.3) -> Image:
    """The blurred extension a strip fades into: streaks along ``direction`` (blurred along
    the border by ``spread`` x the distance), push-pull for a hole."""
    if direction == "rows":
        return streaks(pixels, known, spread=spread)
    if direction == "columns":
        turned = streaks(
            np.ascontiguousarray(pixels.transpose(1, 0, 2)),
            np.ascontiguousarray(known.T),
            spread=spread,
        )
        return np.ascontiguousarray(turned.transpose(1, 0, 2))
    return blurred_extension(pixels, known)


# --- one level of patch synthesis --------------------------------------------------------


@dataclass
class _Level:
    pixels: Image
    """The picture being synthesised."""
    original: Image
    """The picture as given: sources are read from it, so a pixel being synthesised anew
    (a seam to cross-fade) can still be copied as it was."""
    hole: BoolMap
    """Pixels to synthesise."""
    source: BoolMap
    """Pixels that may be copied (their original values)."""
    anchor: BoolMap
    """Real known pixels, which the coarsest level grows from. Anchor pixels inside the
    hole (a seam) guide the start with their original values and are synthesised anew."""

    def half(self) -> _Level:
        h, w = self.hole.shape
        size = ((w + 1) // 2, (h + 1) // 2)

        def shrink(image: Image) -> Image:
            return _resize(image, size, area=True)

        def whole(mask: BoolMap) -> BoolMap:  # every finer pixel in the mask
            out: BoolMap = shrink(mask.astype(np.float32)) > 0.999
            return out

        return _Level(
            pixels=shrink(self.pixels),
            original=shrink(self.original),
            hole=shrink(self.hole.astype(np.float32)) > 0,  # any finer pixel in the hole
            source=whole(self.source),
            anchor=whole(self.anchor),
        )


class _Synthesis:
    """PatchMatch and voting on one level."""

    def __init__(
        self, level: _Level, settings: FillSettings, rng: np.random.Generator, *, zoom: int
    ) -> None:
        import cv2

        self.level = level
        self.zoom = zoom
        """How many of the picture's pixels one of this level's spans (1, 2, 4...)."""
        self.settings = settings
        self.rng = rng
        r = self.r = settings.patch_radius
        size = 2 * r + 1
        h, w = self.shape = level.hole.shape
        span = np.arange(-r, r + 1)
        self.offsets = (span[:, None] * w + span[None, :]).reshape(-1)  # patch pixels, flat
        kernel = np.ones((size, size), np.uint8)
        inner = np.zeros((h, w), np.bool_)
        inner[r : h - r, r : w - r] = True
        # A source patch lies wholly in the source region.
        self.valid = (cv2.erode(level.source.astype(np.uint8), kernel, borderValue=0) > 0) & inner
        vy, vx = np.nonzero(self.valid)
        self.vy, self.vx = vy.astype(np.int32), vx.astype(np.int32)
        # A target patch covers a hole pixel; centres stay inside the picture (every hole
        # pixel is still covered by some patch).
        targets = (cv2.dilate(level.hole.astype(np.uint8), kernel) > 0) & inner
        ty, tx = np.nonzero(targets)
        self.ty, self.tx = ty.astype(np.int32), tx.astype(np.int32)
        self.index = np.full((h, w), -1, np.int32)
        self.index[self.ty, self.tx] = np.arange(self.ty.size, dtype=np.int32)
        self.sy = np.zeros(self.ty.size, np.int32)
        self.sx = np.zeros(self.ty.size, np.int32)
        self.dist = np.zeros(self.ty.size, np.float32)
        self.scale = 1.0
        self.occupancy = np.zeros((h, w), np.float32)
        self.rarity = np.zeros((h, w), np.float32)
        self.guide: NDArray[np.float32] | None = None
        if not self.usable:
            return
        self._basis()
        self.source_desc = self._describe(level.original)
        # Votes trust patches near the known pixels most.
        depth = cv2.distanceTransform((~level.anchor).astype(np.uint8), cv2.DIST_L2, 3)
        trust = np.exp(-depth / (settings.confidence_decay * size)).astype(np.float32)
        self.confidence = cv2.blur(trust, (size, size))[self.ty, self.tx]
        # Patches that hold known pixels are compared exactly, known pixels weighing more
        # than the estimate: they keep the fill in step with the border.
        known = (~level.hole).astype(np.float32)
        share = cv2.blur(known, (size, size))[self.ty, self.tx]
        self.edge = np.nonzero((share > 0) & (share < 1))[0]
        marks = known.reshape(-1).take(
            self.ty[self.edge].astype(np.int64)[:, None] * w
            + self.tx[self.edge][:, None]
            + self.offsets[None, :]
        )
        weights = np.repeat(marks + (1.0 - marks) * settings.estimate_weight, 3, axis=1)
        self.edge_weights = (weights / weights.mean(axis=1, keepdims=True)).astype(np.float32)

    @property
    def usable(self) -> bool:
        return self.vy.size >= 4 and self.ty.size > 0

    def _patches(self, pixels: Image, ys: Coords, xs: Coords) -> Image:
        """The patches of ``pixels`` centred at (ys, xs) as rows: n x (2r+1)^2 * 3."""
        centres = ys.astype(np.int64) * self.shape[1] + xs
        rows = pixels.reshape(-1, 3).take(centres[:, None] + self.offsets[None, :], axis=0)
        out: Image = rows.reshape(ys.size, -1)
        return out

    def _basis(self) -> None:
        """PCA of a sample of source patches."""
        import cv2

        size = 2 * self.r + 1
        count = min(self.vy.size, 4000)
        pick = self.rng.choice(self.vy.size, size=count, replace=False)
        patches = self._patches(self.level.original, self.vy[pick], self.vx[pick])
        dims = min(self.settings.components, count)
        mean, vectors, _ = cv2.PCACompute2(
            patches, np.empty((0, 0), np.float32), maxComponents=dims
        )
        top = np.asarray(vectors, np.float32)  # dims x patch, largest variance first
        self.kernels = top.reshape(-1, size, size, 3)
        self.kernel_offset = (top @ np.asarray(mean, np.float32)[0]).astype(np.float32)

    def _describe(self, pixels: Image) -> NDArray[np.float32]:
        """Every pixel's patch projected on the PCA basis: H x W x dims."""
        import cv2

        h, w = self.shape
        dims = self.kernels.shape[0]
        out = np.empty((h, w, dims), np.float32)
        for k in range(dims):
            acc = np.zeros((h, w), np.float32)
            for c in range(3):
                acc += cv2.filter2D(pixels[:, :, c], cv2.CV_32F, self.kernels[k, :, :, c])
            out[:, :, k] = acc - self.kernel_offset[k]
        return out

    def set_guide(self, guide: Image) -> None:
        """Compare patches on ``guide`` too (fixed for the level): the coarser level's
        result, so finer levels add detail without moving its structure."""
        weight = np.float32(np.sqrt(self.settings.guide_weight))
        self.guide = self._describe(guide) * weight
        self.guide_targets = self.guide[self.ty, self.tx]

    # --- rarity and reuse ---

    def measure_rarity(self) -> None:
        """Each source patch's distance to the most similar source patch it does not
        overlap, over the typical such distance (stripes and flat wall have twins, a badge
        has none). Exact, so only for levels with few sources."""
        r = self.r
        patches = self.source_desc[self.vy, self.vx]
        norms = (patches**2).sum(axis=1)
        nearest = np.full(self.vy.size, np.inf, np.float32)
        chunk = max(1, 2_000_000 // self.vy.size)
        for start in range(0, self.vy.size, chunk):
            part = slice(start, start + chunk)
            dist = norms[part, None] - 2.0 * patches[part] @ patches.T + norms[None, :]
            overlap = (np.abs(self.vy[part, None] - self.vy[None, :]) <= 2 * r) & (
                np.abs(self.vx[part, None] - self.vx[None, :]) <= 2 * r
            )
            dist[overlap] = np.inf
            nearest[part] = dist.min(axis=1)
        finite = np.isfinite(nearest)
        fallback = float(nearest[finite].max()) if finite.any() else 0.0
        nearest = np.where(finite, np.maximum(nearest, 0.0), fallback)
        self.rarity[self.vy, self.vx] = nearest / max(float(np.median(nearest)), 1e-6)

    def inherit_rarity(self, coarse: _Synthesis) -> None:
        h, w = self.shape
        self.rarity = _resize(coarse.rarity, (w, h), area=False)

    def _reuse(self, cy: Coords, cx: Coords, others: NDArray[np.float32]) -> NDArray[np.float32]:
        """The cost of copying (cy, cx) when ``others`` targets already do."""
        used = np.minimum(others, 1.0)
        out = self.settings.reuse_penalty * self.scale * used * self.rarity[cy, cx]
        return out.astype(np.float32)

    def _count(self) -> None:
        h, w = self.shape
        flat = self.sy.astype(np.int64) * w + self.sx
        self.occupancy = np.bincount(flat, minlength=h * w).astype(np.float32).reshape(h, w)

    # --- search ---

    def _cost(
        self, target_desc: NDArray[np.float32], edge_patches: Image, cy: Coords, cx: Coords
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(distance, distance + reuse cost) of mapping every target to (cy, cx); a source
        that is not valid costs infinity."""
        h, w = self.shape
        inside = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
        ok = inside & self.valid[np.where(inside, cy, 0), np.where(inside, cx, 0)]
        cy = np.where(ok, cy, self.vy[0])
        cx = np.where(ok, cx, self.vx[0])
        diff = target_desc - self.source_desc[cy, cx]
        dist = np.einsum("nd,nd->n", diff, diff)
        if self.guide is not None:
            off = self.guide_targets - self.guide[cy, cx]
            dist += np.einsum("nd,nd->n", off, off)
        if self.edge.size:
            e = self.edge
            exact = (edge_patches - self._patches(self.level.original, cy[e], cx[e])) ** 2
            dist[e] = np.einsum("nk,nk->n", exact, self.edge_weights)
            if self.guide is not None:
                off = self.guide_targets[e] - self.guide[cy[e], cx[e]]
                dist[e] += np.einsum("nd,nd->n", off, off)
        dist = np.where(ok, dist, np.float32(np.inf)).astype(np.float32)
        total = dist + self._reuse(cy, cx, self.occupancy[cy, cx])
        return dist, total.astype(np.float32)

    def _try(
        self, target_desc: NDArray[np.float32], edge_patches: Image, cy: Coords, cx: Coords
    ) -> None:
        dist, total = self._cost(target_desc, edge_patches, cy, cx)
        # the current match's own use does not count against it
        current = self.dist + self._reuse(self.sy, self.sx, self.occupancy[self.sy, self.sx] - 1)
        better = total < current
        if better.any():
            self.sy = np.where(better, cy, self.sy).astype(np.int32)
            self.sx = np.where(better, cx, self.sx).astype(np.int32)
            self.dist = np.where(better, dist, self.dist).astype(np.float32)
            self._count()

    def search(self, *, steps: tuple[int, ...], max_radius: int) -> None:
        """PatchMatch: propagate neighbours' matches (at ``steps``), then random search."""
        target_desc = self._describe(self.level.pixels)[self.ty, self.tx]
        edge_patches = self._patches(self.level.pixels, self.ty[self.edge], self.tx[self.edge])
        self.dist, _ = self._cost(target_desc, edge_patches, self.sy, self.sx)
        self._count()
        finite = self.dist[np.isfinite(self.dist)]
        self.scale = float(max(np.median(finite) if finite.size else 1.0, 1.0))
        h, w = self.shape
        for step in steps:
            for dy, dx in ((0, step), (step, 0), (0, -step), (-step, 0)):
                ny, nx = self.ty - dy, self.tx - dx
                inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
                n = np.where(inside, self.index[ny.clip(0, h - 1), nx.clip(0, w - 1)], -1)
                has = n >= 0
                safe = np.where(has, n, 0)
                cy = np.where(has, self.sy[safe] + dy, -1).astype(np.int32)
                cx = np.where(has, self.sx[safe] + dx, -1).astype(np.int32)
                self._try(target_desc, edge_patches, cy, cx)
        radius = max_radius
        while radius >= 1:
            jump = self.rng.integers(-radius, radius + 1, size=(2, self.ty.size), dtype=np.int32)
            self._try(target_desc, edge_patches, self.sy + jump[0], self.sx + jump[1])
            radius //= 2

    def vote(self, *, radius: int | None = None) -> None:
        """Every hole pixel becomes the weighted mean of the source patches covering it.

        A patch's weight falls with its distance to its source and with its distance from
        the known pixels (Wexler et al.'s confidence), so the patches that overlap the
        border decide what the pixels next to it become, and alignment spreads outwards.
        """
        h, w = self.shape
        flat = self.level.pixels.reshape(-1, 3)
        copied = self.level.original.reshape(-1, 3)
        finite = np.isfinite(self.dist)
        sigma = float(np.median(self.dist[finite])) if finite.any() else 1.0
        weight = np.where(finite, np.exp(-self.dist / max(2.0 * sigma, 1e-3)), 0.0)
        weight = (np.maximum(weight, 1e-4) * self.confidence).astype(np.float32)
        acc = np.zeros((h * w, 3), np.float32)
        total = np.zeros(h * w, np.float32)
        targets = self.ty.astype(np.int64) * w + self.tx
        sources = self.sy.astype(np.int64) * w + self.sx
        weighted = weight[:, None]
        r, reach = self.r, self.r if radius is None else radius
        span = np.arange(-r, r + 1)
        inner = (np.abs(span)[:, None] <= reach) & (np.abs(span)[None, :] <= reach)
        for offset in self.offsets[inner.reshape(-1)]:
            at = targets + offset
            acc[at] += weighted * copied.take(sources + offset, axis=0)
            total[at] += weight
        filled = self.level.hole.reshape(-1) & (total > 0)
        flat[filled] = acc[filled] / total[filled][:, None]

    # --- starting points ---

    def grow(self) -> None:
        """The coarsest level's start: the hole filled ring by ring from the anchor, each
        pixel the centre of the source patch that best matches its known neighbours
        (squared difference over the known pixels). At half resolution or coarser, the
        mean centre of the few best, and a source's mean colour is also held against the
        blurred extension already in the hole. A grown pixel's best match is where its
        search starts.

        Continues the border's structure where matching a blurred guess alone would pick
        the smoothest patch of a similar mean (a flat suit over a striped flag)."""
        import cv2

        r = self.r
        size = 2 * r + 1
        pixels, original = self.level.pixels, self.level.original
        hole, anchor = self.level.hole, self.level.anchor
        w = hole.shape[1]
        # Averaging the best matches and anchoring colour are low-passes, for structure. At
        # full resolution they flatten texture (brick lost its mortar lines: a fifth of its
        # gradient energy left), so there one match is copied and colour left to it.
        structural = self.zoom >= STRUCTURE_ZOOM
        expected = pixels.copy()
        padded = np.pad(pixels, ((r, r), (r, r), (0, 0)))
        known = np.pad(~hole | anchor, r).astype(np.float32)
        padded_offsets = (np.arange(size)[:, None] * (w + 2 * r) + np.arange(size)).reshape(-1)
        # a random pool of the sources bounds the cost on big holes
        pool = self.rng.permutation(self.vy.size)[:ONION_SOURCES]
        vy, vx = self.vy[pool], self.vx[pool]
        sources = self._patches(original, vy, vx)
        squares = (sources**2).T
        means = cv2.blur(original, (size, size))[vy, vx]
        mean_norms = (means**2).sum(axis=1)
        rarity = self.rarity[vy, vx]
        occupancy = np.zeros(vy.size, np.float32)
        depth = cv2.distanceTransform((~anchor).astype(np.uint8), cv2.DIST_L2, 3)
        rings = np.ceil(depth).astype(np.int32)
        grow = hole & ~anchor
        k = min(self.settings.onion_matches if structural else 1, vy.size)
        colour_weight = self.settings.colour_weight if structural else 0.0
        # targets start from a random source; a grown pixel's from its best match
        pick = self.rng.integers(0, self.vy.size, size=self.ty.size)
        self.sy, self.sx = self.vy[pick], self.vx[pick]
        for ring in np.unique(rings[grow]):
            py, px = np.nonzero(grow & (rings == ring))
            corners = (py.astype(np.int64) * (w + 2 * r) + px)[:, None] + padded_offsets
            patches = padded.reshape(-1, 3).take(corners, axis=0).reshape(py.size, -1)
            weights = np.repeat(known.reshape(-1).take(corners), 3, axis=1)
            counted = np.maximum(weights.sum(axis=1, keepdims=True), 1.0)
            dist = (
                (weights * patches**2).sum(axis=1, keepdims=True)
                - 2.0 * (weights * patches) @ sources.T
                + weights @ squares
            ) / counted
            wanted = expected[py, px]
            colour = ((wanted**2).sum(axis=1, keepdims=True) - 2.0 * wanted @ means.T) / 3.0
            colour += mean_norms / 3.0
            scale = max(float(np.median(dist.min(axis=1))), 1.0)
            reuse = self.settings.reuse_penalty * scale * np.minimum(occupancy, 1.0) * rarity
            cost = dist + colour_weight * colour + reuse
            top = np.argpartition(cost, k - 1, axis=1)[:, :k]
            top_cost = np.take_along_axis(cost, top, axis=1)
            trust = np.exp(-(top_cost - top_cost.min(axis=1, keepdims=True)) / scale)
            centres = original[vy[top], vx[top]]  # n x k x 3
            pixels[py, px] = (centres * trust[:, :, None]).sum(axis=1) / trust.sum(axis=1)[:, None]
            padded[py + r, px + r] = pixels[py, px]
            known[py + r, px + r] = 1.0
            best = top[np.arange(py.size), np.argmin(top_cost, axis=1)]
            occupancy += np.bincount(best, minlength=vy.size)
            ids = self.index[py, px]
            mine = ids >= 0
            self.sy[ids[mine]], self.sx[ids[mine]] = vy[best[mine]], vx[best[mine]]

    def inherit(self, coarse: _Synthesis) -> None:
        """Start from the coarser level's matches, scaled up; random where there are none."""
        h, w = self.shape
        cy = np.minimum(self.ty // 2, coarse.shape[0] - 1)
        cx = np.minimum(self.tx // 2, coarse.shape[1] - 1)
        idx = coarse.index[cy, cx]
        have = idx >= 0
        safe = np.where(have, idx, 0)
        sy = (coarse.sy[safe] * 2 + self.ty % 2).clip(0, h - 1)
        sx = (coarse.sx[safe] * 2 + self.tx % 2).clip(0, w - 1)
        ok = have & self.valid[sy, sx]
        pick = self.rng.integers(0, self.vy.size, size=self.ty.size)
        self.sy = np.where(ok, sy, self.vy[pick]).astype(np.int32)
        self.sx = np.where(ok, sx, self.vx[pick]).astype(np.int32)


# --- the pyramid -----------------------------------------------------------------------


def synthesise(
    pixels: Image,
    hole: BoolMap,
    source: BoolMap,
    *,
    band: float,
    seed: int,
    anchor: BoolMap | None = None,
    settings: FillSettings = DEFAULT,
    on_round: OnRound | None = None,
) -> Image:
    """``hole`` filled coarse to fine by patches copied from ``source`` (a band ``band``
    pixels wide); other pixels unchanged. The fill grows from ``anchor`` (default: every
    pixel outside the hole)."""
    import cv2

    rng = np.random.default_rng(seed)
    r = settings.patch_radius
    anchor = ~hole if anchor is None else anchor
    levels = [
        _Level(
            pixels=pixels.astype(np.float32),
            original=pixels.astype(np.float32),
            hole=hole.copy(),
            source=source & ~(hole & ~anchor),  # never a pixel nobody knows
            anchor=anchor.copy(),
        )
    ]
    while True:
        last = levels[-1]
        h, w = last.hole.shape
        deep = cv2.distanceTransform(last.hole.astype(np.uint8), cv2.DIST_L2, 3).max()
        if (
            deep <= settings.coarsest_depth
            or min(h, w) < 2 * (4 * r + 2)
            or band / 2 ** len(levels) < 2 * r + 3
        ):
            break
        levels.append(last.half())
    planned = settings.coarse_iterations + sum(
        settings.middle_iterations if depth else settings.fine_iterations
        for depth in range(len(levels) - 1)
    )
    done = 0
    coarsest = levels[-1]
    coarsest.pixels = blurred_extension(coarsest.pixels, ~coarsest.hole | coarsest.anchor, ring=1)
    previous: _Synthesis | None = None
    for depth in range(len(levels) - 1, -1, -1):
        level = levels[depth]
        guide: Image | None = None
        if depth < len(levels) - 1:
            h, w = level.hole.shape
            coarser = levels[depth + 1].pixels
            guide = _resize(coarser, (w, h), area=False)
            level.pixels[level.hole] = guide[level.hole]
        synth = _Synthesis(level, settings, rng, zoom=2**depth)
        if not synth.usable:
            previous = None  # the upscaled coarser result stands; the next level starts anew
            continue
        if synth.vy.size <= RARITY_SOURCES:
            synth.measure_rarity()
        elif previous is not None:
            synth.inherit_rarity(previous)
        first = previous is None
        if previous is None or guide is None:
            synth.grow()
            synth.set_guide(level.pixels.copy())
            iterations = settings.coarse_iterations
        else:
            synth.set_guide(guide)
            synth.inherit(previous)
            synth.vote()
            iterations = settings.middle_iterations if depth else settings.fine_iterations
        longest = max(level.hole.shape)
        for round_ in range(iterations):
            synth.search(
                steps=(4, 2, 1) if first else (2, 1),
                max_radius=longest if first else max(4, longest // 8),
            )
            final = depth == 0 and round_ == iterations - 1
            synth.vote(radius=settings.final_vote_radius if final else None)
            done += 1
            if on_round is not None:
                on_round(done, max(planned, done))
        previous = synth
    return levels[0].pixels


# --- holes and strips --------------------------------------------------------------------


def fill_from_band(
    rgb: RGB8,
    hole: BoolMap,
    *,
    band: int,
    reach: float | None,
    seed: int,
    seam: int = 0,
    direction: Direction = None,
    settings: FillSettings = DEFAULT,
    on_round: OnRound | None = None,
) -> RGB8:
    """``hole`` filled from the known pixels within ``band`` of it.

    ``seam`` known pixels next to the hole are synthesised too, for a caller that
    cross-fades the original into the fill across them. Detail fades into the blurred
    extension (``far_field`` along ``direction``) between ``reach`` and 1.5 x ``reach``
    from the known pixels (None: never).
    """
    import cv2

    if not hole.any():
        return rgb.copy()
    to_hole = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 5)
    work = hole | (to_hole <= seam)
    near = (to_hole <= band + seam) & ~hole
    ys, xs = np.nonzero(near | work)
    crop = np.s_[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    pixels = rgb[crop].astype(np.float32)
    part, unknown = work[crop], hole[crop]
    depth = cv2.distanceTransform(unknown.astype(np.uint8), cv2.DIST_L2, 5)
    blurred = far_field(pixels, ~part, direction)
    synthesised = part
    if reach is not None:
        fade = max(1.0, reach / 2)
        synthesised = part & (depth <= reach + fade)
        # What the synthesis sees beyond its reach, as the far side of the detail it makes:
        # half push-pull, half wide streaks. Push-pull alone averages the table below into
        # the wall above (a dark shape rose from the astronaut's table); streaks alone carry
        # whatever touches the border, a helmet's buckle, along its rows into the detail.
        beyond = 0.5 * (
            blurred_extension(pixels, ~part) + far_field(pixels, ~part, direction, spread=0.6)
        )
        pixels = np.where((part & ~synthesised)[:, :, None], beyond, pixels)
    filled = synthesise(
        pixels,
        synthesised,
        near[crop],
        band=band,
        seed=seed,
        anchor=~unknown,
        settings=settings,
        on_round=on_round,
    )
    if reach is not None:
        alpha = np.clip((reach + fade - depth) / fade, 0.0, 1.0)[:, :, None]
        filled = filled * alpha + blurred * (1.0 - alpha)
    out = rgb.copy()
    out[crop][part] = np.clip(np.rint(filled[part]), 0, 255).astype(np.uint8)
    return out


def hole_depth(hole: BoolMap) -> float:
    """How far the hole's farthest pixel is from a known one, in pixels."""
    import cv2

    if not hole.any():
        return 0.0
    return float(cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5).max())


def fill_hole(
    rgb: RGB8,
    hole: BoolMap,
    *,
    seed: int,
    band_ratio: float = 0.5,
    settings: FillSettings = DEFAULT,
    on_round: OnRound | None = None,
) -> RGB8:
    """An erase hole filled by the rules of ``extend``: from the known pixels within a band
    ``band_ratio`` x the hole's depth (at least 16 pixels), coarse to fine, reuse penalised.
    No fade: the band is a ring around the hole, and a blurred core in a sharp frame would
    read as a ghost of what was erased."""
    band = max(MIN_BAND, round(band_ratio * hole_depth(hole)))
    return fill_from_band(
        rgb, hole, band=band, reach=None, seed=seed, settings=settings, on_round=on_round
    )


def extend(
    rgb: RGB8,
    *,
    left: int,
    right: int,
    top: int,
    bottom: int,
    seed: int,
    seam: int = 0,
    band_ratio: float = 0.5,
    reach_ratio: float = 1.0,
    settings: FillSettings = DEFAULT,
    on_round: Callable[[str, int, int], None] | None = None,
) -> RGB8:
    """The picture on a larger canvas, each new strip filled from the band next to its side.

    Left and right first (the picture's height), then top and bottom across the whole
    width. A strip's band is ``band_ratio`` x its width (at least 16 pixels, at most what is
    known on that side); detail reaches ``reach_ratio`` x the band into the strip and fades
    into the blurred extension over the next half band. ``seam`` pixels of the picture next
    to each strip are synthesised too, for the caller to cross-fade. ``on_round`` is told
    (side, rounds done, rounds planned) as each strip is filled.
    """
    h, w = rgb.shape[:2]
    canvas = np.zeros((h + top + bottom, w + left + right, 3), np.uint8)
    canvas[top : top + h, left : left + w] = rgb
    known = np.zeros(canvas.shape[:2], np.bool_)
    known[top : top + h, left : left + w] = True

    def sizes(extension: int, extent: int) -> tuple[int, int]:
        edge = min(seam, extent // 4)
        return edge, min(extent - edge, max(MIN_BAND, round(band_ratio * extension)))

    rows, everything = slice(top, top + h), slice(0, canvas.shape[1])
    plans: list[tuple[str, tuple[slice, slice], int, int, Direction]] = []
    if left:
        edge, band = sizes(left, w)
        plans.append(("left", (rows, slice(0, left + edge + band)), edge, band, "rows"))
    if right:
        edge, band = sizes(right, w)
        crop = (rows, slice(left + w - edge - band, canvas.shape[1]))
        plans.append(("right", crop, edge, band, "rows"))
    if top:
        edge, band = sizes(top, h)
        plans.append(("top", (slice(0, top + edge + band), everything), edge, band, "columns"))
    if bottom:
        edge, band = sizes(bottom, h)
        crop = (slice(top + h - edge - band, canvas.shape[0]), everything)
        plans.append(("bottom", crop, edge, band, "columns"))
    for index, (side, crop, edge, band, direction) in enumerate(plans):

        def told(done: int, planned: int, side: str = side) -> None:
            if on_round is not None:
                on_round(side, done, planned)

        canvas[crop] = fill_from_band(
            canvas[crop],
            ~known[crop],
            band=band,
            reach=reach_ratio * band,
            seed=seed + index,
            seam=edge,
            direction=direction,
            settings=settings,
            on_round=told,
        )
        known[crop] = True
    return canvas
