"""Cheap facts about landing drives for the sensor and the ``landing_drives`` observation.

The drive's UTC date is found without decoding video: the earliest vehicle-clock time among the
manifest's camera ``start_ns`` values (the first ``frame_times`` entry for raw streams, read from the
``.npy`` by memory map) and the telemetry Parquet's ``t_ns`` minimum from its row-group statistics,
plus ``utc_offset_ns``. This is how ``fleetcore.ingest.validate`` dates a drive (its span start), up to the
first frame's PTS offset within a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from fleetcore.errors import DriveError
from fleetcore.landing.drives import DriveRef, drive_date, drive_file, list_drives, read_manifest
from fleetcore.store.fs import is_dir, open_input_file, resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LandedDrive:
    key: str  # "<vehicle>/<drive>"
    vehicle_id: str
    drive_id: str
    date: str | None  # None when the manifest does not give a start time
    problem: str | None = None


def _telemetry_min_t(drive_dir: str, rel: str) -> int | None:
    fs, path = resolve(drive_file(drive_dir, rel))
    meta = pq.read_metadata(path, filesystem=fs)  # the footer only (a ranged read on object stores)
    idx = meta.schema.to_arrow_schema().get_field_index("t_ns")
    if idx < 0:
        return None
    mins = []
    for i in range(meta.num_row_groups):
        st = meta.row_group(i).column(idx).statistics
        if st is None or not st.has_min_max:
            return None
        mins.append(int(st.min))
    return min(mins) if mins else None


def drive_start_ns(drive_dir: str | Path, manifest: dict[str, Any]) -> int | None:
    """The earliest vehicle-clock ns the manifest's cameras and telemetry statistics name (a drive
    folder on a local disk or behind a URI)."""
    d = str(drive_dir)
    starts: list[int] = []
    for cam in manifest["cameras"]:
        for f in cam["files"]:
            if f["start_ns"] is not None:
                starts.append(int(f["start_ns"]))
            elif f["frame_times"] is not None:
                with open_input_file(drive_file(d, f["frame_times"])) as fh:
                    arr = np.load(fh, allow_pickle=False)
                if arr.size:
                    starts.append(int(arr.min()))
    tel = manifest.get("telemetry")
    if tel is not None and tel["format"] == "parquet":
        t = _telemetry_min_t(d, tel["path"])
        if t is not None:
            starts.append(t)
    return min(starts) if starts else None


def landed_drive(ref: DriveRef) -> LandedDrive:
    """Date one complete drive; a bad manifest gives ``date=None`` and the problem (the curate job
    quarantines such drives; the sensor requests nothing for them)."""
    try:
        m = read_manifest(ref.location)
        start = drive_start_ns(ref.location, m)
    except (DriveError, OSError, ValueError) as exc:
        return LandedDrive(ref.key, ref.vehicle_id, ref.drive_id, None, f"{type(exc).__name__}: {exc}")
    if start is None:
        return LandedDrive(ref.key, ref.vehicle_id, ref.drive_id, None, "manifest names no start time")
    return LandedDrive(ref.key, ref.vehicle_id, ref.drive_id, drive_date(m, start))


def scan_landing(root: str | Path) -> tuple[list[DriveRef], list[DriveRef]]:
    """(complete, incomplete) drive folders under the landing root (a local folder or a URI such as
    ``s3://bucket/landing``); empty when the root is missing."""
    if not is_dir(root):
        return [], []
    refs = list_drives(root, include_incomplete=True)
    return [r for r in refs if r.complete], [r for r in refs if not r.complete]


# --------------------------------------------------------------------------------------
# Sensor cursor: the set of drive keys already requested, as short digests
# --------------------------------------------------------------------------------------
CURSOR_VERSION = 1


def key_digest(key: str) -> str:
    """12 hex chars of sha256: collisions are negligible at fleet scale and the cursor stays small."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def read_cursor(cursor: str | None) -> set[str]:
    if not cursor:
        return set()
    doc = json.loads(cursor)
    if not isinstance(doc, dict) or doc.get("v") != CURSOR_VERSION or not isinstance(doc.get("seen"), list):
        raise ValueError(f"landing sensor cursor: expected {{'v': {CURSOR_VERSION}, 'seen': [...]}}, found {cursor[:80]!r}")
    return set(doc["seen"])


def write_cursor(seen: set[str]) -> str:
    return json.dumps({"v": CURSOR_VERSION, "seen": sorted(seen)}, separators=(",", ":"))


def new_drives_by_date(root: str | Path, seen: set[str]) -> tuple[dict[str, list[LandedDrive]], list[LandedDrive]]:
    """Complete drives not in ``seen``, grouped by date; and the undatable ones (bad manifests)."""
    complete, _ = scan_landing(root)
    by_date: dict[str, list[LandedDrive]] = {}
    bad: list[LandedDrive] = []
    for ref in complete:
        if key_digest(ref.key) in seen:
            continue
        ld = landed_drive(ref)
        if ld.date is None:
            bad.append(ld)
        else:
            by_date.setdefault(ld.date, []).append(ld)
    return dict(sorted(by_date.items())), bad
