"""Previews of clips from the clip store: a contact-sheet PNG or an HTML page of short MP4s.

Frames are read by random access: the catalog's shard index gives each JPEG member's offset in
its shard (:meth:`fleetcore.store.catalog.Catalog.read_member`: one ranged GET on object storage),
so only the frames shown are read and decoded. The store is a local path or a URI
(``s3://bucket/store``); the outputs are local files.

* :func:`clip_frames` — decoded RGB frames of one camera of one clip (all, or ``n`` evenly spaced);
* :func:`contact_sheet` — one captioned thumbnail strip per clip, written as a PNG;
* :func:`html_preview` — ``index.html`` + one H.264 (yuv420p, +faststart) MP4 per clip.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Final, Mapping, Sequence

import ffmpeg
import numpy as np
import polars as pl

from fleetcore.store.catalog import Catalog
from fleetcore.errors import FleetError
from fleetcore.store.fs import atomic_write_bytes
from fleetcore.video.ffmpeg import FfmpegError
from fleetcore.video.ffmpeg import run as run_ffmpeg

log = logging.getLogger(__name__)

BG: Final = (24, 24, 24)  # BGR
FG: Final = (235, 235, 235)
ACCENT: Final = (80, 200, 255)
FONT: Final = 0  # cv2.FONT_HERSHEY_SIMPLEX


class PreviewError(FleetError):
    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        super().__init__(self.path, problem)


@dataclass(frozen=True)
class ClipFrames:
    clip_id: str
    camera: str
    indices: list[int]  # sample indices of the frames
    frames: list[np.ndarray]  # RGB uint8
    rate_hz: float


def _members(cat: Catalog, clips: pl.DataFrame) -> pl.DataFrame:
    """Shard-index rows (shard, key, member, data_offset, size) of the given clips' members."""
    dates = sorted({s.split("/", 1)[0].removeprefix("date=") for s in clips["shard"].to_list()})
    keys = clips.select(pl.col("shard"), pl.col("member_key").alias("key"))
    return (
        cat.scan("index", missing_ok=True)
        .filter(pl.col("date").is_in(dates))
        .join(keys.lazy(), on=["shard", "key"], how="semi")
        .select("shard", "key", "member", "data_offset", "size")
        .collect()
    )


def _frame_rows(members: pl.DataFrame, key: str, camera: str | None) -> tuple[str, list[tuple[int, int, int, str]]]:
    """(camera, [(sample index, data_offset, size, member)]) for one clip's image members."""
    rows = members.filter(pl.col("key") == key)
    by_cam: dict[str, list[tuple[int, int, int, str]]] = {}
    for _, _, member, off, size in rows.iter_rows():
        parts = member[len(key) + 1:].split(".")
        if len(parts) == 3 and parts[2] in ("jpg", "png") and parts[1].isdigit():
            by_cam.setdefault(parts[0], []).append((int(parts[1]), int(off), int(size), member))
    if not by_cam:
        raise PreviewError(key, "the clip has no image members in the shard index")
    if camera is None:
        camera = "front" if "front" in by_cam else sorted(by_cam)[0]
    if camera not in by_cam:
        raise PreviewError(key, f"camera {camera!r} not in the clip (cameras: {sorted(by_cam)})")
    return camera, sorted(by_cam[camera])


def _decode(data: bytes, member: str) -> np.ndarray:
    if member.endswith(".jpg"):
        import simplejpeg

        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise PreviewError(member, "image does not decode")
    return np.ascontiguousarray(arr[:, :, ::-1])


