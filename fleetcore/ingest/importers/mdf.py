"""Import an ASAM MDF4 bus-logging file (e.g. a CSS Electronics CANedge ``.MF4``) with a DBC.

The raw CAN frames are decoded with asammdf (``MDF.extract_bus_logging``); the decoded channels
are mapped onto canonical columns by a mapping file (same YAML form as for candump) or, without
one, by :data:`DEFAULT_MAPPING` for the CANedge GNSS/IMU DBC (``gnss.dbc``). Signals are resampled
onto a uniform grid (default 50 Hz) spanning the speed samples.

Clock: the vehicle clock is the MDF's relative time (0 = the file's start time); ``utc_offset_ns``
is the file's start time (``MDF.start_time``, UTC). Extra videos are taken to start at that time.

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
from fleetcore.ingest.importers.candump import signals_to_table
from fleetcore.ingest.importers.common import (
    DriveRef,
    Series,
    SignalMap,
    check_mapping_against_dbc,
    datetime_to_ns,
    default_drive_id,
    load_dbc,
    load_mapping,
    parse_mapping,
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


def _channel_series(mdf: Any, sm: SignalMap) -> Series:
    """All decoded channels named ``<message>.<signal>`` (any bus), merged in time order."""
    want = f"{sm.message}.{sm.signal}"
    ts: list[np.ndarray] = []
    vs: list[np.ndarray] = []
    for gi, group in enumerate(mdf.groups):
        for ci, ch in enumerate(group.channels):
            names = set(getattr(ch, "display_names", {}) or {})
            if want not in names and not any(n.endswith("." + want) for n in names):
                continue
            sig = mdf.get(group=gi, index=ci)
            samples = np.asarray(sig.samples)
            if samples.dtype.kind not in "biuf":  # value-to-text conversion: take the raw numbers
                sig = mdf.get(group=gi, index=ci, raw=True)
                samples = np.asarray(sig.samples)
            if samples.dtype.kind not in "biuf" or samples.ndim != 1:
                continue
            ts.append(np.asarray(sig.timestamps, dtype=np.float64))
            vs.append(samples.astype(np.float64) * sm.scale + sm.offset)
    if not ts:
        return Series.make(np.zeros(0, np.int64), np.zeros(0))
    t = np.concatenate(ts)
    return Series.make((np.rint(t * 1e9)).astype(np.int64), np.concatenate(vs))


def import_mdf(
    mf4: Path,
    dbc: Path,
    root: Path,
    *,
    vehicle_id: str,
    drive_id: str | None = None,
    mapping: Path | None = None,
    video: Sequence[Path] = (),
    rate_hz: float = 50.0,
    overwrite: bool = False,
) -> DriveRef:
    """Land an MF4 bus log (plus optional videos, one camera each) as one drive."""
    from asammdf import MDF
    from asammdf.blocks.utils import MdfException

    mf4 = Path(mf4)
    if not mf4.is_file():
        raise SourceImportError(str(mf4), "MDF file not found")
    db = load_dbc(Path(dbc))
    if mapping is not None:
        smap = load_mapping(Path(mapping))
        mapping_name = str(mapping)
    else:
        smap = parse_mapping(DEFAULT_MAPPING, "<default CANedge GNSS/IMU mapping>")
        mapping_name = f"{dbc} (default CANedge GNSS/IMU mapping)"
    check_mapping_against_dbc(smap, db, str(dbc), mapping_name)

    try:
        src = MDF(str(mf4))
    except (MdfException, OSError, ValueError, KeyError, IndexError) as exc:
        raise SourceImportError(str(mf4), f"expected an ASAM MDF (MF4) file: {exc}") from exc
    try:
        start = src.start_time
        decoded = src.extract_bus_logging({"CAN": [(str(dbc), 0)]})
        try:
            signals = {sm.column: _channel_series(decoded, sm) for sm in smap}
        finally:
            decoded.close()
    except (MdfException, ValueError, KeyError, IndexError) as exc:
        raise SourceImportError(str(mf4), f"cannot decode the CAN bus logging with {dbc}: {exc}") from exc
    finally:
        src.close()
    offset = datetime_to_ns(start)
    empty = sorted(c for c, s in signals.items() if len(s) == 0)
    if "speed_mps" in empty:
        sm = next(m for m in smap if m.column == "speed_mps")
        raise SourceImportError(str(mf4), f"no CAN frames decode to {sm.ref} (speed) with {dbc}")
    if empty:
        log.warning("%s: mapped signals without samples: %s", mf4, empty)
    table = signals_to_table(signals, rate_hz=rate_hz, source=str(mf4))
    drive_id = drive_id or default_drive_id(vehicle_id, offset)
    planned = plan_videos(video)
    return write_drive(
        Path(root), vehicle_id, drive_id, source_path=str(mf4), source="mdf4", utc_offset_ns=offset,
        telemetry=table, place_cameras=lambda w: place_videos(w, planned, start_ns=0), overwrite=overwrite,
    )
