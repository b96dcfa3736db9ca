"""Per-camera frame index (``schemas.FRAME_INDEX``), built by demuxing packets only."""

from __future__ import annotations

import io
import logging
import os
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from fleetcore.errors import VideoError
from fleetcore.landing.drives import drive_file
from fleetcore.store.fs import read_if_file
from fleetcore.store.layout import sha256_hex
from fleetcore.video.probe import PacketScan, VideoInfo, probe_with_scan, pts_to_ns
from schemas import FRAME_INDEX

log = logging.getLogger(__name__)


def read_drive_npy(drive_dir: str | os.PathLike[str], rel: str) -> tuple[np.ndarray, str] | None:
    """The .npy array at ``rel`` in a drive folder (local or object store) and the file's sha256, from
    one read; None when there is no such file. Raises ValueError / OSError / EOFError when the file
    is not a readable array."""
    data = read_if_file(drive_file(drive_dir, rel))  # a frame-times file: one int64 per frame
    if data is None:
        return None
    return np.load(io.BytesIO(data), allow_pickle=False), sha256_hex(data)


def load_frame_times(drive_dir: str | os.PathLike[str], rel: str, *, video_path: str, expected: int) -> np.ndarray:
    """Load a raw stream's per-frame vehicle-clock times (.npy int64, decode order) and check the count."""
    try:
        got = read_drive_npy(drive_dir, rel)
    except (ValueError, OSError, EOFError) as exc:
        raise VideoError(video_path, f"frame_times file {rel!r} is not a readable .npy array ({exc})", code="video_frame_times_invalid") from exc
    if got is None:
        raise VideoError(video_path, f"frame_times file {rel!r} does not exist", code="video_frame_times_missing")
    arr = got[0]
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer)):
        raise VideoError(video_path, f"frame_times {rel!r} is {arr.dtype} with shape {arr.shape}; expected a 1-D int64 array of ns", code="video_frame_times_invalid")
    if len(arr) != expected:
        raise VideoError(video_path, f"frame_times {rel!r} has {len(arr)} entries but the stream has {expected} frames; expected one time per frame", code="video_frame_times_mismatch")
    arr = arr.astype(np.int64)
    if len(arr) > 1 and np.any(np.diff(arr) <= 0):
        bad = int(np.flatnonzero(np.diff(arr) <= 0)[0]) + 1
        raise VideoError(video_path, f"frame_times {rel!r} is not strictly increasing at frame {bad}", code="video_frame_times_invalid")
    return arr


