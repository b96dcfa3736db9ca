"""Trigger backtests: run trigger specs over a clip store's historical telemetry, without video.

For every curated drive in the drive index (``drives/``, optionally limited to a date range) the
drive's canonical telemetry (its ``telemetry`` file in the store manifest) goes through
:func:`fleetcore.triggers.library.find_events` with the curate job's telemetry rate and drive span, so a
backtest of the shipped triggers reproduces the store's ``triggers/`` tables exactly. The report
gives firings per day and per vehicle, the clip windows they would cut
(:func:`fleetcore.triggers.library.merge_windows`), clip-hours and the clip-store bytes they would cost
(bytes per clip-second of the store: the current generations' shard bytes / catalog duration).
A trigger with ``model: NAME@VERSION`` runs on the drive's derived telemetry plus that model's
signals from the store's ``predictions`` table (:mod:`fleetcore.triggers.model_signals`), so a
disagreement trigger is priced on history like any other (docs/loop.md).

:func:`window_thumbnails` decodes a few frames of sample windows: from the clip store when a
stored clip covers the window, else from the landing drive (``drives.path``) with
``fleetcore.video.extract.ClipExtractor`` (only the frames asked for are decoded; a drive on
object storage is downloaded to a temporary folder first).

The store is a local path or a URI (``s3://bucket/store``): everything is read through
:class:`fleetcore.store.catalog.Catalog`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from fleetcore.errors import FleetError
from fleetcore.landing.drives import MANIFEST
from fleetcore.query.mining import Filters
from fleetcore.store.catalog import Catalog
from fleetcore.store.fs import file_size, join, read_bytes
from fleetcore.triggers.library import DEFAULT_RATE_HZ, TriggerSpec, find_events, merge_windows
from fleetcore.triggers.model_signals import DEFAULT_LABEL, add_model_signals, parse_model
from fleetcore.triggers.signals import derived_frame
from schemas import TELEMETRY, TRIGGER_EVENTS

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000


class BacktestError(FleetError):
    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        super().__init__(self.path, problem)


@dataclass
class BacktestResult:
    """What a trigger set would have fired over the store's history."""

    events: pl.DataFrame  # TRIGGER_EVENTS columns + date
    windows: pl.DataFrame  # merged clip windows: vehicle_id, drive_id, date, start_ns, end_ns, duration_s, triggers, primary_trigger
    per_day: pl.DataFrame  # date, trigger, firings, clip_seconds
    per_vehicle: pl.DataFrame  # vehicle_id, trigger, firings
    drives: int
    drive_hours: float
    clip_hours: float
    bytes_per_clip_second: float | None
    estimated_bytes: int | None
    examples: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        by_trigger = self.events.group_by("trigger").len().sort("trigger")
        return {
            "drives": self.drives,
            "drive_hours": round(self.drive_hours, 6),
            "firings": self.events.height,
            "firings_by_trigger": {k: int(v) for k, v in by_trigger.iter_rows()},
            "clips": self.windows.height,
            "clip_hours": round(self.clip_hours, 6),
            "bytes_per_clip_second": self.bytes_per_clip_second,
            "estimated_bytes": self.estimated_bytes,
            "per_day": self.per_day.to_dicts(),
            "per_vehicle": self.per_vehicle.to_dicts(),
            "examples": self.examples,
        }


def store_config(store: str | Path | Catalog) -> dict[str, Any]:
    """The curate config of the store's last run (``runs/last.json``), or {}."""
    doc = Catalog.of(store).last_run()
    return dict((doc or {}).get("config") or {})


def bytes_per_clip_second(store: str | Path | Catalog) -> float | None:
    """Clip-store bytes per second of clip: the current generations' shard bytes (the store
    manifest's ``current.bytes``) / summed catalog ``duration_s``."""
    cat = Catalog.of(store)
    if cat.manifest.revision == 0:
        return None
    total = int(cat.store_manifest()["current"]["bytes"])
    secs = cat.scan("clips", missing_ok=True).select(pl.col("duration_s").sum()).collect().item()
    if not secs:
        return None
    return total / float(secs)


def drive_telemetry(store: str | Path | Catalog, vehicle_id: str, drive_id: str) -> pa.Table | None:
    """A drive's canonical telemetry from the store (None for a video-only drive)."""
    t = Catalog.of(store).read_drive_table("telemetry", vehicle_id, drive_id, columns=TELEMETRY.column_names)
    return None if t is None else TELEMETRY.conform(t)