def clip_frames(store: str | Path | Catalog, clips: pl.DataFrame, *, camera: str | None = None, n: int | None = 6,
                pick: Callable[[list[int]], Sequence[int]] | None = None) -> list[ClipFrames]:
    """Frames of each clip of ``clips`` (needs columns clip_id, shard, member_key, sample_rate_hz):
    ``n`` evenly spaced frames (None: all) of ``camera`` (default: front, else the first camera), or
    with ``pick`` the frames at the positions it returns given the clip's stored sample indices
    (only those are read and decoded). A clip whose catalog ``cameras`` (when ``clips`` has the
    column) is empty, a telemetry-only drive's, gives no frames (camera "")."""
    if clips.is_empty():
        return []
    cat = Catalog.of(store)
    members = _members(cat, clips)
    out = []
    cams_of = clips["cameras"].to_list() if "cameras" in clips.columns else [None] * clips.height
    for (cid, shard, key, rate), cams in zip(clips.select("clip_id", "shard", "member_key", "sample_rate_hz").iter_rows(), cams_of):
        if cams is not None and not cams:  # video-less
            out.append(ClipFrames(cid, "", [], [], float(rate or 10.0)))
            continue
        cam, rows = _frame_rows(members.filter(pl.col("shard") == shard), key, camera)
        if pick is not None:
            rows = [rows[i] for i in pick([r[0] for r in rows])]
        elif n is not None and len(rows) > n:
            even = np.linspace(0, len(rows) - 1, n).round().astype(int).tolist()
            rows = [rows[i] for i in even]
        frames = [_decode(cat.read_member(shard, off, size), m) for _, off, size, m in rows]
        out.append(ClipFrames(cid, cam, [r[0] for r in rows], frames, float(rate or 10.0)))
    return out


class PreviewPrivacy:
    """The privacy stage as previews use it, built on first use (``options``: its PrivacyOptions,
    default the defaults). :meth:`blur` returns blurred copies of one camera's frames or raises
    PreviewError: a preview never shows unblurred faces or plates."""

    def __init__(self, options: Any = None) -> None:
        self.options = options
        self._stage: Any = None

    def blur(self, frames: Sequence[np.ndarray], *, what: str) -> list[np.ndarray]:
        from fleetcore.stages.options import PrivacyOptions
        from fleetcore.stages.privacy import PrivacyError, PrivacyStage

        if self._stage is None:
            self._stage = PrivacyStage.from_options(self.options if self.options is not None else PrivacyOptions())
        try:
            return self._stage.anonymised(frames, what=what)
        except PrivacyError as exc:
            raise PreviewError(what, f"the preview needs the privacy stage, which failed: {exc.reason}") from exc


def private_frames(got: Sequence[ClipFrames], rows: Mapping[str, Mapping[str, Any]], privacy: Any = None) -> list[ClipFrames]:
    """``got`` with the frames of every clip stored without the privacy stage (catalog ``privacy``
    false) blurred by it (:class:`PreviewPrivacy`). Raises PreviewError if the stage cannot run."""
    blur = PreviewPrivacy(privacy)
    out = []
    for cf in got:
        if bool(rows.get(cf.clip_id, {}).get("privacy", False)) or not cf.frames:
            out.append(cf)
            continue
        out.append(ClipFrames(cf.clip_id, cf.camera, cf.indices, blur.blur(cf.frames, what=f"clip {cf.clip_id}"), cf.rate_hz))
    return out


