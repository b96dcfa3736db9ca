"""Shared helpers of the importers: resampling, canonical tables, signal mappings, drive writing.

All times here are int64 nanoseconds. Signals are passed around as ``Series`` (sorted,
de-duplicated sample times plus float values, NaN marking a missing sample); the canonical
table is built at the end, where NaN becomes null.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fleetcore.errors import SourceImportError
from fleetcore.video.probe import codec_name
from fleetcore.landing.drives import CAMERA_RE, ID_RE, DriveRef, DriveWriter
from schemas import TELEMETRY, SchemaValidationError

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
#: Canonical columns that are interpolated with "nearest" instead of linearly.
DISCRETE = frozenset({"gear", "driver_assist_engaged"})
#: Canonical columns that are angles (interpolated on the unwrapped angle).
ANGLES = frozenset({"heading_rad"})
SIGNALS = [n for n in TELEMETRY.column_names if n != "t_ns"]


@dataclass(frozen=True)
class Series:
    """One signal: strictly increasing ``t_ns`` (int64) and float64 ``values`` (NaN = missing)."""

    t_ns: np.ndarray
    values: np.ndarray

    @staticmethod
    def make(t_ns: Any, values: Any) -> Series:
        """Sort by time, drop NaN samples and duplicate times (the first sample of a time wins)."""
        t = np.asarray(t_ns, dtype=np.int64).ravel()
        v = np.asarray(values, dtype=np.float64).ravel()
        if t.shape != v.shape:
            raise ValueError(f"{t.shape[0]} times but {v.shape[0]} values")
        keep = np.isfinite(v)
        t, v = t[keep], v[keep]
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        if t.size:
            first = np.concatenate(([True], np.diff(t) > 0))
            t, v = t[first], v[first]
        return Series(t, v)

    def __len__(self) -> int:
        return int(self.t_ns.size)


def seconds_to_ns(t_s: Any) -> np.ndarray:
    """Float seconds → int64 ns, rounded to the nearest microsecond (float64 carries no more for epoch times)."""
    return (np.rint(np.asarray(t_s, dtype=np.float64) * 1e6).astype(np.int64)) * 1000


def datetime_to_ns(t: dt.datetime) -> int:
    """A timezone-aware datetime (naive = UTC) → UNIX ns."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000


def uniform_grid(t0_ns: int, t1_ns: int, rate_hz: float) -> np.ndarray:
    """Grid points at whole multiples of the period (so grids are reproducible), inside [t0, t1]."""
    if rate_hz <= 0 or not math.isfinite(rate_hz):
        raise ValueError(f"rate_hz must be a positive number, got {rate_hz!r}")
    step = round(NS_PER_S / rate_hz)
    first = -((-t0_ns) // step) * step  # ceil
    if first > t1_ns:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first, t1_ns + 1, step, dtype=np.int64)


def _gap_limit_ns(s: Series, max_gap_s: float | None) -> int:
    if max_gap_s is not None:
        return int(max_gap_s * NS_PER_S)
    if len(s) < 2:
        return 0
    med = float(np.median(np.diff(s.t_ns)))
    return int(max(1.0 * NS_PER_S, 3.0 * med))


def resample(s: Series, grid: np.ndarray, *, kind: str = "linear", max_gap_s: float | None = None) -> np.ndarray:
    """Values of ``s`` on ``grid`` (NaN outside the signal's span and inside gaps longer than the limit).

    ``kind``: "linear", "angle" (radians, interpolated unwrapped, result in [0, 2pi)) or "nearest".
    The default gap limit is max(1 s, 3 x the median sample interval).
    """
    out = np.full(grid.shape, np.nan)
    if len(s) == 0 or grid.size == 0:
        return out
    if len(s) == 1:
        out[grid == s.t_ns[0]] = s.values[0]
        return out
    inside = (grid >= s.t_ns[0]) & (grid <= s.t_ns[-1])
    g = grid[inside]
    # index of the sample at or before each grid point, and the one after
    hi = np.searchsorted(s.t_ns, g, side="left")
    hi = np.clip(hi, 1, len(s) - 1)
    lo = hi - 1
    gap = s.t_ns[hi] - s.t_ns[lo]
    exact = s.t_ns[hi] == g
    ok = (gap <= _gap_limit_ns(s, max_gap_s)) | exact | (s.t_ns[lo] == g)
    tf = (s.t_ns - s.t_ns[0]).astype(np.float64)
    gf = (g - s.t_ns[0]).astype(np.float64)
    if kind == "nearest":
        pick = np.where((g - s.t_ns[lo]) <= (s.t_ns[hi] - g), lo, hi)
        vals = s.values[pick]
    elif kind == "angle":
        vals = np.mod(np.interp(gf, tf, np.unwrap(s.values)), 2 * math.pi)
    else:
        vals = np.interp(gf, tf, s.values)
    vals = np.where(ok, vals, np.nan)
    out[inside] = vals
    return out


