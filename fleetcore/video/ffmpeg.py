"""Thin helpers around the ``ffmpeg`` binary shipped by imageio-ffmpeg.

Used to *write* test and benchmark videos (and by the simulator if it likes); reading is
done with PyAV. No ffprobe is available: probe with :func:`fleetcore.video.probe_video`.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np

from fleetcore.errors import FleetError

log = logging.getLogger(__name__)

Encoder = Literal["libx264", "libx265", "mpeg4", "mjpeg"]


class FfmpegFailed(FleetError):
    """The ffmpeg binary exited with an error; the message carries its stderr tail."""


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg  # local import: only writers need it

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: Sequence[str], *, input_bytes: bytes | None = None, timeout_s: float = 600.0) -> None:
    """Run ``ffmpeg -hide_banner -loglevel error -y <args>``; raise FfmpegFailed on a non-zero exit."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, input=input_bytes, capture_output=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace")[-2000:]
        raise FfmpegFailed(f"ffmpeg failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def encoder_args(
    encoder: Encoder, *, gop: int, crf: int = 23, preset: str = "veryfast", bframes: int | None = None
) -> list[str]:
    """Codec arguments for ``encoder`` with a fixed GOP (keyframe every ``gop`` frames, no scene cuts)."""
    if encoder == "libx264":
        args = ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-g", str(gop), "-keyint_min", str(gop),
                "-sc_threshold", "0", "-pix_fmt", "yuv420p"]
        if bframes is not None:
            args += ["-bf", str(bframes)]
        return args
    if encoder == "libx265":
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error"
        if bframes is not None:
            params += f":bframes={bframes}"
        return ["-c:v", "libx265", "-preset", preset, "-crf", str(crf), "-x265-params", params, "-pix_fmt", "yuv420p"]
    if encoder == "mpeg4":
        return ["-c:v", "mpeg4", "-g", str(gop), "-q:v", "5", "-pix_fmt", "yuv420p"]
    if encoder == "mjpeg":
        return ["-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p"]
    raise ValueError(f"unknown encoder {encoder!r}; expected one of libx264, libx265, mpeg4, mjpeg")


def encode_frames(
    frames: Iterable[np.ndarray],
    out: str | os.PathLike[str],
    *,
    fps: float,
    encoder: Encoder = "libx264",
    gop: int = 10,
    crf: int = 23,
    preset: str = "veryfast",
    bframes: int | None = None,
    extra_args: Sequence[str] = (),
) -> Path:
    """Encode RGB uint8 frames (all the same HxWx3 shape) to ``out`` at constant ``fps``.

    The container follows the suffix (``.mp4``, ``.mkv``, ``.h264``/``.hevc`` raw streams, ``.avi``).
    """
    frames = list(frames)
    if not frames:
        raise ValueError("encode_frames: expected at least one frame")
    h, w = frames[0].shape[:2]
    for i, f in enumerate(frames):
        if f.shape != (h, w, 3) or f.dtype != np.uint8:
            raise ValueError(f"encode_frames: frame {i} is {f.shape} {f.dtype}; expected ({h}, {w}, 3) uint8")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)
    args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", repr(float(fps)), "-i", "-",
            *encoder_args(encoder, gop=gop, crf=crf, preset=preset, bframes=bframes), *extra_args, str(out)]
    run_ffmpeg(args, input_bytes=data)
    return out


def encode_testsrc(
    out: str | os.PathLike[str],
    *,
    seconds: float,
    fps: float = 30.0,
    size: tuple[int, int] = (1280, 720),
    encoder: Encoder = "libx264",
    gop: int = 30,
    crf: int = 23,
    preset: str = "veryfast",
    extra_args: Sequence[str] = (),
) -> Path:
    """Encode ffmpeg's ``testsrc2`` pattern (``size`` = (width, height)) for ``seconds``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    args = ["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}", "-t", repr(float(seconds)),
            *encoder_args(encoder, gop=gop, crf=crf, preset=preset), *extra_args, str(out)]
    run_ffmpeg(args)
    return out
