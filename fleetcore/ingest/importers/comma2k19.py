"""Import a comma2k19 segment (or a route folder of numbered segments) into one landing drive.

Layout (each leaf is a NumPy ``.npy`` file without extension; ``t`` is seconds since boot):
``processed_log/CAN/speed/{t,value}`` (m/s), ``processed_log/CAN/steering_angle/{t,value}`` (deg, +left),
``processed_log/IMU/accelerometer`` and ``gyro`` ([forward, right, down]),
``processed_log/GNSS/live_gnss_ublox`` ([lat, lon, speed, utc ms, alt, bearing deg]),
``global_pose/frame_times`` (boot s per video frame), ``global_pose/frame_gps_times`` ([week, tow]),
and optionally ``video.hevc`` (raw HEVC, 20 fps).

The vehicle clock is the boot clock in ns. Signals are resampled onto a 100 Hz grid spanning the CAN
speed samples of each segment. Sign conventions: the IMU's "right" and "down" axes are flipped so that
``accel_lat_mps2`` is positive to the left and ``yaw_rate_radps`` positive counter-clockwise (left).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from fleetcore.errors import SourceImportError
from fleetcore.ingest.importers.common import (
    DriveRef,
    Series,
    copy_into,
    default_drive_id,
    resample_all,
    save_npy,
    seconds_to_ns,
    telemetry_table,
    uniform_grid,
    write_drive,
)

log = logging.getLogger(__name__)

RATE_HZ = 100.0
GPS_EPOCH_UNIX_S = 315_964_800  # 1980-01-06T00:00:00Z
# (first UNIX second it applies from, GPS - UTC seconds)
LEAP_SECONDS = [(1341100800, 16), (1435708800, 17), (1483228800, 18)]
RAW_CAN = "processed_log/CAN/raw_can"
NAME_RE = re.compile(r"([0-9a-f]{16})[|_](\d{4}-\d{2}-\d{2}--\d{2}-\d{2}-\d{2})")


def _load(seg: Path, rel: str, *, required: bool = True) -> np.ndarray | None:
    p = seg / rel
    if not p.is_file():
        if required:
            raise SourceImportError(str(p), f"missing comma2k19 array {rel!r} (expected a .npy file without extension)")
        return None
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SourceImportError(str(p), f"expected a NumPy .npy array: {exc}") from exc


def _signal(seg: Path, name: str, *, required: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    t = _load(seg, f"{name}/t", required=required)
    v = _load(seg, f"{name}/value", required=required)
    if t is None or v is None:
        return None
    t = np.asarray(t, dtype=np.float64).ravel()
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if v.shape[0] != t.shape[0]:
        raise SourceImportError(str(seg / name / "value"), f"expected {t.shape[0]} rows (as in {name}/t), found {v.shape[0]}")
    return seconds_to_ns(t), v


def count_hevc_frames(path: Path) -> int:
    """Number of access units in a raw HEVC stream (demuxed with PyAV, not decoded)."""
    import av

    try:
        with av.open(str(path), format="hevc") as c:
            if not c.streams.video:
                raise SourceImportError(str(path), "expected a raw HEVC video stream")
            stream = c.streams.video[0]
            return sum(1 for p in c.demux(stream) if p.size)
    except av.error.FFmpegError as exc:
        raise SourceImportError(str(path), f"expected a raw HEVC stream: {exc}") from exc


def gps_to_unix_s(week: np.ndarray, tow: np.ndarray) -> np.ndarray:
    gps = GPS_EPOCH_UNIX_S + week * 604800.0 + tow
    leap = np.zeros_like(gps)
    for start, n in LEAP_SECONDS:
        leap = np.where(gps - n >= start, float(n), leap)
    return gps - leap


def _utc_offset_ns(seg: Path) -> int | None:
    """UTC minus boot clock: from the per-frame GPS times (precise), else the u-blox fixes' UTC
    (which lag by the receiver latency, ~0.2 s)."""
    ft = _load(seg, "global_pose/frame_times", required=False)
    fg = _load(seg, "global_pose/frame_gps_times", required=False)
    if ft is not None and fg is not None and fg.ndim == 2 and fg.shape[0] == ft.shape[0] and fg.shape[0]:
        unix = gps_to_unix_s(fg[:, 0], fg[:, 1])
        off = np.median(unix - ft)
        return round(off * 1e6) * 1000
    g = _signal(seg, "processed_log/GNSS/live_gnss_ublox", required=False)
    if g is not None and g[1].shape[0] and g[1].shape[1] >= 4:
        t_ns, v = g
        ok = np.isfinite(v[:, 3]) & (v[:, 3] > 0)
        if np.any(ok):
            return int(np.median(v[ok, 3].astype(np.int64) * 1_000_000 - t_ns[ok]))
    return None


def has_raw_can(seg: Path) -> bool:
    return all((seg / RAW_CAN / n).is_file() for n in ("t", "address", "data"))


def raw_can_frames(seg: Path, *, bus: int | None, ids: set[int] | None = None) -> list[tuple[int, int, bytes]]:
    """(boot ns, address, data) of ``processed_log/CAN/raw_can`` (``t`` s, ``src`` bus, ``address``, ``data``),
    on bus ``bus`` (None: all), only ``ids`` if given. ``data`` may be ``|S8`` (trailing NULs stripped:
    decoding pads them back) or (N, 8) uint8."""
    t = _load(seg, f"{RAW_CAN}/t")
    addr = _load(seg, f"{RAW_CAN}/address")
    data = _load(seg, f"{RAW_CAN}/data")
    src = _load(seg, f"{RAW_CAN}/src", required=False)
    assert t is not None and addr is not None and data is not None
    t = np.asarray(t, dtype=np.float64).ravel()
    addr = np.asarray(addr).astype(np.int64).ravel()
    n = t.shape[0]
    if addr.shape[0] != n or data.shape[0] != n or (src is not None and np.asarray(src).ravel().shape[0] != n):
        raise SourceImportError(str(seg / RAW_CAN), f"expected t, address, data (and src) of the same length; found {n}, {addr.shape[0]}, {data.shape[0]}")
    keep = np.ones(n, dtype=bool)
    if bus is not None and src is not None:
        keep &= np.asarray(src).astype(np.int64).ravel() == bus
    if ids is not None:
        keep &= np.isin(addr, np.fromiter(ids, dtype=np.int64))
    idx = np.flatnonzero(keep)
    t_ns = seconds_to_ns(t[idx])
    if data.dtype.kind == "S":
        payloads = [bytes(b) for b in data[idx].tolist()]
    elif data.dtype.kind in "u" and data.ndim == 2:
        payloads = [bytes(row) for row in np.asarray(data[idx], dtype=np.uint8)]
    else:
        raise SourceImportError(str(seg / RAW_CAN / "data"), f"expected |S8 bytes or (N, 8) uint8 CAN payloads, found {data.dtype} {data.shape}")
    return list(zip(t_ns.tolist(), addr[idx].tolist(), payloads))


def _raw_can_signals(seg: Path, setup: Any) -> dict[str, Series]:
    """Canonical / extra columns decoded from the segment's raw CAN with the car's DBC and mapping."""
    from fleetcore.ingest.importers.candump import FrameMatcher, decode_frames, map_columns

    match = FrameMatcher(setup.db, setup.need)
    ids = set(match.by_id)
    src = str(seg / RAW_CAN)
    bus = setup.car.bus if setup.car is not None else 0
    frames = raw_can_frames(seg, bus=bus, ids=ids)
    raw = decode_frames(iter(frames), setup, source=src, pad=True)
    sp = next(m for m in setup.mapping if m.column == "speed_mps")
    if not any(k in raw for k in sp.signals):
        log.warning("%s: no speed frames on bus %s; trying all buses", src, bus)
        raw = decode_frames(iter(raw_can_frames(seg, bus=None, ids=ids)), setup, source=src, pad=True)
    return map_columns(setup, raw, source=src)


def _segment_signals(seg: Path, setup: Any = None) -> tuple[dict[str, Series], np.ndarray]:
    sig: dict[str, Series] = {}
    if setup is not None:
        sig.update(_raw_can_signals(seg, setup))
    else:
        speed = _signal(seg, "processed_log/CAN/speed")
        assert speed is not None
        sig["speed_mps"] = Series.make(speed[0], speed[1][:, 0])
        steer = _signal(seg, "processed_log/CAN/steering_angle", required=False)
        if steer is not None:
            sig["steering_angle_rad"] = Series.make(steer[0], np.radians(steer[1][:, 0]))
    acc = _signal(seg, "processed_log/IMU/accelerometer", required=False)
    if acc is not None:
        if acc[1].shape[1] < 2:
            raise SourceImportError(str(seg / "processed_log/IMU/accelerometer/value"), "expected [forward, right, down] columns")
        sig["accel_lon_mps2"] = Series.make(acc[0], acc[1][:, 0])
        sig["accel_lat_mps2"] = Series.make(acc[0], -acc[1][:, 1])  # right → left-positive
    gyro = _signal(seg, "processed_log/IMU/gyro", required=False)
    if gyro is not None:
        if gyro[1].shape[1] < 3:
            raise SourceImportError(str(seg / "processed_log/IMU/gyro/value"), "expected [forward, right, down] columns")
        sig["yaw_rate_radps"] = Series.make(gyro[0], -gyro[1][:, 2])  # about down → counter-clockwise positive
    gnss = _signal(seg, "processed_log/GNSS/live_gnss_ublox", required=False)
    if gnss is not None and gnss[1].shape[1] >= 6:
        t_ns, v = gnss
        sig["lat_deg"] = Series.make(t_ns, v[:, 0])
        sig["lon_deg"] = Series.make(t_ns, v[:, 1])
        sig["heading_rad"] = Series.make(t_ns, np.radians(np.mod(v[:, 5], 360.0)))
    sp = sig["speed_mps"]
    if len(sp) == 0:
        raise SourceImportError(str(seg / ("processed_log/CAN/speed/value" if setup is None else RAW_CAN)), "no finite speed samples")
    grid = uniform_grid(int(sp.t_ns[0]), int(sp.t_ns[-1]), RATE_HZ)
    return sig, grid


def _segments(folder: Path) -> list[Path]:
    if (folder / "processed_log").is_dir():
        return [folder]
    segs = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and (p / "processed_log").is_dir()]
    if not segs:
        raise SourceImportError(
            str(folder), "expected a comma2k19 segment folder (with processed_log/) or a route folder of numbered segment folders"
        )
    return sorted(segs, key=lambda p: int(p.name))


def _names(folder: Path) -> tuple[str | None, str | None]:
    """(dongle id, drive id) parsed from the folder name (or its parent's, for a segment folder)."""
    for cand in (folder.name, folder.parent.name + "_seg" + folder.name if folder.name.isdigit() else ""):
        m = NAME_RE.search(cand)
        if m:
            seg = re.search(r"seg(\d+)$", cand)
            drive = f"{m.group(1)}_{m.group(2)}" + (f"_seg{seg.group(1)}" if seg and (folder / "processed_log").is_dir() else "")
            return m.group(1), drive
    return None, None


def import_comma2k19(
    segment_dir: Path,
    root: Path,
    *,
    vehicle_id: str | None = None,
    drive_id: str | None = None,
    car: str | None = None,
    overwrite: bool = False,
) -> DriveRef:
    """Land one comma2k19 segment, or a route folder of segments, as one drive (camera ``road``).

    ``car`` (a built-in car name): the CAN columns are decoded from ``processed_log/CAN/raw_can`` with
    the car's opendbc DBC and mapping (speed, steering angle, extra ``x_*`` columns) instead of being
    read from the processed arrays. Without ``car``, segments without ``processed_log/CAN/speed`` but
    with raw CAN are decoded with the car of the dongle id (RAV4 ``b0c9d2329ad1606b``, Civic ``99c94dc769b5d96e``)."""
    folder = Path(segment_dir)
    if not folder.is_dir():
        raise SourceImportError(str(folder), "expected a comma2k19 segment or route folder")
    segs = _segments(folder)
    dongle, name_drive = _names(folder)
    vehicle_id = vehicle_id or dongle
    if vehicle_id is None:
        raise SourceImportError(str(folder), "cannot find the dongle id in the folder name; pass vehicle_id")

    setup = None
    if car is None and any(not (s / "processed_log/CAN/speed/t").is_file() and has_raw_can(s) for s in segs):
        from fleetcore.ingest.importers.cars import car_for_dongle

        known = car_for_dongle(dongle)
        if known is None:
            raise SourceImportError(str(folder), "no processed CAN speed; pass car (a built-in car) to decode processed_log/CAN/raw_can")
        car = known.name
    if car is not None:
        from fleetcore.ingest.importers.candump import can_setup

        setup = can_setup(None, None, car)
    offsets: list[int] = []
    parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    video_files: list[tuple[Path, np.ndarray]] = []
    for seg in segs:
        if setup is not None and not has_raw_can(seg):
            raise SourceImportError(str(seg / RAW_CAN), "expected raw CAN arrays t, src, address, data (needed to decode with a car)")
        sig, grid = _segment_signals(seg, setup)
        parts.append((grid, resample_all(sig, grid)))
        off = _utc_offset_ns(seg)
        if off is not None:
            offsets.append(off)
        hevc = seg / "video.hevc"
        if hevc.is_file():
            ft = _load(seg, "global_pose/frame_times")
            assert ft is not None
            n = count_hevc_frames(hevc)
            if n != ft.size:
                raise SourceImportError(str(hevc), f"expected {ft.size} frames (as in global_pose/frame_times), found {n}")
            video_files.append((hevc, seconds_to_ns(np.asarray(ft, dtype=np.float64).ravel())))
    if not offsets:
        raise SourceImportError(
            str(folder), "expected global_pose/frame_gps_times or processed_log/GNSS/live_gnss_ublox to fix the UTC offset"
        )
    offset = int(np.median(np.asarray(offsets, dtype=np.int64)))
    t_all = np.concatenate([g for g, _ in parts])
    names = sorted({c for _, vals in parts for c in vals})
    cols = {c: np.concatenate([vals.get(c, np.full(g.size, np.nan)) for g, vals in parts]) for c in names}
    table = telemetry_table(t_all, cols)
    if drive_id is None:
        drive_id = name_drive or default_drive_id(vehicle_id, offset + int(t_all[0]) if t_all.size else offset)

    def place(writer: Any) -> list[dict[str, Any]]:
        if not video_files:
            return []
        files = []
        for i, (src, ft_ns) in enumerate(video_files):
            rel = f"cameras/road/{i:03d}.hevc"
            rel_t = f"cameras/road/{i:03d}.frame_times.npy"
            copy_into(src, writer.path / rel)
            save_npy(writer.path / rel_t, ft_ns)
            files.append({"path": rel, "start_ns": None, "frame_times": rel_t})
        return [{"name": "road", "codec": "hevc", "files": files}]

    notes = f"comma2k19 {folder.name}: {len(segs)} segment(s)" + (f"; CAN decoded from raw_can with {setup.label}" if setup else "")
    return write_drive(
        Path(root), vehicle_id, drive_id, source_path=str(folder), source="comma2k19",
        utc_offset_ns=offset, telemetry=table, place_cameras=place, overwrite=overwrite, notes=notes,
    )