def _thumb(rgb: np.ndarray, width: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    th = max(2, int(round(h * width / w)))
    return cv2.resize(np.ascontiguousarray(rgb[:, :, ::-1]), (width, th), interpolation=cv2.INTER_AREA)


def caption_lines(row: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    trig = row.get("triggers") or []
    lines = [str(row.get("clip_id", "")), "triggers: " + ", ".join(map(str, trig))]
    if labels:
        lines.append("  ".join(f"{k}={v}" for k, v in list(labels.items())[:6]))
    return lines


#: Labels shown in captions unless asked otherwise: the ones people mine by.
KEY_LABELS = ("time_of_day", "manoeuvre", "speed_band", "road_type", "pedestrians", "pedestrian_count", "light_conflict", "regions_blurred")


def clip_label_values(store: str | Path | Catalog, clip_ids: Sequence[str], *, keys: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """Label values per clip (value, else rounded score), sorted by label name; ``keys`` chooses them
    (default: KEY_LABELS)."""
    lab = Catalog.of(store).scan("labels", missing_ok=True).filter(pl.col("clip_id").is_in(list(clip_ids)))
    lab = lab.filter(pl.col("label").is_in(list(keys or KEY_LABELS)))
    df = lab.sort(["clip_id", "label", "labeller"]).unique(["clip_id", "label"], keep="first").sort(["clip_id", "label"]).collect()
    out: dict[str, dict[str, str]] = {}
    for cid, name, val, score in df.select("clip_id", "label", "value", "score").iter_rows():
        out.setdefault(cid, {})[name] = val if val is not None else ("" if score is None else f"{score:.3g}")
    return out


def contact_sheet(
    store: str | Path | Catalog,
    clips: pl.DataFrame,
    path: str | Path,
    *,
    camera: str | None = None,
    frames: int = 6,
    thumb_width: int = 160,
    max_clips: int = 24,
    label_keys: Sequence[str] | None = None,
) -> Path:
    """Write a PNG: per clip (first ``max_clips``), a caption (id, triggers, labels) over a strip of
    ``frames`` thumbnails. Returns the path."""
    if "clip_id" not in clips.columns:
        raise PreviewError(str(path), "the result has no clip_id column to preview")
    cat = Catalog.of(store)
    sel = _catalog_rows(cat, clips, max_clips)
    if sel.is_empty():
        raise PreviewError(str(path), "no clips to preview (empty result)")
    rows = {r["clip_id"]: r for r in sel.iter_rows(named=True)}
    got = private_frames(clip_frames(cat, sel, camera=camera, n=frames), rows)
    labels = clip_label_values(cat, sel["clip_id"].to_list(), keys=label_keys)
    strips = [(caption_lines(rows[cf.clip_id], labels.get(cf.clip_id, {})), cf.frames) for cf in got]
    p = render_sheet(strips, path, frames=frames, thumb_width=thumb_width)
    log.info("contact sheet of %d clips -> %s", len(strips), p)
    return p


def render_sheet(strips: Sequence[tuple[Sequence[str], Sequence[np.ndarray]]], path: str | Path, *, frames: int,
                 thumb_width: int = 160) -> Path:
    """Write a contact-sheet PNG: per strip, caption lines (the first highlighted) over a row of up to
    ``frames`` thumbnails. Written atomically; returns the path."""
    import cv2

    if not strips:
        raise PreviewError(str(path), "nothing to draw")
    pad, line_h = 6, 16
    out = []
    for lines, imgs in strips:
        thumbs = [_thumb(f, thumb_width) for f in imgs] or [no_video_tile(thumb_width)]
        th = max(t.shape[0] for t in thumbs)
        strip = np.full((pad + len(lines) * line_h + pad + th + pad, pad + frames * (thumb_width + pad), 3), BG, np.uint8)
        for i, text in enumerate(lines):
            cv2.putText(strip, text[:120], (pad, pad + (i + 1) * line_h - 4), FONT, 0.42, ACCENT if i == 0 else FG, 1, cv2.LINE_AA)
        y = pad + len(lines) * line_h + pad
        for j, t in enumerate(thumbs):
            x = pad + j * (thumb_width + pad)
            strip[y:y + t.shape[0], x:x + t.shape[1]] = t
        out.append(strip)
    width = max(s.shape[1] for s in out)
    sheet = np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=BG[0]) for s in out], axis=0)
    from fleetcore.query.images import write_png

    return write_png(path, sheet, compression=3)


