"""Deterministic H.264/MP4 encoding of raw BGR frames streamed to ffmpeg's stdin.

Settings: libx264, yuv420p, preset veryfast, CRF 26 by default, GOP = round(fps) frames
(``-g``, ``-keyint_min``, no scene-cut keyframes) so every second starts with a keyframe,
no B-frames (decode order == presentation order, first PTS 0), ``-movflags +faststart``,
bit-exact muxing without metadata, and an explicit thread count: the same frames, binary and
settings give byte-identical files. The file is written to a temporary name in the same folder
and renamed into place when ffmpeg succeeds. ffmpeg runs through :mod:`fleetcore.video.ffmpeg`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

from fleetcore.video.ffmpeg import CloseOrAbort, FfmpegPipe

__all__ = ["H264Writer", "h264_stream"]

log = logging.getLogger(__name__)


def h264_stream(
    out: str, *, width: int, height: int, fps: float, crf: int = 26, preset: str = "veryfast", threads: int = 1
) -> Any:
    """The ffmpeg-python graph: raw BGR frames on ``pipe:0`` -> H.264 MP4 at ``out``."""
    gop = max(1, int(round(fps)))
    rate = Fraction(fps).limit_denominator(1001)
    frames = ffmpeg.input("pipe:0", f="rawvideo", pix_fmt="bgr24", s=f"{width}x{height}", framerate=f"{rate.numerator}/{rate.denominator}")
    return frames.output(
        out, an=None, **{"c:v": "libx264"}, preset=preset, crf=str(crf), pix_fmt="yuv420p",
        g=str(gop), keyint_min=str(gop), sc_threshold="0", bf="0",
        threads=str(threads),
        fflags="+bitexact", **{"flags:v": "+bitexact"}, map_metadata="-1",
        movflags="+faststart", f="mp4",
    )  # fmt: skip


class H264Writer(CloseOrAbort):
    """Context manager: ``write(frame)`` BGR uint8 frames of the given size; the MP4 lands on close."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        fps: float,
        crf: int = 26,
        preset: str = "veryfast",
        threads: int = 1,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width, height
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        stream = h264_stream(self.tmp, width=width, height=height, fps=fps, crf=crf, preset=preset, threads=threads)
        try:
            self._pipe = FfmpegPipe(stream, path=self.path)
        except BaseException:
            os.unlink(self.tmp)
            raise
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"{self.path}: expected a {self.height}x{self.width}x3 uint8 frame, found {frame.shape} {frame.dtype}")
        self._pipe.write(np.ascontiguousarray(frame).data)
        self.frames += 1

    def close(self) -> Path:
        try:
            self._pipe.close()
            os.replace(self.tmp, self.path)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
        return self.path

    def abort(self) -> None:
        self._pipe.abort()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