def kind_of(column: str) -> str:
    if column in DISCRETE:
        return "nearest"
    if column in ANGLES:
        return "angle"
    return "linear"


def resample_all(
    signals: Mapping[str, Series], grid: np.ndarray, *, max_gap_s: float | None = None
) -> dict[str, np.ndarray]:
    return {c: resample(s, grid, kind=kind_of(c), max_gap_s=max_gap_s) for c, s in signals.items()}


def telemetry_table(t_ns: np.ndarray, columns: Mapping[str, np.ndarray], *, speed_required: bool = True) -> pa.Table:
    """Canonical TELEMETRY table (plus extra ``x_*`` columns) from float arrays (NaN → null). Rows without speed are dropped
    (kept, speed null, with ``speed_required=False``: a log that has no speed at all);
    rows are sorted by time and duplicate times removed (first wins). Angles are wrapped into [0, 2pi)."""
    t = np.asarray(t_ns, dtype=np.int64)
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    for k in cols:
        if k not in SIGNALS and not TELEMETRY.is_extra(k):
            raise ValueError(f"{k!r} is not a canonical telemetry column; expected one of {SIGNALS} or an extra {TELEMETRY.extra_prefix}<name>")
    if "speed_mps" not in cols:
        raise ValueError("no speed_mps column")
    keep = np.isfinite(cols["speed_mps"]) if speed_required else np.ones(t.shape, dtype=bool)
    order = np.argsort(t[keep], kind="stable")
    t = t[keep][order]
    cols = {k: v[keep][order] for k, v in cols.items()}
    if t.size:
        first = np.concatenate(([True], np.diff(t) > 0))
        t = t[first]
        cols = {k: v[first] for k, v in cols.items()}
    arrays: dict[str, pa.Array] = {"t_ns": pa.array(t, type=pa.int64())}
    for f in TELEMETRY.schema:
        if f.name == "t_ns" or f.name not in cols:
            continue
        v = cols[f.name]
        mask = ~np.isfinite(v)
        if f.name in ANGLES:
            v = np.mod(v, 2 * math.pi)
            v = np.where(v >= 2 * math.pi, 0.0, v)
        if pa.types.is_integer(f.type):
            arr = pa.array(np.where(mask, 0, np.rint(v)).astype(np.int64), mask=mask).cast(f.type)
        elif pa.types.is_boolean(f.type):
            arr = pa.array(np.where(mask, 0, v) != 0, mask=mask, type=pa.bool_())
        else:
            arr = pa.array(np.where(mask, 0.0, v), mask=mask, type=pa.float64())
        arrays[f.name] = arr
    for k in sorted(c for c in cols if TELEMETRY.is_extra(c)):
        v = cols[k]
        mask = ~np.isfinite(v)
        if mask.all():
            continue  # an extra signal without samples is left out
        arrays[k] = pa.array(np.where(mask, 0.0, v), mask=mask, type=pa.float64())
    return TELEMETRY.conform(pa.table(arrays), extras=True)


# --------------------------------------------------------------------------------------
# Geodesy helpers (speed / heading from position fixes)
# --------------------------------------------------------------------------------------
EARTH_RADIUS_M = 6_371_000.0


