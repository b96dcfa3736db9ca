"""Import a SocketCAN ``candump -L`` log, decoded with a DBC through a signal mapping file.

Frames are read with python-can (``can.CanutilsLogReader``) and decoded with cantools. The mapping
(YAML, see docs/importers.md) names the DBC ``Message.Signal`` of each canonical column with an
optional scale and offset. The decoded signals are resampled onto a uniform grid (default 50 Hz)
spanning the speed samples.

Clock: the vehicle clock is the log's time minus the first frame's time (the drive starts at 0);
``utc_offset_ns`` is the first frame's UTC time: ``start_utc`` if given, else the log's own time
(``candump -L`` writes UNIX time). Extra videos are taken to start with the first frame.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fleetcore.errors import SourceImportError
from fleetcore.ingest.importers.common import (
    DriveRef,
    Series,
    SignalMap,
    check_mapping_against_dbc,
    datetime_to_ns,
    default_drive_id,
    load_dbc,
    load_mapping,
    place_videos,
    plan_videos,
    resample_all,
    telemetry_table,
    uniform_grid,
    write_drive,
)

logger = logging.getLogger(__name__)

#: Log times before this (2000-01-01) are not UNIX time (e.g. seconds since boot): start_utc is needed.
MIN_UNIX_NS = 946_684_800 * 10**9


def decode_frames(
    frames: Iterable[tuple[int, int, bytes]],
    db: Any,
    mapping: Sequence[SignalMap],
    frame_ids: dict[str, list[int]],
    *,
    source: str,
) -> dict[str, Series]:
    """Decode (t_ns, arbitration id, data) frames; returns canonical column → Series (scaled)."""
    wanted: dict[int, list[SignalMap]] = {}
    for sm in mapping:
        for fid in frame_ids[sm.message]:
            wanted.setdefault(fid, []).append(sm)
    t_acc: dict[str, list[int]] = {sm.column: [] for sm in mapping}
    v_acc: dict[str, list[float]] = {sm.column: [] for sm in mapping}
    from cantools.database.errors import DecodeError

    bad = 0
    for t_ns, arb_id, data in frames:
        sms = wanted.get(arb_id)
        if not sms:
            continue
        try:
            decoded = db.decode_message(arb_id, data, decode_choices=False, scaling=True)
        except (DecodeError, ValueError, KeyError, IndexError) as exc:
            bad += 1
            logger.debug("%s: frame 0x%x at %d not decodable: %s", source, arb_id, t_ns, exc)
            continue
        for sm in sms:
            if sm.signal in decoded:
                t_acc[sm.column].append(t_ns)
                v_acc[sm.column].append(float(decoded[sm.signal]) * sm.scale + sm.offset)
    if bad:
        logger.warning("%s: %d frames could not be decoded with the DBC", source, bad)
    return {c: Series.make(np.asarray(t_acc[c], dtype=np.int64), np.asarray(v_acc[c], dtype=np.float64)) for c in t_acc}


def signals_to_table(signals: dict[str, Series], *, rate_hz: float, source: str, t_offset_ns: int = 0) -> Any:
    sp = signals.get("speed_mps")
    if sp is None or len(sp) == 0:
        raise SourceImportError(source, "no frames carry the speed signal named in the mapping")
    grid = uniform_grid(int(sp.t_ns[0]), int(sp.t_ns[-1]), rate_hz)
    if grid.size == 0:
        grid = sp.t_ns[:1].copy()
    vals = resample_all(signals, grid)
    return telemetry_table(grid - t_offset_ns, vals)


def import_candump(
    log: Path,
    dbc: Path,
    mapping: Path,
    root: Path,
    *,
    vehicle_id: str,
    drive_id: str | None = None,
    video: Sequence[Path] = (),
    start_utc: dt.datetime | None = None,
    rate_hz: float = 50.0,
    overwrite: bool = False,
) -> DriveRef:
    """Land a candump log (plus optional videos, one camera each) as one drive."""
    import can

    log_path = Path(log)
    if not log_path.is_file():
        raise SourceImportError(str(log_path), "candump log not found")
    db = load_dbc(Path(dbc))
    smap = load_mapping(Path(mapping))
    frame_ids = check_mapping_against_dbc(smap, db, str(dbc), str(mapping))

    frames: list[tuple[int, int, bytes]] = []
    try:
        for i, msg in enumerate(can.CanutilsLogReader(str(log_path))):
            if msg.is_error_frame or msg.is_remote_frame:
                continue
            frames.append((round(msg.timestamp * 1e6) * 1000, int(msg.arbitration_id), bytes(msg.data)))
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise SourceImportError(
            str(log_path), f"expected candump -L lines like '(1673459000.123456) can0 123#DEADBEEF' (near frame {len(frames) + 1}): {exc}"
        ) from exc
    if not frames:
        raise SourceImportError(str(log_path), "no CAN data frames found; expected candump -L lines '(time) iface id#data'")
    t0 = min(f[0] for f in frames)
    if start_utc is not None:
        offset = datetime_to_ns(start_utc)
    elif t0 >= MIN_UNIX_NS:
        offset = t0
    else:
        raise SourceImportError(str(log_path), "log times are not UNIX time (before 2000); pass start_utc (the UTC time of the first frame)")
    signals = decode_frames(((t - t0, a, d) for t, a, d in frames), db, smap, frame_ids, source=str(log_path))
    table = signals_to_table(signals, rate_hz=rate_hz, source=str(log_path))
    drive_id = drive_id or default_drive_id(vehicle_id, offset)
    planned = plan_videos(video)
    return write_drive(
        Path(root), vehicle_id, drive_id, source_path=str(log_path), source="candump", utc_offset_ns=offset,
        telemetry=table, place_cameras=lambda w: place_videos(w, planned, start_ns=0), overwrite=overwrite,
    )
