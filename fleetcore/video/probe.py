"""Probe a camera file with PyAV: container, codec, geometry, frame count, keyframes, seek mode.

Any video codec the bundled FFmpeg decodes is accepted; there is no codec list. Frame counting
and keyframe discovery demux packets only (no decoding). A full probe then *proves* the file
decodes: it decodes the first frames, and the frames from the last keyframe to the end, reached
the way extraction will reach frames (the file's seek mode, :data:`SEEK_MODES`, see
:class:`VideoInfo`); where nothing but decoding from the start reaches the end
(``seek == "decode"``) the whole file is decoded once. Every failure is a
:class:`fleetcore.errors.VideoError` with one of the codes in :data:`ERROR_CODES`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import av
import av.error
import numpy as np

from fleetcore.errors import VideoError
from fleetcore.store.fs import DigestReader, file_size, is_local, open_input_file, resolve
from fleetcore.video.rawseek import SplicedFile, leading_pictures, parameter_sets

log = logging.getLogger(__name__)

RAW_FORMATS = ("h264", "hevc")  # PyAV format names of raw Annex-B elementary streams
#: Containers that store decode times only (AVI): FFmpeg's packet PTS are guesses that B-frames
#: reorder wrongly. Their frames are timed by the packets' DTS (one frame per packet) in the
#: decoder's output order, like raw streams.
DTS_FORMATS = ("avi",)
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
_FIRST_FRAMES = 3  # frames decoded from the start of a file to prove it decodes
SEEK_MODES = ("index", "byte", "decode")
_AVI_UNSET = 1 << 30  # the frame count FFmpeg's AVI muxer leaves in the header when it cannot rewrite it


@dataclass(frozen=True)
class VideoInfo:
    """What a video file contains. Times are relative to the file's PTS 0.

    For raw elementary streams (``raw=True``) there are no timestamps: ``fps`` is the
    stream's nominal rate (VUI timing, or 20 when absent), and ``keyframe_pts_ns`` are
    synthesised as ``frame_number / fps`` in decode order.
    ``keyframe_indices`` are the frame numbers (presentation order; decode order for raw
    streams) of the keyframes. With ``count_frames=False`` the frame count comes from the
    container header (or duration x fps), the keyframe tuples are empty and ``seek`` is None.
    ``seek`` is how sparse extraction reaches a frame (:data:`SEEK_MODES`): ``"index"``, the
    demuxer's seek (the container's index: MP4/MOV sample tables, Matroska Cues, AVI idx1);
    ``"byte"``, re-opening a raw H.264/HEVC stream at a keyframe's byte offset; ``"decode"``,
    decoding forward from the start of the file (no usable index).
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
    seek: str | None = None  # one of SEEK_MODES; None when probed with count_frames=False


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
    open_gop: bool = False  # raw H.264/HEVC: frames a decoder starting at a keyframe drops (see rawseek.leading_pictures)
    sha256: str | None = None  # the file's digest, taken by the same pass that demuxed it


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


def _looks_like_container(path: str) -> str | None:
    with open_input_file(path) as f:
        head = f.read(64)
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return "MP4/QuickTime"
    if head.startswith(_EBML_MAGIC):
        return "Matroska/WebM"
    if head.startswith(_ANNEXB):
        return "Annex-B elementary stream"
    return None


class _RemoteInput:
    """A container opened over a ranged object-store file: closing it closes the file too."""

    def __init__(self, container: av.container.InputContainer, f: Any) -> None:
        self._c, self._f = container, f

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)

    def close(self) -> None:
        try:
            self._c.close()
        finally:
            self._f.close()

    def __enter__(self) -> "_RemoteInput":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_input(path: str | os.PathLike[str], *, source: Any = None) -> av.container.InputContainer:
    """Open a media file (a local path, or a URI read by byte ranges: :func:`fleetcore.store.fs.open_input_file`)
    with PyAV, turning failures into VideoError (missing/empty/not media/truncated). ``source``: a
    file object over the same bytes to read through instead (the caller closes it)."""
    spath = os.fspath(path)
    size = file_size(spath)
    if size is None:
        raise VideoError(spath, "file does not exist; expected a video file", code="video_missing")
    if size == 0:
        raise VideoError(spath, "file is empty (0 bytes); expected a video file", code="video_empty")
    f = None
    try:
        if source is not None:
            return av.open(source, mode="r")
        if is_local(spath):
            return av.open(resolve(spath)[1], mode="r")
        f = open_input_file(spath)
        return _RemoteInput(av.open(f, mode="r"), f)  # type: ignore[return-value]
    except av.error.FFmpegError as exc:
        if f is not None:
            f.close()
        kind = _looks_like_container(spath)
        if kind is not None:
            raise VideoError(spath, f"starts like {kind} but cannot be opened ({exc.strerror or exc}); the file is probably truncated "
                "(e.g. an interrupted upload that lost the MP4 'moov' index)", code="video_truncated") from exc
        raise VideoError(spath, f"not a media file FFmpeg recognises ({exc.strerror or exc}); expected a video file", code="video_not_media") from exc


