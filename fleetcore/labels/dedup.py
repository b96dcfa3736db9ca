"""Near-duplicate clips: perceptual hashes of keyframes and a per-vehicle duplicate marker.

A clip's fingerprint is the 64-bit DCT perceptual hash (``imagehash.phash``, 8x8) of ``k``
keyframes of its primary camera (first, middle, last present frame), as 16-digit hex strings.
Two clips are near-duplicates when every aligned keyframe pair differs in at most ``threshold``
bits (a parked car firing the same trigger for an hour produces the same three images).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

DEFAULT_THRESHOLD = 8  # bits of 64
KEYFRAMES = 3


def phash_hex(frame: np.ndarray) -> str:
    """16-hex-digit pHash of an RGB (or grey) uint8 image."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(np.ascontiguousarray(frame))))


def hamming(a: str, b: str) -> int:
    return int(bin(int(a, 16) ^ int(b, 16)).count("1"))


def distance(a: Sequence[str], b: Sequence[str]) -> int | None:
    """Max Hamming distance over aligned keyframes; None if either clip has no hash."""
    n = min(len(a), len(b))
    if n == 0:
        return None
    return max(hamming(x, y) for x, y in zip(a[:n], b[:n]))


def clip_hashes(clip: Any, camera: str | None = None, k: int = KEYFRAMES) -> list[str]:
    """pHashes of ``k`` evenly spaced present samples (first, middle, last) of ``camera``."""
    from fleetcore.labels.base import pick_evenly, primary_camera

    cam = camera or primary_camera(clip)
    if cam is None:
        return []
    present = [f for f in clip.frames.get(cam, []) if f is not None]
    cache: dict[int, str] = {}
    out = []
    for f in pick_evenly(present, k):
        if id(f) not in cache:
            cache[id(f)] = phash_hex(f)
        out.append(cache[id(f)])
    return out


def mark_near_duplicates(
    rows: Iterable[tuple[str, str, int, Sequence[str]]],
    *,
    threshold: int = DEFAULT_THRESHOLD,
    max_gap_ns: int | None = None,
) -> dict[str, str | None]:
    """``{clip_id: duplicate_of or None}`` for rows ``(clip_id, vehicle_id, start_ns, hashes)``.

    Rows are processed in (start_ns, clip_id) order. A clip is a duplicate of the earliest
    *original* (non-duplicate) clip of the same vehicle within ``threshold`` bits (optionally only
    originals that started at most ``max_gap_ns`` earlier); otherwise it is an original itself.
    Clips without hashes are never duplicates.
    """
    out: dict[str, str | None] = {}
    originals: dict[str, list[tuple[str, int, Sequence[str]]]] = {}
    for clip_id, vehicle, start_ns, hashes in sorted(rows, key=lambda r: (r[2], r[0])):
        dup = None
        for oid, ostart, ohashes in originals.get(vehicle, []):
            if max_gap_ns is not None and start_ns - ostart > max_gap_ns:
                continue
            d = distance(hashes, ohashes)
            if d is not None and d <= threshold:
                dup = oid
                break
        out[clip_id] = dup
        if dup is None and hashes:
            originals.setdefault(vehicle, []).append((clip_id, int(start_ns), list(hashes)))
    return out


def duplicates_from_catalog(clips: Any, labels: Any, *, threshold: int = DEFAULT_THRESHOLD, max_gap_ns: int | None = None) -> dict[str, str | None]:
    """:func:`mark_near_duplicates` over a clip catalog (CLIPS table: clip_id, vehicle_id, start_ns)
    and its LABELS table (rows labeller="phash", label="phash", value = JSON list of hex hashes)."""
    import json

    hashes: dict[str, list[str]] = {}
    for r in labels.select(["clip_id", "labeller", "label", "value"]).to_pylist():
        if r["labeller"] == "phash" and r["label"] == "phash" and r["value"]:
            hashes[r["clip_id"]] = [str(h) for h in json.loads(r["value"])]
    rows = [
        (r["clip_id"], r["vehicle_id"], int(r["start_ns"]), hashes.get(r["clip_id"], []))
        for r in clips.select(["clip_id", "vehicle_id", "start_ns"]).to_pylist()
    ]
    return mark_near_duplicates(rows, threshold=threshold, max_gap_ns=max_gap_ns)


def near_duplicates_frame(clips: Any, *, threshold: int = DEFAULT_THRESHOLD) -> Any:
    """Near-duplicates across drives, dates and runs: for each clip of ``clips`` (a polars frame
    with clip_id, vehicle_id, start_utc and the catalog's ``phash`` column), the earliest original
    clip of the same vehicle by UTC start whose keyframe hashes are within ``threshold`` bits, or
    null for an original. A polars DataFrame (clip_id, near_duplicate_of); the catalog's own
    ``near_duplicate_of`` compares the clips of one drive only, as they are packed."""
    import polars as pl

    df = clips.lazy().select("clip_id", "vehicle_id", pl.col("start_utc").dt.epoch("ns"), "phash").collect()
    rows = [(cid, veh, int(ts or 0), ph.split(",") if ph else []) for cid, veh, ts, ph in df.iter_rows()]
    marks = mark_near_duplicates(rows, threshold=threshold)
    return pl.DataFrame({"clip_id": list(marks), "near_duplicate_of": list(marks.values())},
                        schema={"clip_id": pl.String, "near_duplicate_of": pl.String})
