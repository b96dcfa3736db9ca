"""Pictures for asset metadata: a contact sheet of sample clips and bar charts, drawn with OpenCV.

Frames come out of the shards by random access (catalog index row -> ``Catalog.read_member``: one ranged
GET on object storage). The store is a local path or a URI; the pictures are local files.
Images are written atomically and embedded in metadata as base64 data URIs in markdown.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
import polars as pl

from fleetcore.store.catalog import Catalog
from fleetcore.landing.drives import atomic_write_bytes

BG = (32, 32, 32)
FG = (235, 235, 235)
BAR = (200, 140, 60)  # BGR
#: Labels shown first in contact-sheet captions (the rest follow alphabetically).
CAPTION_ORDER = {"time_of_day": 0, "scene_light": 1, "road_type": 2, "manoeuvre": 3, "speed_band": 4}


def png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("OpenCV could not encode the image as PNG")
    return buf.tobytes()


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.4) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, FG, 1, cv2.LINE_AA)


def _middle_frame(catalog: Catalog, index: pl.DataFrame, clip: Mapping[str, object]) -> np.ndarray | None:
    """The middle frame of the clip's first camera, decoded from its shard (BGR), or None."""
    rows = index.filter(pl.col("key") == clip["member_key"])
    cams = list(clip["cameras"] or [])  # type: ignore[arg-type]
    if rows.is_empty() or not cams:
        return None
    prefix = f"{clip['member_key']}.{cams[0]}."
    jpgs = rows.filter(pl.col("member").str.starts_with(prefix) & pl.col("member").str.ends_with(".jpg")).sort("member")
    if jpgs.is_empty():
        return None
    r = jpgs.row(jpgs.height // 2, named=True)
    data = catalog.read_member(str(r["shard"]), int(r["data_offset"]), int(r["size"]))
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return img


def contact_sheet(
    store: str | Path | Catalog,
    clips: pl.DataFrame,
    out_path: str | Path,
    *,
    labels: pl.DataFrame | None = None,
    max_clips: int = 12,
    columns: int = 4,
    thumb_w: int = 192,
) -> bytes:
    """A thumbnail grid (PNG) of up to ``max_clips`` clips (the first ones by clip id), captioned with
    the primary trigger and the clip's labels. Written to ``out_path``; returns the PNG bytes."""
    catalog = Catalog.of(store)
    sel = clips.sort("clip_id").head(max_clips)
    keys = sel["member_key"].to_list() if "member_key" in sel.columns else []
    index = catalog.scan("index").filter(pl.col("key").is_in(keys)).collect() if keys and catalog.exists("index") else pl.DataFrame()
    thumb_h = thumb_w * 9 // 16
    cap_h = 30
    n = max(sel.height, 1)
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    sheet = np.full((rows * (thumb_h + cap_h), cols * thumb_w, 3), BG, np.uint8)
    label_map: dict[str, list[str]] = {}
    if labels is not None and not labels.is_empty():
        from dagster_project.facts import categorical_labels

        tags = categorical_labels(labels)
        for cid, tag in tags.select("clip_id", "tag").unique().sort("clip_id", "tag").iter_rows():
            label_map.setdefault(cid, []).append(tag)
    if sel.is_empty():
        _text(sheet, "no clips", (8, thumb_h // 2))
    for i, clip in enumerate(sel.iter_rows(named=True)):
        y, x = (i // cols) * (thumb_h + cap_h), (i % cols) * thumb_w
        img = _middle_frame(catalog, index, clip) if not index.is_empty() else None
        if img is not None:
            sheet[y : y + thumb_h, x : x + thumb_w] = cv2.resize(img, (thumb_w, thumb_h), interpolation=cv2.INTER_AREA)
        else:
            _text(sheet, "no frame", (x + 8, y + thumb_h // 2))
        _text(sheet, str(clip["primary_trigger"])[:28], (x + 4, y + thumb_h + 12))
        tags = sorted(label_map.get(str(clip["clip_id"]), []), key=lambda t: (CAPTION_ORDER.get(t.split("=")[0], 99), t))
        labs = " ".join(t.split("=")[-1] for t in tags) or "(no labels)"
        _text(sheet, labs[:34], (x + 4, y + thumb_h + 25), 0.35)
    png = png_bytes(sheet)
    atomic_write_bytes(out_path, png)
    return png


def bar_chart(counts: Mapping[str, int] | Sequence[tuple[str, int]], out_path: str | Path, *, title: str, width: int = 560) -> bytes:
    """A horizontal bar chart (PNG) of name -> count. Written to ``out_path``; returns the PNG bytes."""
    items = list(counts.items()) if isinstance(counts, Mapping) else list(counts)
    row_h, top, left = 20, 28, 170
    h = top + row_h * max(len(items), 1) + 8
    img = np.full((h, width, 3), BG, np.uint8)
    _text(img, title, (8, 18), 0.5)
    peak = max((c for _, c in items), default=0)
    for i, (name, c) in enumerate(items):
        y = top + i * row_h
        _text(img, str(name)[:26], (8, y + 14))
        w = 0 if peak == 0 else int((width - left - 60) * c / peak)
        cv2.rectangle(img, (left, y + 3), (left + max(w, 1), y + row_h - 3), BAR, -1)
        _text(img, str(c), (left + w + 6, y + 14))
    if not items:
        _text(img, "(nothing yet)", (8, top + 14))
    png = png_bytes(img)
    atomic_write_bytes(out_path, png)
    return png
