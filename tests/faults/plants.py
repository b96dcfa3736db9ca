"""How each landing fault is planted into a good drive folder (``drive``: a folder made by
``conftest.build_drive``: cameras front/left as 3 s H.264 MP4s starting at 5 s, 3 s of telemetry)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conftest import encode_testsrc, telemetry_table
from fleetcore.landing.drives import MANIFEST, UPLOAD_COMPLETE

FRONT = "cameras/front/000.mp4"


def edit_manifest(fn):
    def plant(drive: Path) -> None:
        m = json.loads((drive / MANIFEST).read_text())
        fn(m)
        (drive / MANIFEST).write_text(json.dumps(m))
    return plant


def video_bytes(data: bytes, cam: str = "front"):
    def plant(drive: Path) -> None:
        (drive / "cameras" / cam / "000.mp4").write_bytes(data)
    return plant


def truncate(fraction: float, rel: str = FRONT):
    def plant(drive: Path) -> None:
        p = drive / rel
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * fraction)])
    return plant


def flip_bytes(rel: str, start_fraction: float, n: int = 64):
    """Overwrite ``n`` bytes from a point of the file with a fixed pattern (damage inside the payload)."""
    def plant(drive: Path) -> None:
        p = drive / rel
        data = bytearray(p.read_bytes())
        at = int(len(data) * start_fraction)
        data[at: at + n] = bytes((i * 37 + 11) & 0xFF for i in range(min(n, len(data) - at)))
        p.write_bytes(bytes(data))
    return plant


def remove(rel: str):
    def plant(drive: Path) -> None:
        (drive / rel).unlink()
    return plant


def reencode(rel: str = FRONT, **kw):
    def plant(drive: Path) -> None:
        p = drive / rel
        p.unlink()
        encode_testsrc(p, **kw)
    return plant


def symlink_out(rel: str = FRONT):
    def plant(drive: Path) -> None:
        p = drive / rel
        outside = drive.parent.parent.parent / f"outside-{drive.name}.mp4"
        shutil.copyfile(p, outside)
        p.unlink()
        os.symlink(outside, p)
    return plant


def telemetry(table: pa.Table | None = None, *, raw: bytes | None = None):
    def plant(drive: Path) -> None:
        p = drive / "telemetry.parquet"
        if raw is not None:
            p.write_bytes(raw)
        else:
            pq.write_table(table, p)
    return plant


def telemetry_with(**changes):
    t = telemetry_table(5_000_000_000, 3.0)
    cols = {n: t.column(n).to_numpy().copy() for n in t.column_names}
    for k, fn in changes.items():
        fn(cols[k])
    return telemetry(pa.table({k: pa.array(v) for k, v in cols.items()}))


def at(i: int, value: float):
    def fn(a: np.ndarray) -> None:
        a[i] = value
    return fn


def swap(i: int):
    def fn(a: np.ndarray) -> None:
        a[i], a[i + 1] = a[i + 1], a[i]
    return fn


def raw_stream(frame_times: np.ndarray | None, *, times_path: bool = True):
    """Replace the front camera with a raw H.264 stream (30 frames) and the given frame-times file."""
    def plant(drive: Path) -> None:
        cam = drive / "cameras" / "front"
        (cam / "000.mp4").unlink()
        encode_testsrc(cam / "000.h264", extra={"f": "h264"})
        ft = None
        if times_path:
            ft = "cameras/front/000.frametimes.npy"
            if frame_times is not None:
                np.save(cam / "000.frametimes.npy", frame_times)
        edit_manifest(lambda m: m["cameras"][0].update(files=[{"path": "cameras/front/000.h264", "start_ns": None, "frame_times": ft}]))(drive)
    return plant


def unmark(drive: Path) -> None:
    (drive / UPLOAD_COMPLETE).unlink()


def audio_only(drive: Path) -> None:
    import ffmpeg

    from fleetcore.video.ffmpeg import run

    p = drive / FRONT
    p.unlink()
    run(ffmpeg.input("sine=frequency=440:duration=2", f="lavfi").output(str(p), **{"c:a": "aac"}), path=p)


def png_as_mp4(drive: Path) -> None:
    import cv2

    ok, png = cv2.imencode(".png", np.zeros((120, 160, 3), np.uint8))
    assert ok
    (drive / FRONT).write_bytes(png.tobytes())


def both(*plants):
    def plant(drive: Path) -> None:
        for p in plants:
            p(drive)
    return plant