def codec_name(stream: av.video.stream.VideoStream) -> str:
    """The codec's FFmpeg name (``h264``, ``hevc``, ``av1`` ...), not the decoder's (``libdav1d``)."""
    codec = stream.codec_context.codec
    return str(getattr(codec, "canonical_name", None) or codec.name)


def select_video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The first real video stream (not cover art); VideoError(video_unsupported_codec) when FFmpeg has no decoder for it."""
    fmt = container.format.name
    videos = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
    if fmt.endswith("_pipe") or fmt == "image2":
        raise VideoError(path, f"is a still image ({fmt.removesuffix('_pipe')}), not a video; expected a video stream", code="video_no_stream")
    if not videos:
        others = ", ".join(f"{s.type} ({s.codec_context.name if s.codec_context else 'unknown codec'})" for s in container.streams) or "none"
        raise VideoError(path, f"has no video stream (streams: {others}); expected a video stream", code="video_no_stream")
    stream = videos[0]
    if stream.codec_context is None:
        raise VideoError(path, f"video stream {stream.index} ({fmt}) uses a codec the bundled FFmpeg cannot decode; "
                         "expected a codec FFmpeg decodes (H.264, HEVC, AV1, VP9, MPEG-4, MJPEG ...)", code="video_unsupported_codec")
    return stream


def is_raw_stream(container: av.container.InputContainer) -> bool:
    return container.format.name in RAW_FORMATS


def is_dts_timed(container: av.container.InputContainer) -> bool:
    """True for containers whose frames are timed by DTS in output order (:data:`DTS_FORMATS`)."""
    return container.format.name in DTS_FORMATS


def packet_time(pkt: av.Packet, dts_timed: bool) -> int | None:
    """The timestamp the frame index uses for a packet: its DTS in :data:`DTS_FORMATS`, else its PTS (DTS when absent)."""
    if dts_timed:
        return pkt.dts if pkt.dts is not None else pkt.pts
    return pkt.pts if pkt.pts is not None else pkt.dts


def scan_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: str) -> PacketScan:
    """Demux (no decode) every packet of ``stream``. Raises VideoError(video_truncated) on a demux error."""
    raw = is_raw_stream(container)
    dts_timed = is_dts_timed(container)
    codec = codec_name(stream)
    open_gop = False
    pts: list[int] = []
    keys: list[bool] = []
    pos: list[int] = []
    size: list[int] = []
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:  # flush packet at the end
                continue
            if not raw:
                t = packet_time(pkt, dts_timed)
                if t is None:
                    raise VideoError(path, f"packet {len(pts)} has neither PTS nor DTS; expected timestamps in a container file", code="video_no_timestamps")
                pts.append(int(t))
            keys.append(bool(pkt.is_keyframe))
            if raw and not open_gop and (codec == "hevc" or (codec == "h264" and keys[-1])):
                open_gop = leading_pictures(bytes(pkt), "hevc" if codec == "hevc" else "h264", keyframe=keys[-1])
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
        open_gop=open_gop,
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


def _undiscarded(pkt: av.Packet) -> av.Packet:
    """A decodable copy of a packet the demuxer flagged *discard*.

    MP4/MOV edit lists that start after the first frames (negative start PTS, B-frame delay,
    ``-ss`` stream copies) make FFmpeg flag the leading packets discard, and the decoder then
    drops their frames. They are real frames with (negative) timestamps and are in the frame
    index, so they are decoded like any other.
    """
    q = av.Packet(bytes(pkt))
    q.pts, q.dts, q.time_base = pkt.pts, pkt.dts, pkt.time_base
    q.is_keyframe = pkt.is_keyframe
    return q


def decode_packet(stream: av.video.stream.VideoStream, pkt: av.Packet) -> list[Any]:
    """Frames the decoder returns for one demuxed packet (the empty flush packet drains it); packets
    flagged discard are decoded too (see :func:`_undiscarded`)."""
    if pkt.size and pkt.is_discard:
        return list(stream.codec_context.decode(_undiscarded(pkt)))
    return list(pkt.decode())


def frame_time(frame: Any) -> int | None:
    """A decoded frame's presentation time in stream units (its PTS, else the decoder's best guess)."""
    if frame.pts is not None:
        return int(frame.pts)
    t = getattr(frame, "dts", None)
    return None if t is None else int(t)


def _check_first_frames(path: str, n_frames: int) -> None:
    """Decode the first ``n_frames`` frames; raise VideoError(video_undecodable) if none comes out."""
    with open_input(path) as c:
        s = select_video_stream(c, path)
        got = 0
        n = 0
        try:
            for pkt in c.demux(s):
                n += 1
                got += len(decode_packet(s, pkt))
                if got >= n_frames or n >= _FIRST_FRAME_PACKET_LIMIT:
                    break
        except av.error.FFmpegError as exc:
            raise VideoError(path, f"the first frame cannot be decoded ({exc.strerror or exc})", code="video_undecodable") from exc
        if got == 0:
            raise VideoError(path, f"no frame could be decoded from the first {n} packets; the {codec_name(s)} bitstream is corrupt", code="video_undecodable")


def _decode_rest(c: av.container.InputContainer, s: av.video.stream.VideoStream) -> tuple[int, int | None]:
    """Decode from the container's position to the end: (frames, largest presentation time)."""
    count, last = 0, None
    for pkt in c.demux(s):
        for fr in decode_packet(s, pkt):
            count += 1
            t = frame_time(fr)
            if t is not None and (last is None or t > last):
                last = t
    return count, last


