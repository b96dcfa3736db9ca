"""Probe a camera file with PyAV: container, codec, geometry, frame count, keyframes.

Frame counting and keyframe discovery demux packets only (no decoding), so probing an
hour of video takes a fraction of a second. Exactly one frame is decoded, to prove that
the stream is decodable. Every failure is a :class:`fleetcore.errors.VideoError` with one of
the codes in :data:`ERROR_CODES`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from fleetcore.errors import VideoError

log = logging.getLogger(__name__)

SUPPORTED_CODECS = ("h264", "hevc")
RAW_FORMATS = ("h264", "hevc")  # PyAV format names of raw Annex-B elementary streams
ERROR_CODES = (
    "video_missing",
    "video_empty",
    "video_not_media",
    "video_truncated",
    "video_no_stream",
    "video_unsupported_codec",
    "video_undecodable",
    "video_no_frames",
    "video_no_timestamps",
)
# Leading bytes that say "this is a media container" even when FFmpeg cannot open it.
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"styp", b"pnot")
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_ANNEXB = (b"\x00\x00\x00\x01", b"\x00\x00\x01")
_DEFAULT_RAW_FPS = 20.0  # only when a raw stream carries no timing info at all
_FIRST_FRAME_PACKET_LIMIT = 600  # packets fed to the decoder before declaring the stream undecodable


@dataclass(frozen=True)
class VideoInfo:
    """What a video file contains. Times are relative to the file's PTS 0.

    For raw elementary streams (``raw=True``) there are no timestamps: ``fps`` is the
    stream's nominal rate (VUI timing, or 20 when absent), and ``keyframe_pts_ns`` are
    synthesised as ``frame_number / fps`` in decode order.
    ``keyframe_indices`` are the frame numbers (presentation order; decode order for raw
    streams) of the keyframes. With ``count_frames=False`` the frame count comes from the
    container header (or duration x fps) and the keyframe tuples are empty.
    """

    path: str
    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int
    keyframe_pts_ns: tuple[int, ...]
    stream_index: int
    vfr: bool
    raw: bool = False
    keyframe_indices: tuple[int, ...] = ()
    time_base: Fraction | None = None


@dataclass(frozen=True)
class PacketScan:
    """The video packets of one file in demux (decode) order.

    ``pts`` is in ``time_base`` units (None for raw streams, which carry no timestamps);
    ``pos`` is the byte offset (-1 where unknown).
    """

    pts: np.ndarray | None  # int64
    is_key: np.ndarray  # bool
    pos: np.ndarray  # int64
    size: np.ndarray  # int32
    time_base: Fraction | None


def pts_to_ns(pts: int, time_base: Fraction) -> int:
    """Exact conversion of a PTS to integer nanoseconds (round half up)."""
    num = pts * time_base.numerator * 1_000_000_000
    den = time_base.denominator
    return (2 * num + den) // (2 * den)


def ns_to_pts(ns: int, time_base: Fraction) -> int:
    """Inverse of :func:`pts_to_ns` (nearest PTS)."""
    num = ns * time_base.denominator
    den = time_base.numerator * 1_000_000_000
    return (2 * num + den) // (2 * den)


def _looks_like_container(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(64)
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return "MP4/QuickTime"
    if head.startswith(_EBML_MAGIC):
        return "Matroska/WebM"
    if head.startswith(_ANNEXB):
        return "Annex-B elementary stream"
    return None


def open_input(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """Open a media file with PyAV, turning failures into VideoError (missing/empty/not media/truncated)."""
    p = Path(path)
    if not p.is_file():
        raise VideoError(str(p), "file does not exist; expected a video file", code="video_missing")
    if p.stat().st_size == 0:
        raise VideoError(str(p), "file is empty (0 bytes); expected an H.264/HEVC video", code="video_empty")
    try:
        return av.open(str(p), mode="r")
    except av.error.FFmpegError as exc:
        kind = _looks_like_container(p)
        if kind is not None:
            raise VideoError(str(p), f"starts like {kind} but cannot be opened ({exc.strerror or exc}); the file is probably truncated "
                "(e.g. an interrupted upload that lost the MP4 'moov' index)", code="video_truncated") from exc
        raise VideoError(str(p), f"not a media file FFmpeg recognises ({exc.strerror or exc}); expected an H.264/HEVC video", code="video_not_media") from exc


def select_video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The first real video stream (not cover art), checked for a supported codec."""
    fmt = container.format.name
    videos = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
    if fmt.endswith("_pipe") or fmt == "image2":
        raise VideoError(path, f"is a still image ({fmt.removesuffix('_pipe')}), not a video; expected an H.264/HEVC video stream", code="video_no_stream")
    if not videos:
        others = ", ".join(f"{s.type} ({s.codec_context.name})" for s in container.streams) or "none"
        raise VideoError(path, f"has no video stream (streams: {others}); expected an H.264/HEVC video stream", code="video_no_stream")
    stream = videos[0]
    codec = stream.codec_context.name
    if codec not in SUPPORTED_CODECS:
        raise VideoError(path, f"video codec is {codec!r}; expected one of {list(SUPPORTED_CODECS)}", code="video_unsupported_codec")
    return stream