def _model_predictions(cat: Catalog, models: Sequence[str]) -> dict[str, pl.DataFrame]:
    """Each model's rows of the store's ``predictions`` table (a model with none: empty)."""
    out = {}
    for m in models:
        name, version = parse_model(m)
        out[m] = (cat.scan("predictions", missing_ok=True)
                  .filter((pl.col("model") == name) & (pl.col("model_version") == version)).collect())
        if out[m].is_empty():
            log.warning("backtest: no predictions of model %s in %s (import them with `fleet predictions import`)", m, cat.root)
    return out


def _sorted_events(parts: list[pa.Table]) -> pa.Table:
    if not parts:
        return TRIGGER_EVENTS.schema.empty_table()
    if len(parts) == 1:
        return parts[0]
    t = pa.concat_tables(parts)
    return t.sort_by([("window_start_ns", "ascending"), ("window_end_ns", "ascending"), ("trigger", "ascending"),
                      ("event_start_ns", "ascending")])


def backtest(
    store: str | Path | Catalog,
    specs: Sequence[TriggerSpec],
    *,
    filters: Filters | None = None,
    rate_hz: float | None = None,
    max_clip_s: float | None = None,
    examples: int = 5,
) -> BacktestResult:
    """Run ``specs`` over every drive of the store (within ``filters``' date range; geo filters do not apply).

    ``rate_hz`` / ``max_clip_s`` default to the store's last curate config (else 20 Hz / 30 s).
    """
    if not specs:
        raise BacktestError(str(store), "no trigger specs to backtest")
    cat = Catalog.of(store)
    cfg = store_config(cat)
    rate = float(rate_hz or cfg.get("telemetry_rate_hz") or DEFAULT_RATE_HZ)
    max_clip = max_clip_s if max_clip_s is not None else cfg.get("max_clip_s", 30.0)
    f = filters or Filters()
    _, s_d, _, u_d = f.bounds()
    drives = cat.scan("drives", missing_ok=True)
    if s_d is not None:
        drives = drives.filter(pl.col("date") >= s_d)
    if u_d is not None:
        drives = drives.filter(pl.col("date") <= u_d)
    dr = drives.select("vehicle_id", "drive_id", "date", "start_ns", "end_ns").sort(["date", "vehicle_id", "drive_id"]).collect()
    tables: list[pa.Table] = []
    dates: list[str] = []
    drive_s = 0.0
    plain = [sp for sp in specs if sp.model is None]
    modelled = sorted({(sp.model, sp.model_label or DEFAULT_LABEL) for sp in specs if sp.model is not None})
    preds = _model_predictions(cat, [m for m, _ in modelled])
    for veh, drv, date, s, e in dr.iter_rows():
        tel = drive_telemetry(cat, veh, drv)
        parts = [find_events(tel, plain, vehicle_id=veh, drive_id=drv, rate_hz=rate, drive_span_ns=(int(s), int(e)))] if plain else []
        if modelled and tel is not None:
            derived = derived_frame(tel, rate_hz=rate, drive_start_ns=int(s))
            clips = cat.scan("clips", missing_ok=True).filter((pl.col("vehicle_id") == veh) & (pl.col("drive_id") == drv)).collect()
            for model, label in modelled:
                group = [sp for sp in specs if sp.model == model and (sp.model_label or DEFAULT_LABEL) == label]
                rows = preds[model].filter((pl.col("vehicle_id") == veh) & (pl.col("drive_id") == drv))
                with_model = add_model_signals(derived, rows, clips, label=label)
                parts.append(find_events(None, group, vehicle_id=veh, drive_id=drv, rate_hz=rate, drive_span_ns=(int(s), int(e)),
                                         derived=with_model))
        ev = _sorted_events(parts)
        tables.append(ev)
        dates += [date] * ev.num_rows
        drive_s += (int(e) - int(s)) / NS_PER_S
    events_pa = pa.concat_tables(tables) if tables else TRIGGER_EVENTS.schema.empty_table()
    events = pl.from_arrow(events_pa).with_columns(pl.Series("date", dates, dtype=pl.String))  # type: ignore[union-attr]
    assert isinstance(events, pl.DataFrame)

    date_of = {(v, d): dt for v, d, dt in dr.select("vehicle_id", "drive_id", "date").iter_rows()}
    wins = merge_windows(events_pa, max_clip_s=max_clip)
    windows = pl.DataFrame(
        [
            {
                "vehicle_id": w.vehicle_id, "drive_id": w.drive_id, "date": date_of[(w.vehicle_id, w.drive_id)],
                "start_ns": w.start_ns, "end_ns": w.end_ns, "duration_s": w.duration_s,
                "triggers": list(w.triggers), "primary_trigger": w.primary_trigger,
            }
            for w in wins
        ],
        schema={"vehicle_id": pl.String, "drive_id": pl.String, "date": pl.String, "start_ns": pl.Int64, "end_ns": pl.Int64,
                "duration_s": pl.Float64, "triggers": pl.List(pl.String), "primary_trigger": pl.String},
    )
    ev_s = ((pl.col("window_end_ns") - pl.col("window_start_ns")) / NS_PER_S).alias("window_s")
    per_day = (
        events.with_columns(ev_s).group_by("date", "trigger").agg(pl.len().alias("firings"), pl.col("window_s").sum().alias("window_seconds"))
        .sort("date", "trigger")
    )
    day_clips = windows.group_by("date").agg(pl.col("duration_s").sum().alias("clip_seconds"))
    per_day = per_day.join(day_clips, on="date", how="left")
    per_vehicle = events.group_by("vehicle_id", "trigger").agg(pl.len().alias("firings")).sort("vehicle_id", "trigger")
    clip_s = float(windows["duration_s"].sum()) if windows.height else 0.0
    bpcs = bytes_per_clip_second(cat)
    ex = []
    for r in windows.sort("date", "vehicle_id", "drive_id", "start_ns").head(examples).iter_rows(named=True):
        ex.append({k: r[k] for k in ("vehicle_id", "drive_id", "date", "start_ns", "end_ns", "duration_s", "triggers", "primary_trigger")})
    log.info("backtest: %d drives, %d firings, %d clip windows", dr.height, events.height, windows.height)
    return BacktestResult(
        events=events, windows=windows, per_day=per_day, per_vehicle=per_vehicle, drives=dr.height, drive_hours=drive_s / 3600,
        clip_hours=clip_s / 3600, bytes_per_clip_second=bpcs, estimated_bytes=None if bpcs is None else int(round(bpcs * clip_s)),
        examples=ex,
    )


