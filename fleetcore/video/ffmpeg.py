"""The one front for the ``ffmpeg`` binary: ffmpeg-python graphs run on imageio-ffmpeg's binary.

Every ffmpeg invocation of the project goes through :func:`run` (one shot, optional stdin bytes)
or :class:`FfmpegPipe` (raw bytes streamed to stdin, e.g. the simulator's frames). Both prefix the
command with :data:`GLOBAL_ARGS` (``-hide_banner -nostdin -loglevel error -y``), bound the wait
for ffmpeg by ``timeout_s`` (:data:`DEFAULT_TIMEOUT_S`) and raise :class:`FfmpegError`, which
carries the command line and the tail of ffmpeg's stderr.

Build the graph with ffmpeg-python (``ffmpeg.input(...).output(...)``); its keyword options come
out sorted by name within each input and output, which ffmpeg reads the same as any other order.
The global options travel in ``cmd`` (binary first), not in ``global_args``, so they stay in front
of the inputs. imageio-ffmpeg ships no ffprobe: probe with :func:`fleetcore.video.probe_video` (PyAV).

:func:`encode_frames` and :func:`encode_testsrc` write test and benchmark videos.
"""

from __future__ import annotations

import collections
import logging
import os
import shlex
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Iterable, Literal, Mapping, Sequence

import ffmpeg
import numpy as np

from fleetcore.errors import FleetError

__all__ = [
    "CloseOrAbort",
    "DEFAULT_TIMEOUT_S",
    "GLOBAL_ARGS",
    "Encoder",
    "FfmpegError",
    "FfmpegPipe",
    "command",
    "encode_frames",
    "encode_testsrc",
    "encoder_options",
    "ffmpeg_exe",
    "run",
]

log = logging.getLogger(__name__)

Encoder = Literal["libx264", "libx265", "mpeg4", "mjpeg"]

GLOBAL_ARGS: Final = ("-hide_banner", "-nostdin", "-loglevel", "error", "-y")
DEFAULT_TIMEOUT_S: Final = 600.0
STDERR_TAIL: Final = 2000  # characters of stderr an error keeps
_MESSAGE_TAIL: Final = 400  # characters of it the one-line message shows


class FfmpegError(FleetError):
    """ffmpeg failed on ``path`` (the file it writes, or reads where it writes none): ``problem``
    says how (exit status, timeout, early exit).

    ``cmd`` is the command line, ``stderr`` the tail of ffmpeg's stderr (its last lines, joined
    on one line, end the message).
    """

    def __init__(self, path: str, problem: str, *, cmd: Sequence[str], stderr: str) -> None:
        self.path = str(path)
        self.cmd = list(cmd)
        self.stderr = stderr[-STDERR_TAIL:]
        super().__init__(self.path, f"{problem}: {_last_lines(self.stderr) or 'ffmpeg wrote nothing to stderr'}")