def speed_heading_from_fixes(t_ns: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Speed (m/s) and course (rad clockwise from north) at each fix, by central differences
    between its neighbours (one-sided at the ends). Course is NaN where the car barely moves."""
    n = len(t_ns)
    speed = np.full(n, np.nan)
    heading = np.full(n, np.nan)
    if n < 2:
        return speed, heading
    i0 = np.clip(np.arange(n) - 1, 0, n - 1)
    i1 = np.clip(np.arange(n) + 1, 0, n - 1)
    p1, p2 = np.radians(lat[i0]), np.radians(lat[i1])
    dphi = p2 - p1
    dl = np.radians(lon[i1] - lon[i0])
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    dist = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    dt_s = (t_ns[i1] - t_ns[i0]) / 1e9
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = np.where(dt_s > 0, dist / dt_s, np.nan)
    y = np.sin(dl) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    heading = np.mod(np.arctan2(y, x), 2 * math.pi)
    heading = np.where(dist > 0.5, heading, np.nan)
    return speed, heading


# --------------------------------------------------------------------------------------
# DBC files (candump / MDF); the mapping files are in fleetcore.ingest.importers.mapping
# --------------------------------------------------------------------------------------
def load_dbc(path: Path) -> Any:
    import cantools

    try:
        return cantools.database.load_file(str(path), strict=False)
    except FileNotFoundError as exc:
        raise SourceImportError(str(path), "DBC file not found") from exc
    except (cantools.database.UnsupportedDatabaseFormatError, UnicodeDecodeError, ValueError) as exc:
        raise SourceImportError(str(path), f"expected a CAN database (DBC): {exc}") from exc


# --------------------------------------------------------------------------------------
# Videos and drive writing
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    codec: str
    creation_utc_ns: int | None
    suffix: str
    duration_ns: int | None = None


def probe_video(path: Path) -> VideoInfo:
    """Open a container with PyAV and find its video stream (not necessarily stream 0)."""
    import av

    try:
        with av.open(str(path)) as c:
            streams = [s for s in c.streams if s.type == "video"]
            if not streams:
                raise SourceImportError(str(path), f"expected a video stream; the container has only {[s.type for s in c.streams]}")
            ctx = streams[0].codec_context
            if ctx is None:
                raise SourceImportError(str(path), "the video stream uses a codec the bundled FFmpeg cannot decode")
            codec = codec_name(streams[0])  # "av1", not the decoder "libdav1d"
            created = c.metadata.get("creation_time") or streams[0].metadata.get("creation_time")
            duration = c.duration * 1000 if c.duration is not None else None  # AV_TIME_BASE (µs) → ns
    except FileNotFoundError as exc:
        raise SourceImportError(str(path), "video file not found") from exc
    except av.error.FFmpegError as exc:
        raise SourceImportError(str(path), f"expected a video container FFmpeg can open: {exc}") from exc
    utc = None
    if created:
        try:
            utc = datetime_to_ns(dt.datetime.fromisoformat(created))
        except ValueError:
            log.warning("%s: unparsable creation_time %r, ignored", path, created)
    return VideoInfo(codec=codec, creation_utc_ns=utc, suffix=Path(path).suffix.lower() or ".mp4", duration_ns=duration)


def camera_name_for(path: Path, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9_\-]+", "-", Path(path).stem.lower()).strip("-_")[:32] or "cam"
    if not CAMERA_RE.match(base):
        base = ("cam-" + base)[:32]
    name, i = base, 1
    while name in taken:
        suffix = f"-{i}"
        name = base[: 32 - len(suffix)] + suffix
        i += 1
    taken.add(name)
    return name


def copy_into(src: Path, dst: Path) -> None:
    """Byte copy via a temporary file in the destination folder, then rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npy(dst: Path, arr: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=np.int64), allow_pickle=False)
    from fleetcore.landing.drives import atomic_write_bytes

    atomic_write_bytes(dst, buf.getvalue())


@dataclass(frozen=True)
class PlannedVideo:
    src: Path
    camera: str
    rel: str
    codec: str