def _from_store(cat: Catalog, window: dict[str, Any], n: int, camera: str | None) -> tuple[str, list[np.ndarray], bool] | None:
    """(camera, frames, whether they were blurred when stored) of a window that lies inside a stored
    clip of the same drive (None if none does)."""
    from fleetcore.query.preview import clip_frames

    clips = (
        cat.scan("clips", missing_ok=True)
        .filter((pl.col("date") == window["date"]) & (pl.col("vehicle_id") == window["vehicle_id"]) & (pl.col("drive_id") == window["drive_id"])
                & (pl.col("start_ns") <= window["start_ns"]) & (pl.col("end_ns") >= window["end_ns"]))
        .sort("start_ns").head(1).collect()
    )
    if clips.is_empty():
        return None
    got = clip_frames(cat, clips, camera=camera, n=None)[0]
    row = clips.row(0, named=True)
    if not got.frames:  # a video-less clip (telemetry-only drive)
        return got.camera, [], True
    rate = float(row["sample_rate_hz"])
    i0 = int(round((window["start_ns"] - row["start_ns"]) * rate / NS_PER_S))
    i1 = int(round((window["end_ns"] - row["start_ns"]) * rate / NS_PER_S))
    inside = [k for k, idx in enumerate(got.indices) if i0 <= idx <= i1] or list(range(len(got.frames)))
    pick = [inside[int(j)] for j in np.linspace(0, len(inside) - 1, min(n, len(inside))).round().astype(int)]
    return got.camera, [got.frames[k] for k in pick], bool(row.get("privacy", False))


def _landing_drive(cat: Catalog, window: dict[str, Any]) -> tuple[str, dict[str, Any], pa.Table]:
    """(drive location, landing manifest, frame index) of the window's drive."""
    drv = (
        cat.scan("drives", missing_ok=True)
        .filter((pl.col("date") == window["date"]) & (pl.col("vehicle_id") == window["vehicle_id"]) & (pl.col("drive_id") == window["drive_id"]))
        .select("path").collect()
    )
    if drv.is_empty():
        raise BacktestError(cat.root, f"drive {window['drive_id']} is not in the drive index")
    location = str(drv.item())
    man_p = join(location, MANIFEST)
    if file_size(man_p) is None:
        raise BacktestError(man_p, "landing drive manifest not found (was the drive removed from the landing zone?)")
    try:
        manifest = json.loads(read_bytes(man_p))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BacktestError(man_p, f"not valid JSON ({exc})") from exc
    frame_index = cat.read_drive_table("frames", window["vehicle_id"], window["drive_id"])
    if frame_index is None:
        raise BacktestError(cat.layout.table_dir("frames"), f"frame index of drive {window['drive_id']} not found in the store manifest")
    return location, manifest, frame_index