def is_raw_stream(container: av.container.InputContainer) -> bool:
    return container.format.name in RAW_FORMATS


def scan_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: str) -> PacketScan:
    """Demux (no decode) every packet of ``stream``. Raises VideoError(video_truncated) on a demux error."""
    raw = is_raw_stream(container)
    pts: list[int] = []
    keys: list[bool] = []
    pos: list[int] = []
    size: list[int] = []
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:  # flush packet at the end
                continue
            if not raw:
                t = pkt.pts if pkt.pts is not None else pkt.dts
                if t is None:
                    raise VideoError(path, f"packet {len(pts)} has neither PTS nor DTS; expected timestamps in a container file", code="video_no_timestamps")
                pts.append(int(t))
            keys.append(bool(pkt.is_keyframe))
            pos.append(int(pkt.pos) if pkt.pos is not None and pkt.pos >= 0 else -1)
            size.append(int(pkt.size))
    except av.error.FFmpegError as exc:
        raise VideoError(path, f"demuxing failed after {len(keys)} packets ({exc.strerror or exc}); the file is probably truncated or corrupt", code="video_truncated") from exc
    return PacketScan(
        pts=None if raw else np.asarray(pts, dtype=np.int64),
        is_key=np.asarray(keys, dtype=bool),
        pos=np.asarray(pos, dtype=np.int64),
        size=np.asarray(size, dtype=np.int32),
        time_base=None if raw else Fraction(stream.time_base.numerator, stream.time_base.denominator),
    )


def _declared_duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")  # Matroska per-track tag
    if tag:
        try:
            hh, mm, ss = tag.split(":")
            return int(hh) * 3600 + int(mm) * 60 + float(ss)
        except ValueError:
            log.debug("%s: unparseable DURATION tag %r", container.name, tag)
    if container.duration is not None and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def _check_first_frame(path: str) -> None:
    """Decode the first frame; raise VideoError(video_undecodable) if there is none."""
    with open_input(path) as c:
        s = select_video_stream(c, path)
        n = 0
        try:
            for pkt in c.demux(s):
                n += 1
                for _frame in pkt.decode():
                    return
                if n >= _FIRST_FRAME_PACKET_LIMIT:
                    break
        except av.error.FFmpegError as exc:
            raise VideoError(path, f"the first frame cannot be decoded ({exc.strerror or exc})", code="video_undecodable") from exc
    raise VideoError(path, f"no frame could be decoded from the first {n} packets; the {s.codec_context.name} bitstream is corrupt", code="video_undecodable")