def _last_frames_by_index(path: str, key_pts: int, end_pts: int, expected: int) -> bool:
    """Seek to the last keyframe with the demuxer; True when it lands there and decoding reaches the
    last frame (in :data:`DTS_FORMATS`: produces the ``expected`` frames from the keyframe on)."""
    with open_input(path) as c:
        s = select_video_stream(c, path)
        dts_timed = is_dts_timed(c)
        try:
            c.seek(key_pts, stream=s, backward=True, any_frame=False)
        except (av.error.FFmpegError, ValueError) as exc:
            log.debug("%s: the demuxer cannot seek (%s)", path, exc)
            return False
        first = next((p for p in c.demux(s) if p.size), None)
        if first is None or packet_time(first, dts_timed) != key_pts:
            return False
        frames = decode_packet(s, first)
        times = [t for fr in frames if (t := frame_time(fr)) is not None]
        rest, last = _decode_rest(c, s)
        if dts_timed:
            return len(frames) + rest == expected
        last = max([*times, *([] if last is None else [last])], default=None)
        return len(frames) + rest > 0 and last == end_pts


def _last_frames_by_byte(path: str, fmt: str, codec: str, offset: int, expected: int) -> bool:
    """Re-open a raw stream at the last keyframe's byte offset; True when the frames from there decode."""
    with open_input_file(path) as f:
        head = f.read(min(offset, 1 << 22)) if offset > 0 else b""
    header = parameter_sets(head, "hevc" if codec == "hevc" else "h264") if head else b""
    if offset > 0 and not header:
        return False
    spliced = SplicedFile(path, offset, header)
    try:
        with av.open(spliced, mode="r", format=fmt) as c:
            s = select_video_stream(c, path)
            count, _ = _decode_rest(c, s)
    except av.error.FFmpegError as exc:
        log.debug("%s: cannot decode from byte %d (%s)", path, offset, exc)
        return False
    finally:
        spliced.close()
    return count == expected


def _check_whole_file(path: str, n: int, end_pts: int | None) -> None:
    """Decode every frame; raise VideoError(video_undecodable) when the decoder stops short."""
    with open_input(path) as c:
        s = select_video_stream(c, path)
        try:
            count, last = _decode_rest(c, s)
        except av.error.FFmpegError as exc:
            raise VideoError(path, f"decoding stops with an error ({exc.strerror or exc}); the {codec_name(s)} bitstream is corrupt", code="video_undecodable") from exc
    if end_pts is None:
        if count != n:
            raise VideoError(path, f"the decoder produced {count} frames from {n} packets; the stream is corrupt", code="video_undecodable")
    elif last != end_pts:
        raise VideoError(path, f"decoding from the start reaches PTS {last}, not the last frame's PTS {end_pts}; the file is corrupt", code="video_undecodable")