def plan_videos(videos: Sequence[Path]) -> list[PlannedVideo]:
    """Probe extra container videos (before anything is written), one camera each. A single video is
    camera ``front``; several are named after their file stems (lowercased, [a-z0-9_-], at most 32 chars)."""
    out: list[PlannedVideo] = []
    taken: set[str] = set()
    for v in videos:
        v = Path(v)
        if not v.is_file():
            raise SourceImportError(str(v), "video file not found")
        info = probe_video(v)
        name = "front" if len(videos) == 1 else camera_name_for(v, taken)
        out.append(PlannedVideo(v, name, f"cameras/{name}/000{info.suffix}", info.codec))
    return out


def place_videos(writer: DriveWriter, planned: Sequence[PlannedVideo], *, start_ns: int = 0) -> list[dict[str, Any]]:
    """Copy planned videos into the drive; PTS 0 of each is at ``start_ns`` on the vehicle clock."""
    cams: list[dict[str, Any]] = []
    for pv in planned:
        copy_into(pv.src, writer.path / pv.rel)
        cams.append({"name": pv.camera, "codec": pv.codec, "files": [{"path": pv.rel, "start_ns": start_ns, "frame_times": None}]})
    return cams


def default_drive_id(vehicle_id: str, utc_ns: int, inputs: Sequence[Path] = ()) -> str:
    """``<vehicle>_<UTC start as YYYYmmddTHHMMSSZ>``, plus ``_<6 hex digits>`` of the SHA-1 of the input
    files' contents when ``inputs`` are given (so parts of one drive imported one by one never collide)."""
    stamp = dt.datetime.fromtimestamp(utc_ns // NS_PER_S, tz=dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{vehicle_id.replace('.', '-')}_{stamp}"
    if not inputs:
        return base
    return f"{base}_{inputs_digest(inputs)[:6]}"


def inputs_digest(inputs: Sequence[Path]) -> str:
    """SHA-1 over the contents of the files, in the order given."""
    import hashlib

    h = hashlib.sha1()
    for p in inputs:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def check_ids(vehicle_id: str, drive_id: str, path: str) -> None:
    for what, v in (("vehicle_id", vehicle_id), ("drive_id", drive_id)):
        if not ID_RE.match(v):
            raise SourceImportError(path, f"{what} {v!r} is not a valid id (letters, digits, _ . -)")


def write_drive(
    root: Path,
    vehicle_id: str,
    drive_id: str,
    *,
    source_path: str,
    source: str,
    utc_offset_ns: int,
    telemetry: pa.Table | None,
    place_cameras: Any,
    overwrite: bool = False,
    notes: str | None = None,
) -> DriveRef:
    """Write one landing drive: ``place_cameras(writer) -> cameras list`` copies the camera files in,
    then the telemetry, then ``finish`` (manifest, then the upload-complete marker)."""
    check_ids(vehicle_id, drive_id, source_path)
    if telemetry is not None:  # check everything before the drive folder is created
        if telemetry.num_rows == 0:
            raise SourceImportError(source_path, "no telemetry rows with a speed value remain after decoding")
        try:
            TELEMETRY.validate(TELEMETRY.conform(telemetry, extras=True))
        except SchemaValidationError as exc:
            raise SourceImportError(source_path, f"decoded telemetry is out of the canonical range: {exc}") from exc
    writer = DriveWriter(root, vehicle_id, drive_id, overwrite=overwrite)
    cameras = place_cameras(writer)
    tel_ref = None
    if telemetry is not None:
        writer.write_telemetry(telemetry)
        tel_ref = {"path": "telemetry.parquet", "format": "parquet"}
    manifest = {
        "format_version": 1,
        "vehicle_id": vehicle_id,
        "drive_id": drive_id,
        "utc_offset_ns": int(utc_offset_ns),
        "cameras": cameras,
        "telemetry": tel_ref,
        "source": source,
        "notes": notes,
    }
    writer.finish(manifest)
    log.info("imported %s → %s (%s)", source_path, writer.path, source)
    return DriveRef(str(root), vehicle_id, drive_id, True)
