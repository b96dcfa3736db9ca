"""Import SocketCAN ``candump -L`` logs, decoded with a DBC through a signal mapping (or a built-in car).

Frames are read with python-can (``can.CanutilsLogReader``) and decoded with cantools. The mapping
(YAML, see docs/importers.md and :mod:`fleetcore.ingest.importers.mapping`) gives each canonical (or
extra ``x_*``) column an expression over DBC signals; ``car`` picks a built-in DBC + mapping
(:mod:`fleetcore.ingest.importers.cars`). The decoded columns are resampled onto a uniform grid
(default 50 Hz) spanning the speed samples.

Several log files are parts of one drive: their frames are merged in time order (bus / interface
names kept), gaps between parts are reported (manifest notes and a warning), overlapping parts and
gaps longer than ``max_gap_s`` are errors. J1939 messages of the DBC (cantools ``protocol ==
"j1939"``) match frames by PGN, whatever their priority and source address.

Clock: the vehicle clock is the log's time minus the first frame's time (the drive starts at 0);
``utc_offset_ns`` is the first frame's UTC time: ``start_utc`` if given, else the log's own time
(``candump -L`` writes UNIX time). Extra videos are taken to start with the first frame.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleetcore.errors import ConfigError, SourceImportError
from fleetcore.ingest.importers.common import (
    DriveRef,
    Series,
    datetime_to_ns,
    default_drive_id,
    load_dbc,
    place_videos,
    plan_videos,
    resample_all,
    telemetry_table,
    uniform_grid,
    write_drive,
)
from fleetcore.ingest.importers.mapping import ColumnMap, evaluate, load_mapping, parse_mapping, resolve_against_dbc

logger = logging.getLogger(__name__)

#: Log times before this (2000-01-01) are not UNIX time (e.g. seconds since boot): start_utc is needed.
MIN_UNIX_NS = 946_684_800 * 10**9
#: A gap between parts longer than this is reported.
GAP_REPORT_S = 1.0


@dataclass
class CanSetup:
    """A DBC and the mapping to decode with it."""

    db: Any
    dbc_name: str
    mapping: list[ColumnMap]
    mapping_name: str
    need: dict[str, set[str]]  # message name -> signal names
    car: Any = None
    label: str = ""  # short description for manifest notes


def can_setup(
    dbc: Path | None, mapping: Path | None, car: str | None, *, default_mapping: dict[str, Any] | None = None,
    default_name: str = "<default mapping>",
) -> CanSetup:
    """Load the DBC and the mapping: explicit files win over the car's; the car's over the defaults."""
    from fleetcore.ingest.importers.cars import get_car, load_car_dbc

    c = get_car(car) if car else None
    if dbc is not None:
        db, dbc_name = load_dbc(Path(dbc)), str(dbc)
    elif c is not None:
        db, dbc_name = load_car_dbc(c), f"opendbc {c.dbc} (car {c.name})"
    else:
        raise ConfigError("--dbc", "a DBC file is needed (--dbc FILE) unless a built-in car is given (--car NAME)")
    if mapping is not None:
        cmaps, mapping_name = load_mapping(Path(mapping)), str(mapping)
    elif c is not None:
        mapping_name = f"<car {c.name} mapping>"
        cmaps = parse_mapping(c.mapping, mapping_name)
    elif default_mapping is not None:
        cmaps, mapping_name = parse_mapping(default_mapping, default_name), default_name
    else:
        raise ConfigError("--mapping", "a signal mapping file is needed (--mapping FILE) unless a built-in car is given (--car NAME)")
    need = resolve_against_dbc(cmaps, db, dbc_name, mapping_name)
    label = f"DBC {Path(dbc).name if dbc is not None else c.dbc}, mapping " + (  # type: ignore[union-attr]
        Path(mapping).name if mapping is not None else (f"car {c.name}" if c is not None else default_name))
    return CanSetup(db, dbc_name, cmaps, mapping_name, need, c, label)


class FrameMatcher:
    """Which DBC message (if any, of those needed) a frame id is: exact frame id, or the PGN for J1939."""

    def __init__(self, db: Any, need: Iterable[str]) -> None:
        from cantools.j1939 import pgn_from_frame_id

        self._pgn = pgn_from_frame_id
        wanted = set(need)
        self.by_id: dict[int, Any] = {}
        self.by_pgn: dict[int, Any] = {}
        for m in db.messages:
            if m.name not in wanted:
                continue
            self.by_id[m.frame_id] = m
            if (getattr(m, "protocol", None) or "").lower() == "j1939":
                self.by_pgn[pgn_from_frame_id(m.frame_id)] = m
        self._cache: dict[int, Any] = {}

    def __call__(self, arb_id: int) -> Any:
        try:
            return self._cache[arb_id]
        except KeyError:
            pass
        m = self.by_id.get(arb_id)
        if m is None and self.by_pgn and 0x7FF < arb_id <= 0x1FFFFFFF:  # 29-bit ids only
            m = self.by_pgn.get(self._pgn(arb_id))
        self._cache[arb_id] = m
        return m


def decode_frames(
    frames: Iterable[tuple[int, int, bytes]], setup: CanSetup, *, source: str, pad: bool = False
) -> dict[str, Series]:
    """Decode (t_ns, arbitration id, data) frames; returns ``"Message.Signal"`` → Series (physical values).
    ``pad``: data shorter than the message is padded with zero bytes (comma2k19 strips trailing NULs)."""
    from cantools.database.errors import DecodeError

    match = FrameMatcher(setup.db, setup.need)
    t_acc: dict[str, list[int]] = {}
    v_acc: dict[str, list[float]] = {}
    bad = 0
    for t_ns, arb_id, data in frames:
        msg = match(arb_id)
        if msg is None:
            continue
        if pad and len(data) < msg.length:
            data = data.ljust(msg.length, b"\0")
        try:
            decoded = msg.decode(data, decode_choices=False, scaling=True)
        except (DecodeError, ValueError, KeyError, IndexError) as exc:
            bad += 1
            logger.debug("%s: frame 0x%x at %d not decodable: %s", source, arb_id, t_ns, exc)
            continue
        for sig in setup.need[msg.name]:
            if sig in decoded:
                key = f"{msg.name}.{sig}"
                t_acc.setdefault(key, []).append(t_ns)
                v_acc.setdefault(key, []).append(float(decoded[sig]))
    if bad:
        logger.warning("%s: %d frames could not be decoded with the DBC", source, bad)
    return {k: Series.make(np.asarray(t_acc[k], dtype=np.int64), np.asarray(v_acc[k], dtype=np.float64)) for k in t_acc}


def map_columns(setup: CanSetup, raw: dict[str, Series], *, source: str) -> dict[str, Series]:
    """Evaluate the mapping on decoded signals. Raises when speed has no samples; warns for other empty columns."""
    cols = {cm.column: evaluate(cm, raw) for cm in setup.mapping}
    if len(cols.get("speed_mps", ())) == 0:
        cm = next(m for m in setup.mapping if m.column == "speed_mps")
        raise SourceImportError(source, f"no frames carry the speed signal(s) named in the mapping: {', '.join(cm.signals)} ({setup.dbc_name})")
    empty = sorted(c for c, s in cols.items() if len(s) == 0)
    if empty:
        logger.warning("%s: mapped columns without samples: %s", source, empty)
    return {c: s for c, s in cols.items() if len(s)}


def signals_to_table(signals: dict[str, Series], *, rate_hz: float, source: str, t_offset_ns: int = 0) -> Any:
    sp = signals.get("speed_mps")
    if sp is None or len(sp) == 0:
        raise SourceImportError(source, "no frames carry the speed signal named in the mapping")
    grid = uniform_grid(int(sp.t_ns[0]), int(sp.t_ns[-1]), rate_hz)
    if grid.size == 0:
        grid = sp.t_ns[:1].copy()
    vals = resample_all(signals, grid)
    return telemetry_table(grid - t_offset_ns, vals)


@dataclass(frozen=True)
class Part:
    path: Path
    t0_ns: int  # first and last frame (or sample) time, on a common clock
    t1_ns: int


def order_parts(parts: Sequence[Part], *, max_gap_s: float, what: str) -> tuple[list[Part], list[str]]:
    """Sort parts by start; overlapping parts and gaps over ``max_gap_s`` are errors. Returns the sorted
    parts and one note per gap longer than GAP_REPORT_S."""
    ps = sorted(parts, key=lambda p: (p.t0_ns, str(p.path)))
    notes: list[str] = []
    for a, b in zip(ps, ps[1:]):
        gap_s = (b.t0_ns - a.t1_ns) / 1e9
        if gap_s < 0:
            raise SourceImportError(
                str(b.path), f"starts {-gap_s:.3f} s before the end of {a.path}; expected {what} files that are consecutive parts of one drive"
            )
        if gap_s > max_gap_s:
            raise SourceImportError(
                str(b.path), f"starts {gap_s:.1f} s after the end of {a.path} (more than max_gap_s={max_gap_s:g}); import it as another drive"
            )
        if gap_s > GAP_REPORT_S:
            notes.append(f"gap of {gap_s:.3f} s between {a.path.name} and {b.path.name}")
            logger.warning("%s: gap of %.3f s after %s", b.path, gap_s, a.path)
    return ps, notes


def _read_candump(path: Path) -> list[tuple[int, int, bytes, str]]:
    import can

    if not path.is_file():
        raise SourceImportError(str(path), "candump log not found")
    frames: list[tuple[int, int, bytes, str]] = []
    try:
        for msg in can.CanutilsLogReader(str(path)):
            if msg.is_error_frame or msg.is_remote_frame:
                continue
            frames.append((round(msg.timestamp * 1e6) * 1000, int(msg.arbitration_id), bytes(msg.data), str(msg.channel or "")))
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise SourceImportError(
            str(path), f"expected candump -L lines like '(1673459000.123456) can0 123#DEADBEEF' (near frame {len(frames) + 1}): {exc}"
        ) from exc
    if not frames:
        raise SourceImportError(str(path), "no CAN data frames found; expected candump -L lines '(time) iface id#data'")
    return frames


def import_candump(
    log: Path | Sequence[Path],
    dbc: Path | None,
    mapping: Path | None,
    root: Path,
    *,
    vehicle_id: str,
    drive_id: str | None = None,
    car: str | None = None,
    video: Sequence[Path] = (),
    start_utc: dt.datetime | None = None,
    rate_hz: float = 50.0,
    max_gap_s: float = 3600.0,
    overwrite: bool = False,
) -> DriveRef:
    """Land one candump log, or several logs that are parts of one drive (plus optional videos, one
    camera each), as one drive."""
    logs = [Path(log)] if isinstance(log, (str, Path)) else [Path(p) for p in log]
    if not logs:
        raise SourceImportError("<candump>", "no log files given")
    for p in logs:
        if not p.is_file():
            raise SourceImportError(str(p), "candump log not found")
    setup = can_setup(dbc, mapping, car)
    per_file = {p: _read_candump(p) for p in logs}
    parts, gap_notes = order_parts(
        [Part(p, min(f[0] for f in fr), max(f[0] for f in fr)) for p, fr in per_file.items()], max_gap_s=max_gap_s, what="candump"
    )
    frames = sorted((f for p in parts for f in per_file[p.path]), key=lambda f: f[0])
    source = str(parts[0].path) if len(parts) == 1 else ", ".join(str(p.path) for p in parts)
    t0 = frames[0][0]
    if start_utc is not None:
        offset = datetime_to_ns(start_utc)
    elif t0 >= MIN_UNIX_NS:
        offset = t0
    else:
        raise SourceImportError(str(parts[0].path), "log times are not UNIX time (before 2000); pass start_utc (the UTC time of the first frame)")
    raw = decode_frames(((t - t0, a, d) for t, a, d, _ in frames), setup, source=source)
    cols = map_columns(setup, raw, source=source)
    table = signals_to_table(cols, rate_hz=rate_hz, source=source)
    drive_id = drive_id or default_drive_id(vehicle_id, offset, [p.path for p in parts])
    planned = plan_videos(video)
    buses = sorted({f[3] for f in frames if f[3]})
    notes = f"candump: {len(parts)} file(s) ({', '.join(p.path.name for p in parts)}); buses: {', '.join(buses) or '-'}; " \
            f"{setup.label}" + "".join(f"; {n}" for n in gap_notes)
    return write_drive(
        Path(root), vehicle_id, drive_id, source_path=source, source="candump", utc_offset_ns=offset,
        telemetry=table, place_cameras=lambda w: place_videos(w, planned, start_ns=0), overwrite=overwrite, notes=notes,
    )
