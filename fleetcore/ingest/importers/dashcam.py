"""Import a consumer dashcam recording: one video file plus optional GPX / NMEA / CSV telemetry.

The vehicle clock starts at the video's PTS 0 (``start_ns = 0``); ``utc_offset_ns`` is the UTC
time of that instant, taken from ``start_utc``, else the container's ``creation_time``, else the
file's modification time. Telemetry times (UTC) are mapped onto the vehicle clock with the same
offset. See docs/importers.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from fleetcore.errors import SourceImportError
from fleetcore.ingest.importers.common import (
    DriveRef,
    copy_into,
    datetime_to_ns,
    default_drive_id,
    probe_video,
    speed_heading_from_fixes,
    telemetry_table,
    write_drive,
)
from fleetcore.landing.drives import CAMERA_RE
from schemas import TELEMETRY

log = logging.getLogger(__name__)

KNOT_MPS = 1852.0 / 3600.0
TelemetryFormat = Literal["auto", "gpx", "nmea", "csv"]


def import_dashcam(
    video: Path,
    root: Path,
    *,
    vehicle_id: str,
    drive_id: str | None = None,
    camera: str = "front",
    telemetry: Path | None = None,
    telemetry_format: TelemetryFormat = "auto",
    start_utc: dt.datetime | None = None,
    overwrite: bool = False,
) -> DriveRef:
    """Land ``video`` as ``cameras/<camera>/000<ext>`` with optional telemetry; returns the drive."""
    video = Path(video)
    if not video.is_file():
        raise SourceImportError(str(video), "video file not found")
    if not CAMERA_RE.match(camera):
        raise SourceImportError(str(video), f"camera name {camera!r} is not valid (lowercase letters, digits, _ -)")
    info = probe_video(video)
    if start_utc is not None:
        offset = datetime_to_ns(start_utc)
    elif info.creation_utc_ns is not None:
        offset = info.creation_utc_ns
    else:
        offset = video.stat().st_mtime_ns
        log.warning("%s: no creation_time in the container; using the file mtime as the start time", video)
    table = None
    if telemetry is not None:
        table = read_telemetry(Path(telemetry), utc_offset_ns=offset, fmt=telemetry_format)
        t = table.column("t_ns")
        t_first, t_last = t[0].as_py(), t[-1].as_py()
        if info.duration_ns is not None and (t_last < 0 or t_first > info.duration_ns):
            log.warning(
                "%s: telemetry covers %.1f..%.1f s on the video clock but the video is 0..%.1f s: check start_utc",
                telemetry, t_first / 1e9, t_last / 1e9, info.duration_ns / 1e9,
            )
    drive_id = drive_id or default_drive_id(vehicle_id, offset)
    rel = f"cameras/{camera}/000{info.suffix}"

    def place(writer: Any) -> list[dict[str, Any]]:
        copy_into(video, writer.path / rel)
        return [{"name": camera, "codec": info.codec, "files": [{"path": rel, "start_ns": 0, "frame_times": None}]}]

    return write_drive(
        Path(root), vehicle_id, drive_id, source_path=str(video), source="dashcam",
        utc_offset_ns=offset, telemetry=table, place_cameras=place, overwrite=overwrite,
    )


# --------------------------------------------------------------------------------------
# Telemetry readers: each returns a canonical table on the vehicle clock
# --------------------------------------------------------------------------------------
def read_telemetry(path: Path, *, utc_offset_ns: int, fmt: TelemetryFormat = "auto") -> pa.Table:
    if not path.is_file():
        raise SourceImportError(str(path), "telemetry file not found")
    if fmt == "auto":
        fmt = sniff_format(path)
    if fmt == "gpx":
        return read_gpx(path, utc_offset_ns=utc_offset_ns)
    if fmt == "nmea":
        return read_nmea(path, utc_offset_ns=utc_offset_ns)
    if fmt == "csv":
        return read_csv(path, utc_offset_ns=utc_offset_ns)
    raise SourceImportError(str(path), f"telemetry format {fmt!r}: expected auto, gpx, nmea or csv")


def sniff_format(path: Path) -> Literal["gpx", "nmea", "csv"]:
    ext = path.suffix.lower()
    if ext == ".gpx":
        return "gpx"
    if ext in (".nmea", ".nma", ".log"):
        return "nmea"
    if ext == ".csv":
        return "csv"
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"<") and b"<gpx" in head:
        return "gpx"
    if head.startswith(b"$") or b"\n$G" in head:
        return "nmea"
    if b"," in head:
        return "csv"
    raise SourceImportError(str(path), "cannot tell the telemetry format; expected .gpx, .nmea or .csv (or pass telemetry_format)")


def _fixes_table(path: Path, utc_ns: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                 speed: np.ndarray, heading: np.ndarray, offset: int, extra: dict[str, np.ndarray] | None = None) -> pa.Table:
    """Fill missing speed / heading from successive fixes and build the canonical table."""
    if utc_ns.size == 0:
        raise SourceImportError(str(path), "no position fixes with a time found")
    order = np.argsort(utc_ns, kind="stable")
    utc_ns, lat, lon, speed, heading = (a[order] for a in (utc_ns, lat, lon, speed, heading))
    extra = {k: v[order] for k, v in (extra or {}).items()}
    keep = np.concatenate(([True], np.diff(utc_ns) > 0))
    utc_ns, lat, lon, speed, heading = (a[keep] for a in (utc_ns, lat, lon, speed, heading))
    extra = {k: v[keep] for k, v in extra.items()}
    has_pos = np.isfinite(lat) & np.isfinite(lon)
    if np.any(has_pos) and (np.any(~np.isfinite(speed)) or np.any(~np.isfinite(heading))):
        idx = np.flatnonzero(has_pos)
        sp, hd = speed_heading_from_fixes(utc_ns[idx], lat[idx], lon[idx])
        speed = speed.copy()
        heading = heading.copy()
        fill_s = ~np.isfinite(speed[idx])
        speed[idx[fill_s]] = sp[fill_s]
        fill_h = ~np.isfinite(heading[idx])
        heading[idx[fill_h]] = hd[fill_h]
    cols = {"speed_mps": speed, "lat_deg": lat, "lon_deg": lon, "heading_rad": heading, **extra}
    table = telemetry_table(utc_ns - offset, cols)
    if table.num_rows == 0:
        raise SourceImportError(str(path), "no fix has a speed (expected a speed field or at least two timed positions)")
    return table


def read_gpx(path: Path, *, utc_offset_ns: int) -> pa.Table:
    """GPX track points (gpxpy): time, lat, lon; speed from <speed> (GPX 1.0 or an extension) when present."""
    import gpxpy
    import gpxpy.gpx

    try:
        gpx = gpxpy.parse(path.read_text(encoding="utf-8"))
    except (gpxpy.gpx.GPXException, UnicodeDecodeError, ValueError) as exc:
        raise SourceImportError(str(path), f"expected a GPX file: {exc}") from exc
    rows = []
    for track in gpx.tracks:
        for seg in track.segments:
            for p in seg.points:
                if p.time is None:
                    continue
                rows.append((datetime_to_ns(p.time), p.latitude, p.longitude, _gpx_speed(p), _gpx_course(p)))
    if not rows:
        for p in gpx.waypoints:  # some loggers write waypoints only
            if p.time is not None:
                rows.append((datetime_to_ns(p.time), p.latitude, p.longitude, _gpx_speed(p), _gpx_course(p)))
    if not rows:
        raise SourceImportError(str(path), "expected GPX track points with <time>; found none")
    a = np.array(rows, dtype=object)
    return _fixes_table(
        path, a[:, 0].astype(np.int64), a[:, 1].astype(float), a[:, 2].astype(float),
        a[:, 3].astype(float), a[:, 4].astype(float), utc_offset_ns,
    )


def _ext_value(p: Any, name: str) -> float:
    stack = list(getattr(p, "extensions", None) or [])
    while stack:
        el = stack.pop(0)
        tag = str(el.tag).rsplit("}", 1)[-1].lower()
        if tag == name and el.text and el.text.strip():
            try:
                return float(el.text)
            except ValueError:
                return math.nan
        stack.extend(list(el))
    return math.nan


def _gpx_speed(p: Any) -> float:
    v = getattr(p, "speed", None)
    if v is not None:
        return float(v)
    return _ext_value(p, "speed")


def _gpx_course(p: Any) -> float:
    v = getattr(p, "course", None)
    if v is None:
        v = _ext_value(p, "course")
    return math.radians(float(v)) if v is not None and math.isfinite(float(v)) else math.nan


def read_nmea(path: Path, *, utc_offset_ns: int) -> pa.Table:
    """NMEA 0183 (pynmea2): RMC (date, time, position, speed over ground in knots, course) and GGA
    (time, position). GGA has no date: it takes the date of the preceding RMC (rolling over at
    midnight), else of the first RMC, else the UTC date of the video start."""
    import pynmea2

    # (date or None, time, values) in file order
    entries: list[tuple[dt.date | None, dt.time, dict[str, float]]] = []
    bad = 0
    with open(path, encoding="ascii", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("$"):
                continue
            try:
                msg = pynmea2.parse(line)
                kind = getattr(msg, "sentence_type", "")
                if kind not in ("RMC", "GGA") or msg.timestamp is None:
                    continue
                if kind == "RMC" and getattr(msg, "status", "A") != "A":
                    continue
                if kind == "GGA" and not int(msg.gps_qual or 0):
                    continue
                vals: dict[str, float] = {}
                if msg.lat and msg.lon:
                    vals["lat"], vals["lon"] = float(msg.latitude), float(msg.longitude)
                date = None
                if kind == "RMC":
                    date = msg.datestamp
                    if msg.spd_over_grnd is not None:
                        vals["speed"] = float(msg.spd_over_grnd) * KNOT_MPS
                    if msg.true_course is not None:
                        vals["course"] = math.radians(float(msg.true_course))
            except (pynmea2.ParseError, ValueError, TypeError, AttributeError) as exc:
                bad += 1
                log.debug("%s:%d: skipped unparsable sentence: %s", path, lineno, exc)
                continue
            entries.append((date, msg.timestamp, vals))
    if bad:
        log.warning("%s: skipped %d unparsable NMEA sentences", path, bad)
    if not entries:
        raise SourceImportError(str(path), "expected NMEA RMC or GGA sentences with a valid fix; found none")
    first_date = next((d for d, _, _ in entries if d is not None), None)
    cur = first_date or dt.datetime.fromtimestamp(utc_offset_ns // 10**9, tz=dt.UTC).date()
    prev: dt.time | None = None
    fixes: dict[int, dict[str, float]] = {}
    for date, ts, vals in entries:
        if date is not None:
            cur = date
        elif prev is not None and _seconds(ts) < _seconds(prev) - 43200:
            cur = cur + dt.timedelta(days=1)  # past midnight without an RMC yet
        prev = ts
        utc = dt.datetime.combine(cur, ts.replace(tzinfo=None), tzinfo=ts.tzinfo or dt.UTC)
        fixes.setdefault(datetime_to_ns(utc), {}).update(vals)
    keys = sorted(fixes)

    def col(k: str) -> np.ndarray:
        return np.array([fixes[t].get(k, math.nan) for t in keys], dtype=float)

    return _fixes_table(
        path, np.array(keys, dtype=np.int64), col("lat"), col("lon"), col("speed"), col("course"), utc_offset_ns
    )


def _seconds(t: dt.time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


# CSV: simple-form column → (canonical column, factor)
CSV_ALIASES: dict[str, tuple[str, float]] = {
    "speed_kmh": ("speed_mps", 1 / 3.6),
    "speed_mph": ("speed_mps", 0.44704),
    "speed_knots": ("speed_mps", KNOT_MPS),
    "lat": ("lat_deg", 1.0),
    "latitude": ("lat_deg", 1.0),
    "lon": ("lon_deg", 1.0),
    "lng": ("lon_deg", 1.0),
    "longitude": ("lon_deg", 1.0),
    "heading_deg": ("heading_rad", math.pi / 180),
    "course_deg": ("heading_rad", math.pi / 180),
    "steering_angle_deg": ("steering_angle_rad", math.pi / 180),
    "yaw_rate_degps": ("yaw_rate_radps", math.pi / 180),
    "shadow_steering_angle_deg": ("shadow_steering_angle_rad", math.pi / 180),
}
TIME_COLUMNS = ("t_ns", "t_s", "time")


def _parse_time(value: str) -> int:
    """ISO 8601 (UTC unless it carries an offset) or UNIX epoch seconds → UTC ns."""
    v = value.strip()
    try:
        return round(float(v) * 1e6) * 1000
    except ValueError:
        pass
    t = dt.datetime.fromisoformat(v)
    return datetime_to_ns(t)


def _float(v: str) -> float:
    v = v.strip()
    if v == "" or v.lower() in ("nan", "null", "none", "na"):
        return math.nan
    return float(v)


def read_csv(path: Path, *, utc_offset_ns: int) -> pa.Table:
    """CSV telemetry: one time column (``t_ns`` vehicle-clock ns, ``t_s`` seconds since video start,
    or ``time`` ISO 8601 UTC / UNIX seconds) plus canonical columns and/or the simple-form aliases."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "") for k, v in r.items()} for r in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SourceImportError(str(path), f"expected a UTF-8 CSV file: {exc}") from exc
    tcols = [c for c in TIME_COLUMNS if c in header]
    if len(tcols) != 1:
        raise SourceImportError(str(path), f"expected exactly one time column of {list(TIME_COLUMNS)}; header is {header}")
    tcol = tcols[0]
    known = set(TELEMETRY.column_names) | set(CSV_ALIASES) | {tcol}
    unknown = [h for h in header if h not in known]
    if unknown:
        log.warning("%s: ignoring unknown CSV columns %s", path, unknown)
    targets: dict[str, tuple[str, float]] = {}
    for h in header:
        if h == tcol or h in unknown or h == "t_ns":
            continue
        target = CSV_ALIASES.get(h, (h, 1.0))
        if any(t[0] == target[0] for t in targets.values()):
            raise SourceImportError(str(path), f"column {h!r} gives {target[0]} a second time")
        targets[h] = target
    n = len(rows)
    t = np.zeros(n, dtype=np.int64)
    cols = {canon: np.full(n, np.nan) for canon, _ in targets.values()}
    for i, r in enumerate(rows, start=0):
        try:
            if tcol == "t_ns":
                t[i] = int(r[tcol])
            elif tcol == "t_s":
                t[i] = round(float(r[tcol]) * 1e6) * 1000 + utc_offset_ns
            else:
                t[i] = _parse_time(r[tcol])
            for h, (canon, factor) in targets.items():
                raw = r.get(h, "")
                if canon == "driver_assist_engaged" and raw.strip().lower() in ("true", "false"):
                    cols[canon][i] = 1.0 if raw.strip().lower() == "true" else 0.0
                else:
                    cols[canon][i] = _float(raw) * factor
        except (ValueError, KeyError) as exc:
            raise SourceImportError(str(path), f"row {i + 2}: expected numbers (and an ISO or numeric time): {exc}") from exc
    if n == 0:
        raise SourceImportError(str(path), "the CSV has no data rows")
    if tcol == "t_ns":
        t = t + utc_offset_ns  # back to "UTC" so that _fixes_table can subtract the offset again
    nan = np.full(n, np.nan)
    extra = {k: v for k, v in cols.items() if k not in ("speed_mps", "lat_deg", "lon_deg", "heading_rad")}
    return _fixes_table(
        path, t, cols.get("lat_deg", nan), cols.get("lon_deg", nan), cols.get("speed_mps", nan),
        cols.get("heading_rad", nan), utc_offset_ns, extra,
    )
