"""Import a vendor CSV log described by a small YAML profile (``fleet import csv LOG --profile P``).

The profile names the time column and how to read it, renames columns onto canonical (or extra
``x_*``) columns and converts their units. Video is optional: without it the drive is telemetry-only
(``"cameras": []``). Speed missing in a row is computed from successive positions (haversine / dt)
where there are positions; a log without speed or positions (e.g. steering only) lands with a null
speed (unknown: speed triggers and labels see none), or with ``assume_speed_mps`` when the profile sets it.

Profile (YAML)::

    time:
      column: timestamp      # required
      unit: ms               # s | ms | us | ns (numbers) or iso (ISO 8601 text); default s
      format: null           # strptime format for text times (instead of ISO 8601)
      timezone: UTC          # IANA zone of text times without an offset; default UTC
      epoch_offset_s: 0      # added to numeric times (e.g. a logger's epoch that is not 1970)
      start_utc: null        # times are relative (since the log start): UTC of time 0
    delimiter: ","
    columns:                 # CSV column -> canonical / x_* column (+ unit, scale, offset)
      Speed: {to: speed_mps, unit: km/h}
      SteeringWheel: {to: steering_angle_rad, unit: deg}
      Lat: lat_deg
      RPM: x_engine_rpm
    assume_speed_mps: null

Clock: vehicle time 0 is the first row's UTC time (``utc_offset_ns``); videos start at vehicle time 0.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fleetcore.configfile import read_config_file
from fleetcore.errors import ConfigError, SourceImportError
from fleetcore.ingest.importers.common import (
    SIGNALS,
    DriveRef,
    datetime_to_ns,
    default_drive_id,
    place_videos,
    plan_videos,
    telemetry_table,
    write_drive,
)
from fleetcore.ingest.importers.mapping import unit_factor
from schemas import TELEMETRY

log = logging.getLogger(__name__)

TIME_UNITS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
#: Numeric UTC times before this (2000-01-01) are taken as relative and need start_utc.
MIN_UNIX_NS = 946_684_800 * 10**9
_PROFILE_KEYS = {"time", "delimiter", "columns", "assume_speed_mps"}
_TIME_KEYS = {"column", "unit", "format", "timezone", "epoch_offset_s", "start_utc"}
_COLUMN_KEYS = {"to", "unit", "scale", "offset"}


class Profile:
    def __init__(self, raw: Any, path: str) -> None:
        self.path = path
        if not isinstance(raw, dict):
            raise ConfigError(path, "expected a YAML mapping with time: and columns:")
        unknown = set(raw) - _PROFILE_KEYS
        if unknown:
            raise ConfigError(path, f"unknown keys {sorted(unknown)}; expected {sorted(_PROFILE_KEYS)}")
        t = raw.get("time")
        if isinstance(t, str):
            t = {"column": t}
        if not isinstance(t, dict) or not isinstance(t.get("column"), str):
            raise ConfigError(path, "expected time: {column: <name>, unit: s|ms|us|ns|iso, ...}", field="time")
        unknown = set(t) - _TIME_KEYS
        if unknown:
            raise ConfigError(path, f"unknown keys {sorted(unknown)}; expected {sorted(_TIME_KEYS)}", field="time")
        self.time_column: str = t["column"]
        self.time_format: str | None = t.get("format")
        self.time_unit: str = str(t.get("unit", "iso" if self.time_format else "s"))
        if self.time_unit not in (*TIME_UNITS, "iso"):
            raise ConfigError(path, f"expected one of {[*TIME_UNITS, 'iso']}, found {self.time_unit!r}", field="time.unit")
        self.tz = _zone(t.get("timezone", "UTC"), path)
        off = t.get("epoch_offset_s", 0)
        if isinstance(off, bool) or not isinstance(off, (int, float)) or not math.isfinite(off):
            raise ConfigError(path, f"expected a number of seconds, found {off!r}", field="time.epoch_offset_s")
        self.epoch_offset_ns = round(off * 1e9)
        su = t.get("start_utc")
        self.start_utc_ns: int | None = None
        if su is not None:
            if isinstance(su, str):
                try:
                    su = dt.datetime.fromisoformat(su.replace("Z", "+00:00"))
                except ValueError as exc:
                    raise ConfigError(path, f"expected an ISO 8601 time, found {su!r}", field="time.start_utc") from exc
            if not isinstance(su, dt.datetime):
                raise ConfigError(path, f"expected an ISO 8601 time, found {su!r}", field="time.start_utc")
            self.start_utc_ns = datetime_to_ns(su)
        self.delimiter = raw.get("delimiter", ",")
        if not isinstance(self.delimiter, str) or len(self.delimiter) != 1:
            raise ConfigError(path, f"expected one character, found {self.delimiter!r}", field="delimiter")
        cols = raw.get("columns") or {}
        if not isinstance(cols, dict) or not cols:
            raise ConfigError(path, "expected columns: {<csv column>: <canonical column> or {to:, unit:, scale:, offset:}}", field="columns")
        self.columns: dict[str, tuple[str, float, float]] = {}  # csv column -> (target, factor, offset)
        seen: set[str] = set()
        for name, spec in cols.items():
            key = f"columns.{name}"
            if isinstance(spec, str):
                spec = {"to": spec}
            if not isinstance(spec, dict) or not isinstance(spec.get("to"), str):
                raise ConfigError(path, "expected a column name or {to: <column>, unit: ..., scale: ..., offset: ...}", field=key)
            unknown = set(spec) - _COLUMN_KEYS
            if unknown:
                raise ConfigError(path, f"unknown keys {sorted(unknown)}; expected {sorted(_COLUMN_KEYS)}", field=key)
            to = spec["to"]
            if to not in SIGNALS and not TELEMETRY.is_extra(to):
                raise ConfigError(path, f"{to!r} is not a canonical telemetry column ({SIGNALS}) or an extra x_<name>", field=key)
            if to in seen:
                raise ConfigError(path, f"{to} is given by two CSV columns", field=key)
            seen.add(to)
            scale, offset = spec.get("scale", 1.0), spec.get("offset", 0.0)
            for what, v in (("scale", scale), ("offset", offset)):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ConfigError(path, f"{what} must be a finite number, found {v!r}", field=key)
            unit = spec.get("unit")
            factor = unit_factor(to, str(unit), path=path) if unit is not None else 1.0
            # canonical = (raw * scale + offset) * factor
            self.columns[str(name)] = (to, float(scale) * factor, float(offset) * factor)
        a = raw.get("assume_speed_mps")
        if a is not None and (isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 120):
            raise ConfigError(path, f"expected a speed in m/s (0..120), found {a!r}", field="assume_speed_mps")
        self.assume_speed_mps: float | None = None if a is None else float(a)


def _zone(name: Any, path: str) -> dt.tzinfo:
    if name in (None, "UTC", "utc", "Z"):
        return dt.UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(path, f"unknown time zone {name!r} (expected an IANA name like Europe/Berlin)", field="time.timezone") from exc


def load_profile(path: Path) -> Profile:
    return Profile(read_config_file(path, what="CSV profile"), str(path))


def _num(v: str) -> float:
    v = v.strip()
    if v == "" or v.lower() in ("nan", "null", "none", "na"):
        return math.nan
    if v.lower() in ("true", "false"):
        return 1.0 if v.lower() == "true" else 0.0
    return float(v)


def _time_ns(v: str, p: Profile) -> int:
    v = v.strip()
    if p.time_unit == "iso":
        t = dt.datetime.strptime(v, p.time_format) if p.time_format else dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=p.tz)
        return datetime_to_ns(t) + p.epoch_offset_ns
    return round(float(v) * TIME_UNITS[p.time_unit]) + p.epoch_offset_ns


def read_profiled_csv(path: Path, p: Profile) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """UTC ns per row and the mapped columns (canonical units, NaN = missing)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter=p.delimiter)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "") for k, v in r.items()} for r in reader]
    except FileNotFoundError as exc:
        raise SourceImportError(str(path), "CSV file not found") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SourceImportError(str(path), f"expected a UTF-8 CSV file: {exc}") from exc
    if p.time_column not in header:
        raise SourceImportError(str(path), f"no time column {p.time_column!r} (profile {p.path}); header is {header}")
    missing = [c for c in p.columns if c not in header]
    if missing:
        raise SourceImportError(str(path), f"columns {missing} of the profile {p.path} are not in the header {header}")
    ignored = [h for h in header if h != p.time_column and h not in p.columns]
    if ignored:
        log.warning("%s: ignoring CSV columns not in the profile: %s", path, ignored)
    if not rows:
        raise SourceImportError(str(path), "the CSV has no data rows")
    n = len(rows)
    t = np.zeros(n, dtype=np.int64)
    cols = {to: np.full(n, np.nan) for to, _, _ in p.columns.values()}
    for i, r in enumerate(rows):
        try:
            t[i] = _time_ns(r[p.time_column], p)
            for name, (to, factor, offset) in p.columns.items():
                cols[to][i] = _num(r.get(name, "")) * factor + offset
        except (ValueError, KeyError, OverflowError) as exc:
            raise SourceImportError(str(path), f"row {i + 2}: expected numbers and a {p.time_unit} time in {p.time_column!r}: {exc}") from exc
    if p.start_utc_ns is not None:
        t = t + p.start_utc_ns
    elif p.time_unit != "iso" and int(t.min()) < MIN_UNIX_NS:
        raise SourceImportError(str(path), f"times in {p.time_column!r} are not UNIX time (before 2000); set time.start_utc in the profile {p.path}")
    return t, cols