def no_video_tile(width: int, lines: Sequence[str] = ("no video", "(telemetry only)")) -> np.ndarray:
    """The BGR placeholder drawn where a strip has no frames (a video-less clip or window)."""
    import cv2

    h = max(2, width * 9 // 16)
    tile = np.full((h, width, 3), 48, np.uint8)
    cv2.rectangle(tile, (0, 0), (width - 1, h - 1), FG, 1)
    for i, text in enumerate(lines):
        y = h // 2 - 6 * (len(lines) - 1) + 14 * i + 4
        cv2.putText(tile, text[: max(1, width // 7)], (6, y), FONT, 0.38, FG, 1, cv2.LINE_AA)
    return tile


def _catalog_rows(cat: Catalog, clips: pl.DataFrame, max_clips: int) -> pl.DataFrame:
    """The catalog rows of the result's clips (result order, first ``max_clips`` distinct ids)."""
    ids = clips.select(pl.col("clip_id").cast(pl.String)).unique(maintain_order=True).head(max_clips).with_row_index("_o")
    rows = cat.scan("clips", missing_ok=True).join(ids.lazy(), on="clip_id", how="inner").sort("_o").drop("_o")
    return rows.collect()


def encode_mp4(frames: Sequence[np.ndarray], path: str | Path, *, fps: float) -> Path:
    """Encode RGB frames as H.264 yuv420p MP4 with +faststart (imageio-ffmpeg's binary), atomically."""
    if not frames:
        raise PreviewError(str(path), "no frames to encode")
    h, w = frames[0].shape[:2]
    w2, h2 = w - w % 2, h - h % 2
    raw = b"".join(np.ascontiguousarray(f[:h2, :w2]).tobytes() for f in frames)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp.mp4")
    stream = ffmpeg.input("-", f="rawvideo", pix_fmt="rgb24", s=f"{w2}x{h2}", r=f"{fps:g}").output(
        str(tmp), **{"c:v": "libx264"}, pix_fmt="yuv420p", preset="veryfast", crf="28", threads="1",
        movflags="+faststart", map_metadata="-1", fflags="+bitexact", **{"flags:v": "+bitexact"},
    )
    try:
        run_ffmpeg(stream, path=p, input_bytes=raw)
    except FfmpegError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(p)
    return p


def html_preview(
    store: str | Path | Catalog,
    clips: pl.DataFrame,
    out_dir: str | Path,
    *,
    camera: str | None = None,
    max_clips: int = 24,
    label_keys: Sequence[str] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` with one playable MP4 (``out_dir/clips/<clip_id>.mp4``) per clip."""
    if "clip_id" not in clips.columns:
        raise PreviewError(str(out_dir), "the result has no clip_id column to preview")
    cat = Catalog.of(store)
    sel = _catalog_rows(cat, clips, max_clips)
    if sel.is_empty():
        raise PreviewError(str(out_dir), "no clips to preview (empty result)")
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    labels = clip_label_values(cat, sel["clip_id"].to_list(), keys=label_keys)
    rows = {r["clip_id"]: r for r in sel.iter_rows(named=True)}
    cards = []
    for cf in private_frames(clip_frames(cat, sel, camera=camera, n=None), rows):
        cap = caption_lines(rows[cf.clip_id], labels.get(cf.clip_id, {}))
        text = "".join(f"<div>{html.escape(c)}</div>" for c in cap)
        if not cf.frames:  # a telemetry-only clip: no video to play
            cards.append(f"<figure><div>no video (telemetry only)</div><figcaption>{text}</figcaption></figure>")
            continue
        rel = f"clips/{cf.clip_id}.mp4"
        encode_mp4(cf.frames, out / rel, fps=cf.rate_hz)
        cards.append(
            f'<figure><video src="{html.escape(rel)}" controls muted loop autoplay playsinline preload="metadata"></video>'
            f"<figcaption><b>{html.escape(cf.camera)}</b>{text}</figcaption></figure>"
        )
    page = (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Fleet clips</title><style>"
        "body{background:#181818;color:#eee;font:13px sans-serif}figure{display:inline-block;margin:8px;vertical-align:top;width:420px}"
        "video{width:100%}figcaption div{word-break:break-all}</style></head><body>"
        f"<h1>{len(cards)} clips</h1>" + "\n".join(cards) + "</body></html>\n"
    )
    atomic_write_bytes(str(out / "index.html"), page.encode("utf-8"))
    return out / "index.html"