def _prove_decodes(path: str, raw: bool, fmt: str, codec: str, scan: PacketScan) -> str:
    """Decode the first frames and the frames from the last keyframe to the end; return the seek mode.

    The last keyframe is reached the way extraction will reach frames (demuxer seek for
    containers, byte offset for raw H.264/HEVC); when that fails, decoding from the start must
    reach the end instead and the mode is ``"decode"``.
    """
    n = len(scan.is_key)
    _check_first_frames(path, min(_FIRST_FRAMES, n))
    keys = np.flatnonzero(scan.is_key)
    k = int(keys[-1]) if len(keys) else 0
    if raw:
        if codec in RAW_FORMATS and not scan.open_gop and len(scan.pos) and bool(np.all(scan.pos >= 0)):
            if k == 0 or _last_frames_by_byte(path, fmt, codec, int(scan.pos[k]), n - k):
                if k == 0:
                    _check_whole_file(path, n, None)
                return "byte"
        _check_whole_file(path, n, None)
        return "decode"
    assert scan.pts is not None
    end_pts = None if fmt in DTS_FORMATS else int(scan.pts.max())
    if k == 0:
        _check_whole_file(path, n, end_pts)
        return "index"
    try:
        if _last_frames_by_index(path, int(scan.pts[k]), int(scan.pts.max()), n - k):
            return "index"
    except av.error.FFmpegError as exc:
        log.debug("%s: decoding after a seek failed (%s)", path, exc)
    log.info("%s: the demuxer cannot seek to keyframes exactly; frames are reached by decoding from the start", path)
    _check_whole_file(path, n, end_pts)
    return "decode"


def probe_with_scan(path: str | os.PathLike[str], *, count_frames: bool = True) -> tuple[VideoInfo, PacketScan | None]:
    """Like :func:`probe_video`, also returning the packet scan (None with ``count_frames=False``)."""
    spath = os.fspath(path)
    reader = None
    if count_frames:  # the pass that demuxes every packet also takes the file's digest
        size = file_size(spath)
        if size:
            reader = DigestReader(open_input_file(spath), size, name=spath)
    try:
        info, scan = _probe(spath, count_frames=count_frames, reader=reader)
        if scan is not None and reader is not None:
            scan = replace(scan, sha256=reader.hexdigest())
        return info, scan
    finally:
        if reader is not None:
            reader.close()


def _probe(spath: str, *, count_frames: bool, reader: DigestReader | None) -> tuple[VideoInfo, PacketScan | None]:
    with open_input(spath, source=reader) as c:
        stream = select_video_stream(c, spath)
        raw = is_raw_stream(c)
        codec = codec_name(stream)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        fmt = c.format.name
        declared_frames = int(stream.frames or 0)
        declared_dur = None if raw else _declared_duration_s(c, stream)
        nominal = stream.guessed_rate or stream.average_rate or stream.base_rate
        nominal_fps = float(nominal) if nominal else 0.0
        scan = scan_packets(c, stream, spath) if count_frames else None
        sindex = int(stream.index)
        tb = Fraction(stream.time_base.numerator, stream.time_base.denominator) if stream.time_base else None
    if fmt == "avi":
        # AVI headers count frames in the stream's time base (not frames) and hold placeholders
        # when the muxer could not rewrite them (written to a pipe): trust only the packets.
        declared_dur = None if declared_frames >= _AVI_UNSET else declared_dur
        declared_frames = 0
    if width <= 0 or height <= 0:
        raise VideoError(spath, f"stream reports frame size {width}x{height}; expected a positive size", code="video_undecodable")

    if scan is None:
        _check_first_frames(spath, 1)
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
        seek = _prove_decodes(spath, True, fmt, codec, scan)
        fps = nominal_fps or _DEFAULT_RAW_FPS
        kidx = tuple(int(i) for i in np.flatnonzero(scan.is_key))
        kpts = tuple(int(round(i * 1e9 / fps)) for i in kidx)
        info = VideoInfo(spath, fmt, codec, width, height, fps, n / fps, n, kpts, sindex, False, True, kidx, None, seek)
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
    seek = _prove_decodes(spath, False, fmt, codec, scan)
    key_rank = np.empty(n, dtype=np.int64)
    key_rank[order] = np.arange(n)
    kidx = tuple(sorted(int(key_rank[i]) for i in np.flatnonzero(scan.is_key)))
    kpts = tuple(pts_to_ns(int(spts[i]), tb) for i in kidx)
    info = VideoInfo(spath, fmt, codec, width, height, float(fps), duration, n, kpts, sindex, vfr, False, kidx, tb, seek)
    return info, scan


def probe_video(path: str | os.PathLike[str], *, count_frames: bool = True) -> VideoInfo:
    """Probe ``path``: container, codec (any FFmpeg decodes), size, average fps, duration, frames,
    keyframes and seek mode, after proving the file decodes (see the module docstring).

    Raises VideoError with code video_missing, video_empty, video_not_media, video_truncated,
    video_no_stream, video_unsupported_codec, video_undecodable, video_no_frames or
    video_no_timestamps.
    """
    return probe_with_scan(path, count_frames=count_frames)[0]