def import_csv(
    csv_path: Path,
    profile: Path | Profile,
    root: Path,
    *,
    vehicle_id: str,
    drive_id: str | None = None,
    video: Sequence[Path] = (),
    overwrite: bool = False,
) -> DriveRef:
    """Land a vendor CSV log (telemetry-only, or with videos starting at its first row) as one drive."""
    from fleetcore.ingest.importers.dashcam import _fixes_table

    csv_path = Path(csv_path)
    p = profile if isinstance(profile, Profile) else load_profile(Path(profile))
    if not csv_path.is_file():
        raise SourceImportError(str(csv_path), "CSV file not found")
    t, cols = read_profiled_csv(csv_path, p)
    nan = np.full(t.shape, np.nan)
    speed = cols.get("speed_mps", nan)
    has_pos = "lat_deg" in cols and "lon_deg" in cols
    offset = int(t.min())
    notes = f"csv {csv_path.name} (profile {Path(p.path).name})"
    if not np.isfinite(speed).any() and not has_pos:
        if p.assume_speed_mps is None:  # e.g. a steering-only log: its speed stays unknown (null)
            log.warning("%s: no speed and no positions: speed is null (speed triggers and labels see none); "
                        "set assume_speed_mps in the profile %s to assume one", csv_path, p.path)
            table = telemetry_table(t - offset, {**cols, "speed_mps": nan}, speed_required=False)
            notes += "; no speed in the log"
        else:
            log.warning("%s: no speed in the log; assuming %.3f m/s (profile %s)", csv_path, p.assume_speed_mps, p.path)
            table = telemetry_table(t - offset, {**cols, "speed_mps": np.full(t.shape, p.assume_speed_mps)})
            notes += f"; speed assumed {p.assume_speed_mps:g} m/s"
    else:
        extra = {k: v for k, v in cols.items() if k not in ("speed_mps", "lat_deg", "lon_deg", "heading_rad")}
        table = _fixes_table(csv_path, t, cols.get("lat_deg", nan), cols.get("lon_deg", nan), speed, cols.get("heading_rad", nan), offset, extra)
    drive_id = drive_id or default_drive_id(vehicle_id, offset, [csv_path])
    planned = plan_videos(video)
    return write_drive(
        Path(root), vehicle_id, drive_id, source_path=str(csv_path), source="csv", utc_offset_ns=offset,
        telemetry=table, place_cameras=lambda w: place_videos(w, planned, start_ns=0), overwrite=overwrite, notes=notes,
    )