def _from_landing(cat: Catalog, window: dict[str, Any], n: int, camera: str | None, max_side: int) -> tuple[str, list[np.ndarray]]:
    """Frames of a window decoded from the landing drive (read by byte ranges when it is on object storage)."""
    from fleetcore.video.extract import ClipExtractor

    drv = (cat.scan("drives", missing_ok=True)
           .filter((pl.col("vehicle_id") == window["vehicle_id"]) & (pl.col("drive_id") == window["drive_id"])).select("cameras").collect())
    if drv.height and not drv["cameras"].to_list()[0]:  # a telemetry-only drive: nothing to decode (its landing folder is not needed)
        return "", []
    location, manifest, frame_index = _landing_drive(cat, window)
    names = [c["name"] for c in manifest["cameras"]]
    if not names:
        return "", []
    cam = camera or ("front" if "front" in names else names[0])
    dur = max((window["end_ns"] - window["start_ns"]) / NS_PER_S, 1e-3)
    rate = max(n, 1) / dur
    with ClipExtractor(location, manifest, frame_index, cameras=[cam], max_side=max_side, threads=1) as ex:
        clip = ex.extract(int(window["start_ns"]), int(window["end_ns"]), rate_hz=rate)
        frames = [f.copy() for f in clip.frames[cam] if f is not None]
    return cam, frames[:n]


def window_thumbnails(store: str | Path | Catalog, windows: Sequence[dict[str, Any]], *, n: int = 6, camera: str | None = None,
                      max_side: int = 320, privacy: Any = None) -> list[tuple[dict[str, Any], str, list[np.ndarray], str]]:
    """(window, camera, RGB frames, source) per window; source is ``store`` or ``landing``, or
    ``telemetry only`` (camera "", no frames) for a window of a drive without cameras.

    No unblurred pixels leave: frames decoded from the landing zone, and stored frames of clips
    curated without the privacy stage, go through the privacy stage first (``privacy``: its
    ``PrivacyOptions``, default the defaults) — source ``landing+privacy`` / ``store+privacy``."""
    from fleetcore.query.preview import PreviewError, PreviewPrivacy

    cat = Catalog.of(store)
    blur = PreviewPrivacy(privacy)
    out = []
    for w in windows:
        got = _from_store(cat, w, n, camera)
        if got is not None and not got[0]:
            out.append((w, "", [], "telemetry only"))
            continue
        if got is not None and got[2]:
            out.append((w, got[0], got[1], "store"))
            continue
        cam, frames, src = (got[0], got[1], "store") if got is not None else (*_from_landing(cat, w, n, camera, max_side), "landing")
        if not cam:
            out.append((w, "", [], "telemetry only"))
            continue
        where = f"{w['vehicle_id']}/{w['drive_id']} [{w['start_ns']}, {w['end_ns']}]"
        try:
            frames = blur.blur(frames, what=where)
        except PreviewError as exc:
            raise BacktestError(where, exc.problem) from exc
        out.append((w, cam, frames, f"{src}+privacy"))
    return out


def window_sheet(store: str | Path, windows: Sequence[dict[str, Any]], path: str | Path, *, n: int = 6, camera: str | None = None,
                 thumb_width: int = 160) -> Path:
    """A contact-sheet PNG of sample windows (caption: drive, window, triggers, frame source)."""
    from fleetcore.query.preview import render_sheet

    rows = window_thumbnails(store, windows, n=n, camera=camera)
    if not rows:
        raise BacktestError(str(path), "no windows to preview")
    strips = [([f"{w['vehicle_id']} {w['drive_id']} [{w['start_ns'] / 1e9:.2f}s, {w['end_ns'] / 1e9:.2f}s]",
                f"triggers: {', '.join(w['triggers'])}  " + (f"({cam}, from {src})" if cam else "(no video: telemetry only)")], frames)
              for w, cam, frames, src in rows]
    return render_sheet(strips, path, frames=n, thumb_width=thumb_width)