def file_frame_times(
    drive_dir: str | os.PathLike[str], file_entry: dict[str, Any], info: VideoInfo, scan: PacketScan
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pts_ns, is_key, byte_offset, packet_size) of one file's frames in presentation order.

    Container files: vehicle time = ``start_ns`` + PTS (DTS in AVI, see ``probe.DTS_FORMATS``).
    Raw streams: the ``frame_times`` array, taken as the decoder's output order, or
    ``start_ns + i / fps`` when only ``start_ns`` is given; their other columns stay in decode
    order, which in a closed GOP (the assumption for raw streams) puts every keyframe, whose byte
    offset is what seeking needs, on its own row.
    """
    n = len(scan.is_key)
    if info.raw:
        if file_entry.get("frame_times"):
            pts_ns = load_frame_times(drive_dir, file_entry["frame_times"], video_path=info.path, expected=n)
        elif file_entry.get("start_ns") is not None:
            period = 1e9 / info.fps
            pts_ns = np.asarray([int(file_entry["start_ns"]) + int(round(i * period)) for i in range(n)], dtype=np.int64)
        else:
            raise VideoError(info.path, "raw stream without frame_times or start_ns; expected one of them in the manifest", code="video_no_timestamps")
        return pts_ns, scan.is_key.copy(), scan.pos.copy(), scan.size.copy()
    assert scan.pts is not None and scan.time_base is not None
    order = np.argsort(scan.pts, kind="stable")
    if file_entry.get("frame_times"):
        # A container file with explicit per-frame times: they are in presentation order.
        pts_ns = load_frame_times(drive_dir, file_entry["frame_times"], video_path=info.path, expected=n)
    else:
        if file_entry.get("start_ns") is None:
            raise VideoError(info.path, "container file without start_ns; expected the vehicle-clock time of PTS 0", code="video_no_timestamps")
        start = int(file_entry["start_ns"])
        tb = scan.time_base
        pts_ns = np.asarray([start + pts_to_ns(int(p), tb) for p in scan.pts[order]], dtype=np.int64)
    return pts_ns, scan.is_key[order], scan.pos[order], scan.size[order]


def index_camera(
    drive_dir: str | os.PathLike[str], camera: dict[str, Any], *, drive_id: str,
    probes: Sequence[tuple[VideoInfo, PacketScan]] | None = None,
) -> pa.Table:
    """FRAME_INDEX rows for every frame of one manifest camera, in presentation order.

    Probes every segment file (raising VideoError for bad ones), unless ``probes`` holds the
    :func:`~fleetcore.video.probe.probe_with_scan` result of each file already; rows of all
    files are concatenated and stably sorted by vehicle-clock ``pts_ns``. ``seek`` is the
    file's seek mode from the probe.
    """
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("file_index", "frame_index", "pts_ns", "is_keyframe", "byte_offset", "packet_size", "seek")}
    if probes is not None and len(probes) != len(camera["files"]):
        raise ValueError(f"probes has {len(probes)} entries for {len(camera['files'])} files")
    for fi, entry in enumerate(camera["files"]):
        if probes is not None:
            info, scan = probes[fi]
        else:
            path = drive_file(drive_dir, entry["path"])
            info, scan_or_none = probe_with_scan(path, count_frames=True)
            assert scan_or_none is not None
            scan = scan_or_none
        pts_ns, key, pos, size = file_frame_times(drive_dir, entry, info, scan)
        n = len(pts_ns)
        cols["seek"].append(np.full(n, info.seek or "index", dtype=object))
        cols["file_index"].append(np.full(n, fi, dtype=np.int32))
        cols["frame_index"].append(np.arange(n, dtype=np.int32))
        cols["pts_ns"].append(pts_ns)
        cols["is_keyframe"].append(key)
        cols["byte_offset"].append(pos)
        cols["packet_size"].append(size)
        log.debug("indexed %s camera %s file %s: %d frames", drive_id, camera["name"], entry["path"], n)
    cat = {k: np.concatenate(v) if v else np.empty(0) for k, v in cols.items()}
    order = np.argsort(cat["pts_ns"], kind="stable")
    n = len(order)
    pos = cat["byte_offset"][order].astype(np.int64)
    table = pa.table(
        {
            "drive_id": pa.array([drive_id] * n, pa.string()),
            "camera": pa.array([camera["name"]] * n, pa.string()),
            "file_index": pa.array(cat["file_index"][order].astype(np.int32), pa.int32()),
            "frame_index": pa.array(cat["frame_index"][order].astype(np.int32), pa.int32()),
            "pts_ns": pa.array(cat["pts_ns"][order].astype(np.int64), pa.int64()),
            "is_keyframe": pa.array(cat["is_keyframe"][order].astype(bool), pa.bool_()),
            "byte_offset": pa.array(pos, pa.int64(), mask=pos < 0),
            "packet_size": pa.array(cat["packet_size"][order].astype(np.int32), pa.int32()),
            "seek": pa.array(cat["seek"][order].tolist() if n else [], pa.string()),
        },
        schema=FRAME_INDEX.schema,
    )
    return FRAME_INDEX.validate(table)


def index_drive(drive_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> pa.Table:
    """FRAME_INDEX for every camera of a drive (cameras in manifest order)."""
    tables = [index_camera(drive_dir, cam, drive_id=manifest["drive_id"]) for cam in manifest["cameras"]]
    return pa.concat_tables(tables) if tables else FRAME_INDEX.empty()
