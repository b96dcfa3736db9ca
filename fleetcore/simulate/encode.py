"""Deterministic H.264/MP4 encoding of raw BGR frames through an ffmpeg subprocess (stdin pipe).

Settings: libx264, yuv420p, preset veryfast, CRF 26 by default, GOP = round(fps) frames
(``-g``, ``-keyint_min``, no scene-cut keyframes) so every second starts with a keyframe,
no B-frames (decode order == presentation order, first PTS 0), ``-movflags +faststart``,
bit-exact muxing without metadata, and an explicit thread count: the same frames, binary and
settings give byte-identical files. The file is written to a temporary name in the same folder
and renamed into place when ffmpeg succeeds.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from fleetcore.errors import VideoError

log = logging.getLogger(__name__)


def ffmpeg_exe(override: str | None = None) -> str:
    """The ffmpeg binary: ``override`` if given, else the one bundled with imageio-ffmpeg."""
    if override:
        return override
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_command(
    exe: str, out: str, *, width: int, height: int, fps: float, crf: int = 26, preset: str = "veryfast", threads: int = 1
) -> list[str]:
    gop = max(1, int(round(fps)))
    rate = Fraction(fps).limit_denominator(1001)
    return [
        exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-framerate", f"{rate.numerator}/{rate.denominator}",
        "-i", "pipe:0",
        "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "0",
        "-threads", str(threads),
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
        "-movflags", "+faststart", "-f", "mp4", out,
    ]  # fmt: skip


class H264Writer:
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
        ffmpeg: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width, height
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._err = tempfile.TemporaryFile()
        cmd = ffmpeg_command(ffmpeg_exe(ffmpeg), self.tmp, width=width, height=height, fps=fps, crf=crf, preset=preset, threads=threads)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"{self.path}: expected a {self.height}x{self.width}x3 uint8 frame, found {frame.shape} {frame.dtype}")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError as exc:
            self.proc.wait()
            raise VideoError(str(self.path), "encode_failed", f"ffmpeg exited early: {self._stderr()}") from exc
        self.frames += 1

    def _stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode("utf-8", "replace").strip()[-2000:]

    def close(self) -> Path:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        rc = self.proc.wait()
        try:
            if rc != 0:
                raise VideoError(str(self.path), "encode_failed", f"ffmpeg exited with status {rc}: {self._stderr()}")
            os.replace(self.tmp, self.path)
        finally:
            self._err.close()
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
        return self.path

    def abort(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.kill()
        self.proc.wait()
        self._err.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self) -> "H264Writer":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:
            self.abort()