def _last_lines(text: str) -> str:
    """The last whole lines of ``text`` that fit in :data:`_MESSAGE_TAIL` characters, joined with ' | '."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kept: list[str] = []
    while lines and sum(len(k) + 3 for k in kept) + len(lines[-1]) <= _MESSAGE_TAIL:
        kept.insert(0, lines.pop())
    return " | ".join(kept) if kept or not lines else lines[-1][-_MESSAGE_TAIL:]


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg  # local import: only writers need it

    return imageio_ffmpeg.get_ffmpeg_exe()


def _prefix() -> list[str]:
    return [ffmpeg_exe(), *GLOBAL_ARGS]


def command(stream: Any) -> list[str]:
    """The command line :func:`run` / :class:`FfmpegPipe` execute for an ffmpeg-python output ``stream``."""
    return ffmpeg.compile(stream, cmd=_prefix())


def _start(stream: Any, *, pipe_stdin: bool, pipe_stdout: bool) -> tuple[subprocess.Popen[bytes], list[str]]:
    prefix = _prefix()
    cmd = ffmpeg.compile(stream, cmd=prefix)
    log.debug("ffmpeg: %s", shlex.join(cmd))
    proc = ffmpeg.run_async(stream, cmd=prefix, pipe_stdin=pipe_stdin, pipe_stdout=pipe_stdout, pipe_stderr=True)
    return proc, cmd


def _text(err: bytes | None) -> str:
    return (err or b"").decode("utf-8", "replace")


def run(
    stream: Any, *, path: str | os.PathLike[str], input_bytes: bytes | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Run an ffmpeg-python output ``stream``, feeding ``input_bytes`` to stdin (``pipe:`` inputs).

    ``path`` is the file the errors name (the final file where the output is a temporary one).
    Raise :class:`FfmpegError` on a non-zero exit or when ffmpeg runs past ``timeout_s``.
    """
    proc, cmd = _start(stream, pipe_stdin=input_bytes is not None, pipe_stdout=True)
    try:
        _, err = proc.communicate(input_bytes, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        _, err = proc.communicate()
        raise FfmpegError(str(path), f"ffmpeg ran past its {timeout_s:g} s timeout", cmd=cmd, stderr=_text(err)) from exc
    if proc.returncode != 0:
        raise FfmpegError(str(path), f"ffmpeg exited with status {proc.returncode}", cmd=cmd, stderr=_text(err))


class CloseOrAbort:
    """A writer used in ``with``: :meth:`close` when the block ends normally, :meth:`abort` when it raises."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:
            self.abort()


class FfmpegPipe(CloseOrAbort):
    """Stream bytes to ffmpeg's stdin: ``write(data)`` ..., then ``close()`` (or ``abort()``).

    ``stream`` reads ``pipe:0`` (e.g. ``ffmpeg.input("pipe:0", f="rawvideo", ...)``) and writes a
    file; ``path`` is the file errors name. A thread drains stderr (keeping its tail) so a
    talkative ffmpeg never blocks the writes. ``close()`` waits at most ``timeout_s`` for ffmpeg
    to finish. As a context manager: closes on success, aborts on an exception.
    """

    def __init__(self, stream: Any, *, path: str | os.PathLike[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.path = str(path)
        self.timeout_s = timeout_s
        self._proc, self.cmd = _start(stream, pipe_stdin=True, pipe_stdout=False)
        self._tail: collections.deque[bytes] = collections.deque()
        self._drain = threading.Thread(target=self._read_stderr, name=f"ffmpeg-stderr {Path(self.path).name}", daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        err = self._proc.stderr
        assert err is not None
        kept = 0
        for chunk in iter(lambda: err.read1(4096), b""):  # type: ignore[attr-defined]
            self._tail.append(chunk)
            kept += len(chunk)
            while kept - len(self._tail[0]) >= STDERR_TAIL:
                kept -= len(self._tail.popleft())

    def _reap(self) -> str:
        """Once ffmpeg has exited: finish draining stderr, close it and return its tail."""
        self._drain.join()
        assert self._proc.stderr is not None
        self._proc.stderr.close()
        return _text(b"".join(self._tail))

    def _failed(self, problem: str) -> FfmpegError:
        return FfmpegError(self.path, problem, cmd=self.cmd, stderr=self._reap())

    def write(self, data: bytes | memoryview) -> None:
        """Write ``data`` to ffmpeg's stdin; raise :class:`FfmpegError` if ffmpeg has exited."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
        except BrokenPipeError as exc:
            rc = self._proc.wait()
            self._discard_stdin()
            raise self._failed(f"ffmpeg exited early with status {rc}") from exc

    def close(self) -> None:
        """Close stdin and wait for ffmpeg; raise :class:`FfmpegError` on a failure or a timeout."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except BrokenPipeError as exc:
            rc = self._proc.wait()
            raise self._failed(f"ffmpeg exited early with status {rc}") from exc
        try:
            rc = self._proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired as exc:
            self._proc.kill()
            self._proc.wait()
            raise self._failed(f"ffmpeg ran past its {self.timeout_s:g} s timeout") from exc
        err = self._reap()
        if rc != 0:
            raise FfmpegError(self.path, f"ffmpeg exited with status {rc}", cmd=self.cmd, stderr=err)

    def _discard_stdin(self) -> None:
        """Close stdin of an ffmpeg that has exited, dropping what is still buffered."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            log.debug("%s: dropped the bytes ffmpeg did not read before it exited", self.path)

    def abort(self) -> None:
        """Kill ffmpeg (whatever it wrote is the caller's to remove)."""
        self._proc.kill()
        self._proc.wait()
        self._discard_stdin()
        self._reap()



def encoder_options(
    encoder: Encoder, *, gop: int, crf: int = 23, preset: str = "veryfast", bframes: int | None = None
) -> dict[str, str]:
    """ffmpeg-python output options for ``encoder`` with a fixed GOP (keyframe every ``gop`` frames, no scene cuts)."""
    if encoder == "libx264":
        opts = {"c:v": "libx264", "preset": preset, "crf": str(crf), "g": str(gop), "keyint_min": str(gop),
                "sc_threshold": "0", "pix_fmt": "yuv420p"}  # fmt: skip
        if bframes is not None:
            opts["bf"] = str(bframes)
        return opts
    if encoder == "libx265":
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error"
        if bframes is not None:
            params += f":bframes={bframes}"
        return {"c:v": "libx265", "preset": preset, "crf": str(crf), "x265-params": params, "pix_fmt": "yuv420p"}
    if encoder == "mpeg4":
        return {"c:v": "mpeg4", "g": str(gop), "q:v": "5", "pix_fmt": "yuv420p"}
    if encoder == "mjpeg":
        return {"c:v": "mjpeg", "q:v": "5", "pix_fmt": "yuvj420p"}
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
    extra: Mapping[str, str | None] | None = None,
) -> Path:
    """Encode RGB uint8 frames (all the same HxWx3 shape) to ``out`` at constant ``fps``.

    The container follows the suffix (``.mp4``, ``.mkv``, ``.h264``/``.hevc`` raw streams, ``.avi``).
    ``extra``: more output options (ffmpeg-python keywords, e.g. ``{"vf": "...", "an": None}``);
    they override the encoder's.
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
    opts = {**encoder_options(encoder, gop=gop, crf=crf, preset=preset, bframes=bframes), **(extra or {})}
    stream = ffmpeg.input("-", f="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=repr(float(fps))).output(str(out), **opts)
    run(stream, path=out, input_bytes=data)
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
    extra: Mapping[str, str | None] | None = None,
) -> Path:
    """Encode ffmpeg's ``testsrc2`` pattern (``size`` = (width, height)) for ``seconds``; ``extra`` as in :func:`encode_frames`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    opts = {"t": repr(float(seconds)), **encoder_options(encoder, gop=gop, crf=crf, preset=preset), **(extra or {})}
    run(ffmpeg.input(f"testsrc2=size={w}x{h}:rate={fps}", f="lavfi").output(str(out), **opts), path=out)
    return out
