"""Import an ASAM MDF4 bus-logging file (e.g. a CSS Electronics CANedge ``.MF4``) with a DBC.

The raw CAN frames are decoded with asammdf (``MDF.extract_bus_logging``); the decoded channels
are mapped onto canonical columns by a mapping file (same YAML form as for candump) or, without
one, by :data:`DEFAULT_MAPPING` for the CANedge GNSS/IMU DBC (``gnss.dbc``). Signals are resampled
onto a uniform grid (default 50 Hz) spanning the speed samples.

``car`` picks a built-in DBC + mapping (:mod:`fleetcore.ingest.importers.cars`); mapping columns may be
expressions over several signals and extra ``x_*`` columns (:mod:`fleetcore.ingest.importers.mapping`).

Clock: the vehicle clock is the MDF's relative time (0 = the file's start time); ``utc_offset_ns``
is the file's start time (``MDF.start_time``, UTC). Extra videos are taken to start at that time.
Several MF4 files are parts of one drive: the clock starts at the earliest file's start time, the
signals are merged in time order, gaps are reported and overlaps refused as for candump.

The CANedge IMU frame is x forward, y left, z up (checked against the GNSS heading on the shared
sample: AngularRateZ follows the counter-clockwise heading change, AccelerationY the centripetal
acceleration to the left), so no sign flips are needed; deg and deg/s become rad and rad/s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fleetcore.errors import SourceImportError
from fleetcore.ingest.importers.candump import CanSetup, Part, can_setup, map_columns, order_parts, signals_to_table
from fleetcore.ingest.importers.common import (
    DriveRef,
    Series,
    datetime_to_ns,
    default_drive_id,
    place_videos,
    plan_videos,
    write_drive,
)

log = logging.getLogger(__name__)

DEG = math.pi / 180.0
#: Default mapping for the CSS Electronics CANedge GNSS/IMU DBC (gnss.dbc).
DEFAULT_MAPPING: dict[str, Any] = {
    "speed_mps": {"signal": "gnss_speed.Speed"},
    "lat_deg": {"signal": "gnss_pos.Latitude"},
    "lon_deg": {"signal": "gnss_pos.Longitude"},
    "heading_rad": {"signal": "gnss_attitude.Heading", "scale": DEG},
    "accel_lon_mps2": {"signal": "gnss_imu.AccelerationX"},
    "accel_lat_mps2": {"signal": "gnss_imu.AccelerationY"},
    "yaw_rate_radps": {"signal": "gnss_imu.AngularRateZ", "scale": DEG},
}


def _channel_series(mdf: Any, want: str, buses: set[str] | None = None) -> Series:
    """All decoded channels named ``<message>.<signal>`` (any bus), merged in time order (relative s → ns).
    The bus names (``CAN1`` ...) of the channels found are added to ``buses``."""
    ts: list[np.ndarray] = []
    vs: list[np.ndarray] = []
    for gi, group in enumerate(mdf.groups):
        for ci, ch in enumerate(group.channels):
            names = set(getattr(ch, "display_names", {}) or {})
            if want not in names and not any(n.endswith("." + want) for n in names):
                continue
            if buses is not None:
                buses.update(n[: -len(want) - 1] for n in names if n.endswith("." + want))
            sig = mdf.get(group=gi, index=ci)
            samples = np.asarray(sig.samples)
            if samples.dtype.kind not in "biuf":  # value-to-text conversion: take the raw numbers
                sig = mdf.get(group=gi, index=ci, raw=True)
                samples = np.asarray(sig.samples)
            if samples.dtype.kind not in "biuf" or samples.ndim != 1:
                continue
            ts.append(np.asarray(sig.timestamps, dtype=np.float64))
            vs.append(samples.astype(np.float64))
    if not ts:
        return Series.make(np.zeros(0, np.int64), np.zeros(0))
    t = np.concatenate(ts)
    return Series.make((np.rint(t * 1e9)).astype(np.int64), np.concatenate(vs))


def _decode_part(mf4: Path, dbc_file: Path, setup: CanSetup, buses: set[str]) -> tuple[int, dict[str, Series]]:
    """(UTC start ns, "Msg.Sig" → Series on the file's relative clock) of one MF4 file."""
    from asammdf import MDF
    from asammdf.blocks.utils import MdfException

    if not mf4.is_file():
        raise SourceImportError(str(mf4), "MDF file not found")
    try:
        src = MDF(str(mf4))
    except (MdfException, OSError, ValueError, KeyError, IndexError) as exc:
        raise SourceImportError(str(mf4), f"expected an ASAM MDF (MF4) file: {exc}") from exc
    try:
        start = src.start_time
        decoded = src.extract_bus_logging({"CAN": [(str(dbc_file), 0)]})
        try:
            raw = {f"{m}.{s}": _channel_series(decoded, f"{m}.{s}", buses) for m, sigs in setup.need.items() for s in sorted(sigs)}
        finally:
            decoded.close()
    except (MdfException, ValueError, KeyError, IndexError) as exc:
        raise SourceImportError(str(mf4), f"cannot decode the CAN bus logging with {setup.dbc_name}: {exc}") from exc
    finally:
        src.close()
    return datetime_to_ns(start), {k: v for k, v in raw.items() if len(v)}


def import_mdf(
    mf4: Path | Sequence[Path],
    dbc: Path | None,
    root: Path,
    *,
    vehicle_id: str,
    drive_id: str | None = None,
    mapping: Path | None = None,
    car: str | None = None,
    video: Sequence[Path] = (),
    rate_hz: float = 50.0,
    max_gap_s: float = 3600.0,
    overwrite: bool = False,
) -> DriveRef:
    """Land one MF4 bus log, or several MF4 files that are parts of one drive (plus optional videos,
    one camera each), as one drive."""
    files = [Path(mf4)] if isinstance(mf4, (str, Path)) else [Path(p) for p in mf4]
    if not files:
        raise SourceImportError("<mdf>", "no MF4 files given")
    for p in files:
        if not p.is_file():
            raise SourceImportError(str(p), "MDF file not found")
    default = None if car else DEFAULT_MAPPING
    setup = can_setup(dbc, mapping, car, default_mapping=default, default_name="<default CANedge GNSS/IMU mapping>")
    decoded: dict[Path, tuple[int, dict[str, Series]]] = {}
    buses: set[str] = set()
    if dbc is not None:
        for p in files:
            decoded[p] = _decode_part(p, Path(dbc), setup, buses)
    else:
        from fleetcore.ingest.importers.cars import car_dbc_file

        with car_dbc_file(setup.car) as tmp_dbc:
            for p in files:
                decoded[p] = _decode_part(p, tmp_dbc, setup, buses)
    spans = []
    for p, (start, raw) in decoded.items():
        if not raw:
            sp = next(m for m in setup.mapping if m.column == "speed_mps")
            raise SourceImportError(str(p), f"no CAN frames decode to any mapped signal (speed: {', '.join(sp.signals)}) with {setup.dbc_name}")
        spans.append(Part(p, start + min(int(s.t_ns[0]) for s in raw.values()), start + max(int(s.t_ns[-1]) for s in raw.values())))
    parts, gap_notes = order_parts(spans, max_gap_s=max_gap_s, what="MF4")
    offset = min(start for start, _ in decoded.values())
    merged: dict[str, list[Series]] = {}
    for p in parts:
        start, raw = decoded[p.path]
        for k, s in raw.items():
            merged.setdefault(k, []).append(Series(s.t_ns + (start - offset), s.values))
    signals = {k: Series.make(np.concatenate([s.t_ns for s in v]), np.concatenate([s.values for s in v])) for k, v in merged.items()}
    source = str(parts[0].path) if len(parts) == 1 else ", ".join(str(p.path) for p in parts)
    cols = map_columns(setup, signals, source=source)
    table = signals_to_table(cols, rate_hz=rate_hz, source=source)
    drive_id = drive_id or default_drive_id(vehicle_id, offset, [p.path for p in parts])
    planned = plan_videos(video)
    notes = f"mdf4: {len(parts)} file(s) ({', '.join(p.path.name for p in parts)}); buses: {', '.join(sorted(buses)) or '-'}; " \
            f"{setup.label}" + "".join(f"; {n}" for n in gap_notes)
    return write_drive(
        Path(root), vehicle_id, drive_id, source_path=source, source="mdf4", utc_offset_ns=offset,
        telemetry=table, place_cameras=lambda w: place_videos(w, planned, start_ns=0), overwrite=overwrite, notes=notes,
    )
