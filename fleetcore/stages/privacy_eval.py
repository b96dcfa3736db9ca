"""Scoring an anonymiser on annotated images: recall per object size, blurred area outside the truth,
time per frame (used by ``bench/privacy.py`` and the recall floors of the test suite).

An annotated set is a folder with images and an ``annotations.jsonl`` of one JSON object per image::

    {"image": "<file name>", "width": W, "height": H, "boxes": [[x0, y0, x1, y1], ...], "ignore": [[...], ...]}

(pixels, x1/y1 exclusive; ``ignore``: regions neither scored as a miss nor as blurred in error).
Images are shrunk to the clip store's frame size (``side``, the longest side, default 640) as the
curate job would store them, and the boxes with them. An object counts as blurred when at least
``cover`` (half) of its box lies inside the padded boxes the stage blurs; its size is the longer
side of its box at that scale. The false area of an image is the share of its pixels blurred
outside every truth and ignore box; the figure is its mean over the images.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from fleetcore.errors import FleetError

__all__ = ["AnnotatedImage", "Score", "load_annotated", "score", "FACE_BUCKETS", "PLATE_BUCKETS"]

Box = tuple[int, int, int, int]
#: size buckets (longer side of the box, px at the scored frame size): [lo, hi)
FACE_BUCKETS: tuple[tuple[float, float], ...] = ((10, 24), (24, 48), (48, float("inf")))
PLATE_BUCKETS: tuple[tuple[float, float], ...] = ((24, 48), (48, float("inf")))


class AnnotationError(FleetError):
    default_code = "bad_annotations"


@dataclass(frozen=True)
class AnnotatedImage:
    name: str
    rgb: np.ndarray
    boxes: tuple[tuple[float, float, float, float], ...]  # x0, y0, x1, y1 at the scored size
    ignore: tuple[tuple[float, float, float, float], ...] = ()


def load_annotated(folder: str | Path, *, side: int = 640) -> list[AnnotatedImage]:
    """The annotated images of ``folder`` (see the module docstring), shrunk to ``side``."""
    folder = Path(folder)
    ann = folder / "annotations.jsonl"
    if not ann.is_file():
        raise AnnotationError(str(ann), "not found (expected one JSON object per image)")
    out = []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            name, boxes, ignore = d["image"], d["boxes"], d.get("ignore") or []
        except (ValueError, KeyError, TypeError) as exc:
            raise AnnotationError(f"{ann}:{n}", f"expected an object with image and boxes ({type(exc).__name__})") from exc
        bgr = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise AnnotationError(str(folder / name), "not a readable image")
        h, w = bgr.shape[:2]
        s = min(1.0, side / max(h, w))
        if s < 1.0:
            bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        scale = lambda bs: tuple(tuple(float(v) * s for v in b) for b in bs)  # noqa: E731
        out.append(AnnotatedImage(name, np.ascontiguousarray(bgr[..., ::-1]), scale(boxes), scale(ignore)))
    return out


@dataclass
class Score:
    """Found / total per size bucket, the mean false blurred area (share of the image) and the
    milliseconds per frame of the detection (wall time, as run)."""

    buckets: dict[tuple[float, float], list[int]] = field(default_factory=dict)
    false_area: float = 0.0
    ms_per_frame: float = 0.0
    images: int = 0

    def recall(self, lo: float, hi: float | None = None) -> float:
        """Recall over the buckets from ``lo`` up to ``hi`` (default: the bucket starting at lo)."""
        sel = [v for (a, b), v in self.buckets.items() if a >= lo and (b <= hi if hi is not None else a == lo)]
        found, total = sum(v[0] for v in sel), sum(v[1] for v in sel)
        return found / total if total else float("nan")

    def row(self) -> dict[str, str]:
        cells = {f"{int(lo)}-{int(hi)}" if hi != float("inf") else f">={int(lo)}": f"{f} / {t}" for (lo, hi), (f, t) in self.buckets.items()}
        return {**cells, "false area %": f"{100 * self.false_area:.2f}", "ms/frame": f"{self.ms_per_frame:.1f}"}


def _mask(shape: tuple[int, int], boxes: Sequence[Sequence[float]]) -> np.ndarray:
    m = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        m[max(0, int(y0)) : int(np.ceil(y1)), max(0, int(x0)) : int(np.ceil(x1))] = True
    return m


def score(images: Sequence[AnnotatedImage], blurred: Callable[[np.ndarray], Sequence[Box]], *,
          buckets: Sequence[tuple[float, float]] = FACE_BUCKETS, cover: float = 0.5) -> Score:
    """Score ``blurred(rgb) -> the (x, y, w, h) boxes that would be blurred`` (padded) on ``images``."""
    sc = Score(buckets={tuple(b): [0, 0] for b in buckets})  # type: ignore[misc]
    spent = 0.0
    false = []
    for im in images:
        t0 = time.perf_counter()
        boxes = list(blurred(im.rgb))
        spent += time.perf_counter() - t0
        shape = im.rgb.shape[:2]
        m = _mask(shape, [(x, y, x + w, y + h) for x, y, w, h in boxes])
        for x0, y0, x1, y1 in im.boxes:
            size = max(x1 - x0, y1 - y0)
            for lo, hi in sc.buckets:
                if lo <= size < hi:
                    part = m[max(0, int(y0)) : int(np.ceil(y1)), max(0, int(x0)) : int(np.ceil(x1))]
                    sc.buckets[(lo, hi)][1] += 1
                    sc.buckets[(lo, hi)][0] += int(part.size > 0 and float(part.mean()) >= cover)
        truth = _mask(shape, [*im.boxes, *im.ignore])
        false.append(float((m & ~truth).mean()))
    sc.images = len(images)
    sc.false_area = float(np.mean(false)) if false else 0.0
    sc.ms_per_frame = 1000 * spent / max(1, len(images))
    return sc