def probe_with_scan(path: str | os.PathLike[str], *, count_frames: bool = True) -> tuple[VideoInfo, PacketScan | None]:
    """Like :func:`probe_video`, also returning the packet scan (None with ``count_frames=False``)."""
    spath = str(path)
    with open_input(spath) as c:
        stream = select_video_stream(c, spath)
        raw = is_raw_stream(c)
        codec = stream.codec_context.name
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        fmt = c.format.name
        declared_frames = int(stream.frames or 0)
        declared_dur = None if raw else _declared_duration_s(c, stream)
        nominal = stream.guessed_rate or stream.average_rate or stream.base_rate
        nominal_fps = float(nominal) if nominal else 0.0
        scan = scan_packets(c, stream, spath) if count_frames else None
        sindex = int(stream.index)
        tb = Fraction(stream.time_base.numerator, stream.time_base.denominator) if stream.time_base else None
    _check_first_frame(spath)
    if width <= 0 or height <= 0:
        raise VideoError(spath, f"stream reports frame size {width}x{height}; expected a positive size", code="video_undecodable")

    if scan is None:
        fps = nominal_fps or _DEFAULT_RAW_FPS
        duration = declared_dur if declared_dur is not None else (declared_frames / fps if declared_frames else 0.0)
        frames = declared_frames or int(round(duration * fps))
        info = VideoInfo(spath, fmt, codec, width, height, fps, float(duration), frames, (), sindex, False, raw, (), None if raw else tb)
        return info, None

    n = len(scan.is_key)
    if n == 0:
        if declared_frames > 0 or (declared_dur or 0) > 0:
            raise VideoError(spath, "container declares video but holds no video packets; the file is probably truncated", code="video_truncated")
        raise VideoError(spath, "video stream has no frames; expected at least one", code="video_no_frames")

    if raw:
        fps = nominal_fps or _DEFAULT_RAW_FPS
        kidx = tuple(int(i) for i in np.flatnonzero(scan.is_key))
        kpts = tuple(int(round(i * 1e9 / fps)) for i in kidx)
        info = VideoInfo(spath, fmt, codec, width, height, fps, n / fps, n, kpts, sindex, False, True, kidx, None)
        return info, scan

    assert scan.pts is not None and tb is not None
    order = np.argsort(scan.pts, kind="stable")
    spts = scan.pts[order]
    deltas = np.diff(spts)
    if n > 1 and spts[-1] > spts[0]:
        fps = float(Fraction(n - 1) / (int(spts[-1] - spts[0]) * tb))
        last_dur = float(np.median(deltas)) * float(tb)
    else:
        fps = nominal_fps or 0.0
        last_dur = 1.0 / fps if fps else 0.0
    duration = float(int(spts[-1] - spts[0]) * tb) + last_dur if n > 1 else last_dur
    vfr = False
    if len(deltas) >= 2:
        pos = deltas[deltas > 0]
        if len(pos) and (pos.max() - pos.min()) > 0.1 * float(np.median(pos)) + 1:
            vfr = True

    # Truncation: packets stop early versus what the container declares.
    if declared_frames > 0 and n < declared_frames:
        raise VideoError(spath, f"holds {n} video packets but the container declares {declared_frames}; the file is truncated", code="video_truncated")
    if declared_dur is not None and declared_dur > 0:
        end_s = float(int(spts[-1]) * tb) + last_dur
        slack = max(2 * last_dur, 0.25)
        if end_s + slack < declared_dur:
            raise VideoError(spath, f"video packets end at {end_s:.3f} s but the container declares {declared_dur:.3f} s; the file is truncated", code="video_truncated")
    key_rank = np.empty(n, dtype=np.int64)
    key_rank[order] = np.arange(n)
    kidx = tuple(sorted(int(key_rank[i]) for i in np.flatnonzero(scan.is_key)))
    kpts = tuple(pts_to_ns(int(spts[i]), tb) for i in kidx)
    info = VideoInfo(spath, fmt, codec, width, height, float(fps), duration, n, kpts, sindex, vfr, False, kidx, tb)
    return info, scan


def probe_video(path: str | os.PathLike[str], *, count_frames: bool = True) -> VideoInfo:
    """Probe ``path``: container, codec (h264/hevc only), size, average fps, duration, frames, keyframes.

    Raises VideoError with code video_missing, video_empty, video_not_media, video_truncated,
    video_no_stream, video_unsupported_codec, video_undecodable, video_no_frames or
    video_no_timestamps.
    """
    return probe_with_scan(path, count_frames=count_frames)[0]
