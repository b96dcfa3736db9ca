"""Import an MCAP recording (ROS 2 bag, Foxglove recording) into one landing drive.

Supported topics (schema names; ROS 1 style ``pkg/Type`` is accepted for ``pkg/msg/Type``):

- video: ``foxglove.CompressedVideo`` (protobuf or JSON) / ``foxglove_msgs/msg/CompressedVideo`` (ROS 2 CDR),
  format ``h264`` or ``h265``, one Annex-B access unit per message → a raw ``.h264`` / ``.hevc`` stream
  plus its frame times (one camera per topic);
- images: ``sensor_msgs/msg/CompressedImage`` and ``foxglove.CompressedImage`` (JPEG / PNG) → re-encoded
  to raw H.264 streams (segments of at most ``IMAGE_SEGMENT_FRAMES`` frames) with each frame's real time;
- ``sensor_msgs/msg/NavSatFix`` / ``foxglove.LocationFix`` → lat/lon (and heading, and speed when no
  velocity topic exists);
- ``sensor_msgs/msg/Imu`` → yaw rate (``angular_velocity.z``), accel lon/lat (``linear_acceleration.x/y``);
- ``geometry_msgs/msg/TwistStamped``, ``geometry_msgs/msg/TwistWithCovarianceStamped``, ``nav_msgs/msg/Odometry``
  → speed (``hypot(linear.x, linear.y)``).

Clock: the vehicle clock is MCAP's ``log_time`` (UNIX ns), so ``utc_offset_ns`` is 0. A topic's message
stamps (``header.stamp`` / ``timestamp``) are used instead when they are all set and stay within
``STAMP_TOLERANCE_NS`` of the log times (same clock, without the logging latency). Telemetry is resampled
onto a uniform grid (the fastest telemetry topic's rate, 1..100 Hz) spanning the speed samples.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fleetcore.errors import SourceImportError
from fleetcore.ingest.importers.common import (
    DriveRef,
    Series,
    check_ids,
    copy_into,
    default_drive_id,
    resample_all,
    save_npy,
    speed_heading_from_fixes,
    telemetry_table,
    uniform_grid,
    write_drive,
)
from fleetcore.landing.drives import CAMERA_RE
from fleetcore.video.rawseek import nal_type, nal_units, parameter_set_types, starts_decoding

log = logging.getLogger(__name__)

STAMP_TOLERANCE_NS = 10 * 1_000_000_000
IMAGE_SEGMENT_FRAMES = 600
MAX_RATE_HZ = 100.0

VIDEO, IMAGE, FIX, IMU, TWIST = "video", "image", "fix", "imu", "twist"
KINDS: dict[str, str] = {
    "foxglove.CompressedVideo": VIDEO,
    "foxglove_msgs/CompressedVideo": VIDEO,
    "sensor_msgs/CompressedImage": IMAGE,
    "foxglove.CompressedImage": IMAGE,
    "foxglove_msgs/CompressedImage": IMAGE,
    "sensor_msgs/NavSatFix": FIX,
    "foxglove.LocationFix": FIX,
    "foxglove_msgs/LocationFix": FIX,
    "sensor_msgs/Imu": IMU,
    "geometry_msgs/TwistStamped": TWIST,
    "geometry_msgs/TwistWithCovarianceStamped": TWIST,
    "nav_msgs/Odometry": TWIST,
}
VIDEO_FORMATS = {"h264": ("h264", ".h264"), "h265": ("hevc", ".hevc"), "hevc": ("hevc", ".hevc")}
GENERIC_TOPIC_PARTS = {"compressed", "image", "image_raw", "image_rect", "image_color", "video", "h264", "h265",
                       "hevc", "compressed_video", "camera", "jpeg"}  # fmt: skip


def kind_of_schema(name: str) -> str | None:
    return KINDS.get(name.replace("/msg/", "/"))


# --------------------------------------------------------------------------------------
# Field access across ROS 2 objects, protobuf messages and JSON dicts
# --------------------------------------------------------------------------------------
def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if obj is None:
            return None
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
    return obj


def _time_ns(obj: Any) -> int | None:
    """ROS 2 ``builtin_interfaces/Time`` (sec, nanosec), Foxglove JSON (sec, nsec) or protobuf Timestamp (seconds, nanos)."""
    if obj is None:
        return None
    for s, n in (("sec", "nanosec"), ("sec", "nsec"), ("seconds", "nanos")):
        sv, nv = _get(obj, s), _get(obj, n)
        if sv is not None and nv is not None:
            return int(sv) * 1_000_000_000 + int(nv)
    for s in ("sec", "seconds"):
        sv = _get(obj, s)
        if sv is not None:
            return int(sv) * 1_000_000_000
    return None


def _stamp(msg: Any) -> int | None:
    t = _time_ns(_get(msg, "header.stamp"))
    return t if t is not None else _time_ns(_get(msg, "timestamp"))


def _bytes(v: Any) -> bytes:
    if isinstance(v, str):  # Foxglove JSON encodes bytes as base64
        return base64.b64decode(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    return np.asarray(v, dtype=np.uint8).tobytes()


def _protobuf_decoder(schema: Any) -> Callable[[bytes], Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fds = descriptor_pb2.FileDescriptorSet.FromString(schema.data)
    pool = descriptor_pool.DescriptorPool()
    pending = list(fds.file)
    while pending:  # files after their dependencies, whatever order the set lists them in
        added = False
        for fd in list(pending):
            try:
                pool.Add(fd)
            except Exception:  # noqa: BLE001 - a missing dependency (the error type differs between backends)
                continue
            pending.remove(fd)
            added = True
        if not added:
            pool.Add(pending[0])  # raises with the reason
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(schema.name))
    return cls.FromString


def _decoder_for(schema: Any, channel: Any, path: str) -> Callable[[bytes], Any]:
    enc = channel.message_encoding
    try:
        if enc == "cdr" and schema is not None and schema.encoding == "ros2msg":
            from mcap_ros2.decoder import DecoderFactory

            dec = DecoderFactory().decoder_for(enc, schema)
            if dec is not None:
                return dec
        if enc == "protobuf" and schema is not None and schema.encoding == "protobuf":
            return _protobuf_decoder(schema)
    except Exception as exc:  # noqa: BLE001 - schema parsers raise anything on a bad definition
        raise SourceImportError(path, f"topic {channel.topic}: cannot read schema {schema.name!r} ({type(exc).__name__}: {exc})") from exc
    if enc == "json":
        return json.loads
    raise SourceImportError(path, f"topic {channel.topic}: cannot decode message encoding {enc!r} with schema encoding "
                                  f"{getattr(schema, 'encoding', None)!r} (expected ROS 2 CDR, protobuf or JSON)")


# --------------------------------------------------------------------------------------
# Annex-B streams (NAL parsing: fleetcore.video.rawseek)
# --------------------------------------------------------------------------------------
@dataclass
class VideoTrack:
    """Packets of one CompressedVideo topic, appended to a raw stream file as they arrive."""

    topic: str
    out: Path
    codec: str = ""
    suffix: str = ""
    times: list[int] = field(default_factory=list)
    stamps: list[int | None] = field(default_factory=list)
    skipped: int = 0
    started: bool = False
    params: dict[int, bytes] = field(default_factory=dict)
    _fh: Any = None

    def add(self, data: bytes, fmt: str, log_time: int, stamp: int | None, path: str) -> None:
        fmt = (fmt or "").strip().lower()
        if fmt not in VIDEO_FORMATS:
            raise SourceImportError(path, f"topic {self.topic}: video format {fmt!r} is not supported (expected h264 or h265)")
        codec, suffix = VIDEO_FORMATS[fmt]
        if self.codec and codec != self.codec:
            raise SourceImportError(path, f"topic {self.topic}: video format changes from {self.codec} to {codec}")
        self.codec, self.suffix = codec, suffix
        if not data:
            return
        if not (data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")):
            raise SourceImportError(path, f"topic {self.topic}: expected Annex-B {fmt} packets (start codes); "
                                          "length-prefixed (AVCC/HVCC) packets are not supported")
        if not self.started:  # only until the first keyframe: later packets are written as they come
            nals = [(s, e) for s, e in nal_units(data) if e > s]
            types = [nal_type(data[s], codec) for s, _ in nals]
            for (s, e), t in zip(nals, types):
                if t in parameter_set_types(codec):
                    self.params[t] = b"\x00\x00\x00\x01" + data[s:e]
            if not starts_decoding(types, codec):
                self.skipped += 1  # a decoder cannot start here
                return
            missing = [self.params[t] for t in sorted(self.params) if t not in types]
            data = b"".join(missing) + data
            self.started = True
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.out, "wb")  # noqa: SIM115 - closed in close()
        self._fh.write(data)
        self.times.append(log_time)
        self.stamps.append(stamp)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def count_frames(path: Path, fmt: str, *, source: str, topic: str) -> int:
    """Access units in a raw H.264 / HEVC stream (demuxed with PyAV, not decoded); errors name the MCAP file and topic."""
    import av

    try:
        with av.open(str(path), format=fmt) as c:
            return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    except (av.error.FFmpegError, IndexError) as exc:
        raise SourceImportError(source, f"topic {topic}: the packets do not form a {fmt} stream FFmpeg can read: {exc}") from exc


# --------------------------------------------------------------------------------------
# Compressed images → H.264 segments
# --------------------------------------------------------------------------------------
@dataclass
class ImageTrack:
    topic: str
    folder: Path
    pending: list[tuple[int, int | None, bytes]] = field(default_factory=list)
    segments: list[tuple[Path, list[int], list[int | None]]] = field(default_factory=list)
    shape: tuple[int, ...] | None = None

    def add(self, data: bytes, log_time: int, stamp: int | None, path: str) -> None:
        self.pending.append((log_time, stamp, data))
        if len(self.pending) >= IMAGE_SEGMENT_FRAMES:
            self.flush(path)

    def flush(self, path: str) -> None:
        import cv2

        from fleetcore.video.ffmpeg import encode_frames

        if not self.pending:
            return
        frames = []
        for _, _, data in self.pending:
            img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise SourceImportError(path, f"topic {self.topic}: a compressed image is not a JPEG/PNG image OpenCV can decode")
            if self.shape is not None and img.shape != self.shape:
                raise SourceImportError(path, f"topic {self.topic}: image size changes from {self.shape[1]}x{self.shape[0]} to {img.shape[1]}x{img.shape[0]}")
            self.shape = img.shape
            frames.append(img[:, :, ::-1])
        t = [lt for lt, _, _ in self.pending]
        span = (t[-1] - t[0]) / 1e9
        fps = (len(t) - 1) / span if len(t) > 1 and span > 0 else 10.0
        out = self.folder / f"{len(self.segments):03d}.h264"
        gop = max(1, round(fps))
        encode_frames(frames, out, fps=fps, gop=gop, bframes=0, extra={"vf": "pad=ceil(iw/2)*2:ceil(ih/2)*2"})
        self.segments.append((out, t, [s for _, s, _ in self.pending]))
        self.pending = []


# --------------------------------------------------------------------------------------
# The import
# --------------------------------------------------------------------------------------
def _pick_times(log_times: Sequence[int], stamps: Sequence[int | None]) -> np.ndarray:
    """The message stamps when all are set and on the log clock (within the tolerance), else the log times."""
    lt = np.asarray(log_times, dtype=np.int64)
    if lt.size and all(s is not None and s > 0 for s in stamps):
        st = np.asarray(stamps, dtype=np.int64)
        if np.all(np.abs(st - lt) <= STAMP_TOLERANCE_NS):
            return st
    return lt


def camera_names(topics: Sequence[str]) -> dict[str, str]:
    """Topic → camera name: the last topic part that is not generic (``/cam_front/compressed`` → ``cam_front``),
    lowercased and reduced to ``[a-z0-9_-]``; clashes take more of the topic, then a number."""

    def clean(s: str) -> str:
        s = re.sub(r"[^a-z0-9_\-]+", "-", s.lower()).strip("-_")
        return s[:32].rstrip("-_")

    out: dict[str, str] = {}
    taken: set[str] = set()
    for topic in topics:
        parts = [p for p in topic.split("/") if p]
        keep = [p for p in parts if p.lower() not in GENERIC_TOPIC_PARTS] or parts or ["cam"]
        cands = [clean(keep[-1]), clean("_".join(keep))]
        name = next((c for c in cands if c and CAMERA_RE.match(c) and c not in taken), None)
        if name is None:
            base = cands[0] if cands[0] and CAMERA_RE.match(cands[0]) else "cam"
            i = 1
            while (name := f"{base[:28]}-{i}") in taken:
                i += 1
        taken.add(name)
        out[topic] = name
    return out


@dataclass
class _Telemetry:
    log_times: list[int] = field(default_factory=list)
    stamps: list[int | None] = field(default_factory=list)
    values: list[tuple[float, ...]] = field(default_factory=list)


def _tel_values(kind: str, msg: Any) -> tuple[float, ...] | None:
    def f(v: Any) -> float:
        return float(v) if v is not None else math.nan

    if kind == FIX:
        status = _get(msg, "status.status")
        if status is not None and int(status) < 0:  # STATUS_NO_FIX
            return None
        return f(_get(msg, "latitude")), f(_get(msg, "longitude"))
    if kind == IMU:
        return f(_get(msg, "angular_velocity.z")), f(_get(msg, "linear_acceleration.x")), f(_get(msg, "linear_acceleration.y"))
    lin = _get(msg, "twist.twist.linear")  # Odometry / TwistWithCovarianceStamped
    if lin is None:
        lin = _get(msg, "twist.linear")
    y = _get(lin, "y")
    return (math.hypot(f(_get(lin, "x")), float(y) if y is not None else 0.0),)


def _median_rate(t: np.ndarray) -> float:
    if t.size < 2:
        return 0.0
    d = float(np.median(np.diff(np.sort(t))))
    return 1e9 / d if d > 0 else 0.0


MAGIC = b"\x89MCAP0\r\n"


class _Source:
    """Messages of one MCAP file: through its summary and chunk indexes, or, when the end of the file is
    damaged (a recording cut off: no valid footer), read from the start up to the damage."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.src = str(path)
        self.damage: str | None = None  # set when the file is read sequentially up to a damaged record

    def channels(self) -> list[tuple[Any, Any]]:
        """(channel, schema) of every channel, from the summary or (without one) a scan of the file."""
        from mcap.reader import SeekingReader

        with open(self.path, "rb") as fh:
            head = fh.read(len(MAGIC))
            if head != MAGIC:
                raise SourceImportError(self.src, f"expected an MCAP file (magic {MAGIC!r}); it starts with {head!r}")
            fh.seek(0)
            try:
                reader = SeekingReader(fh)
                summary = reader.get_summary()
                if summary is not None:
                    return [(c, summary.schemas.get(c.schema_id)) for c in summary.channels.values()]
            except Exception as exc:  # noqa: BLE001 - a damaged footer surfaces as McapError, struct.error, ValueError ...
                self.damage = f"{type(exc).__name__}: {exc}"
        seen: dict[int, tuple[Any, Any]] = {}
        for schema, channel, _ in self._scan(None):
            seen.setdefault(channel.id, (channel, schema))
        return list(seen.values())

    def _scan(self, topics: list[str] | None) -> Iterator[tuple[Any, Any, Any]]:
        """Records in file order from the start; stops (and remembers why) at a damaged record."""
        from mcap.reader import NonSeekingReader

        with open(self.path, "rb") as fh:
            try:
                yield from NonSeekingReader(fh).iter_messages(topics=topics, log_time_order=False)  # yields as it reads
            except SourceImportError:
                raise
            except Exception as exc:  # noqa: BLE001 - truncated records raise McapError, zstd / lz4 errors ...
                self.damage = f"{type(exc).__name__}: {exc}"

    def messages(self, topics: list[str]) -> Iterator[tuple[Any, Any, Any]]:
        if self.damage is not None:
            yield from self._scan(topics)
            return
        from mcap.exceptions import McapError
        from mcap.reader import SeekingReader

        with open(self.path, "rb") as fh:
            try:
                yield from SeekingReader(fh).iter_messages(topics=topics)
            except McapError as exc:
                raise SourceImportError(self.src, f"the MCAP file is damaged: {exc}") from exc


def _wanted_topics(by_topic: dict[str, Any], topics: Iterable[str] | None, src: str, source: Any) -> dict[str, str]:
    """topic -> kind of the topics to import (``topics``: these, each checked; else every supported one)."""
    described = ", ".join(f"{t} ({s.name if s else 'no schema'})" for t, (c, s) in sorted(by_topic.items())) or "none"
    wanted: dict[str, str] = {}
    if topics is not None:
        for t in topics:
            if t not in by_topic:
                raise SourceImportError(src, f"topic {t!r} is not in the file; its topics: {described}")
            c, s = by_topic[t]
            kind = kind_of_schema(s.name) if s else None
            if kind is None:
                raise SourceImportError(src, f"topic {t} has an unsupported schema {s.name if s else None!r}; "
                                             f"supported: {', '.join(sorted(KINDS))}")
            wanted[t] = kind
    else:
        for t, (c, s) in sorted(by_topic.items()):
            kind = kind_of_schema(s.name) if s else None
            if kind is None:
                log.info("%s: skipping topic %s (schema %s is not supported)", src, t, s.name if s else None)
            else:
                wanted[t] = kind
    if not wanted:
        damaged = f" (the MCAP file is damaged: {source.damage})" if source.damage else ""
        raise SourceImportError(src, f"no supported topics (expected {', '.join(sorted(KINDS))}); the file has: {described}{damaged}")
    return wanted


def _read_messages(source: Any, wanted: dict[str, str], cams: dict[str, str], tmpd: Path, src: str
                   ) -> tuple[dict[str, "VideoTrack"], dict[str, "ImageTrack"], dict[str, "_Telemetry"]]:
    """One pass over the wanted topics' messages: video tracks, image tracks and telemetry records."""
    videos: dict[str, VideoTrack] = {}
    images: dict[str, ImageTrack] = {}
    tel: dict[str, _Telemetry] = {t: _Telemetry() for t, k in wanted.items() if k in (FIX, IMU, TWIST)}
    decoders: dict[int, Callable[[bytes], Any]] = {}
    try:
        for schema, channel, message in source.messages(list(wanted)):
            dec = decoders.get(channel.id)
            if dec is None:
                dec = decoders[channel.id] = _decoder_for(schema, channel, src)
            try:
                msg = dec(message.data)
            except Exception as exc:  # noqa: BLE001 - decoders raise anything on a bad payload
                raise SourceImportError(src, f"topic {channel.topic}: cannot decode a message ({type(exc).__name__}: {exc})") from exc
            kind = wanted[channel.topic]
            stamp = _stamp(msg)
            if kind == VIDEO:
                tr = videos.get(channel.topic)
                if tr is None:
                    tr = videos[channel.topic] = VideoTrack(channel.topic, tmpd / cams[channel.topic] / "000")
                tr.add(_bytes(_get(msg, "data") or b""), str(_get(msg, "format") or ""), message.log_time, stamp, src)
            elif kind == IMAGE:
                it = images.get(channel.topic)
                if it is None:
                    it = images[channel.topic] = ImageTrack(channel.topic, tmpd / cams[channel.topic])
                it.add(_bytes(_get(msg, "data") or b""), message.log_time, stamp, src)
            else:
                vals = _tel_values(kind, msg)
                if vals is not None:
                    rec = tel[channel.topic]
                    rec.log_times.append(message.log_time)
                    rec.stamps.append(stamp)
                    rec.values.append(vals)
        for it in images.values():
            it.flush(src)
    finally:
        for tr in videos.values():
            tr.close()
    return videos, images, tel


def _camera_files(videos: dict[str, "VideoTrack"], images: dict[str, "ImageTrack"], cams: dict[str, str], src: str
                  ) -> tuple[list[tuple[str, str, list[tuple[Path, np.ndarray, str]]]], list[int]]:
    """(camera name, codec, [(file, frame times, suffix)]) per camera, and each camera's first time."""
    camera_files: list[tuple[str, str, list[tuple[Path, np.ndarray, str]]]] = []
    first_times: list[int] = []
    for topic, tr in videos.items():
        if not tr.times:
            log.warning("%s: topic %s has no keyframe; camera skipped", src, topic)
            continue
        if tr.skipped:
            log.warning("%s: topic %s: %d packets before the first keyframe dropped", src, topic, tr.skipped)
        raw = tr.out.with_suffix(tr.suffix)
        tr.out.rename(raw)
        n = count_frames(raw, tr.codec, source=src, topic=topic)
        if n != len(tr.times):
            raise SourceImportError(src, f"topic {topic}: {len(tr.times)} messages but the stream holds {n} frames "
                                         "(each message must carry one whole frame)")
        ft = np.sort(_pick_times(tr.times, tr.stamps))
        camera_files.append((cams[topic], tr.codec, [(raw, ft, tr.suffix)]))
        first_times.append(int(ft[0]))
    for topic, it in images.items():
        files = []
        for seg, lt, st in it.segments:
            ft = _pick_times(lt, st)
            files.append((seg, ft, ".h264"))
            first_times.append(int(ft.min()))
        if files:
            camera_files.append((cams[topic], "h264", files))
    return camera_files, first_times


def import_mcap(
    path: Path,
    root: Path,
    *,
    vehicle_id: str,
    drive_id: str | None = None,
    topics: Iterable[str] | None = None,
    overwrite: bool = False,
) -> DriveRef:
    """Land one MCAP file as one drive: a camera per video / image topic, telemetry from the fix, IMU and
    velocity topics. ``topics``: only these (each must exist and have a supported schema); default: every
    supported topic (others are logged and skipped)."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise SourceImportError(src, "MCAP file not found")
    if path.stat().st_size == 0:
        raise SourceImportError(src, "expected an MCAP file; the file is empty")
    check_ids(vehicle_id, drive_id or "drive", src)  # before reading the file
    source = _Source(path)
    by_topic = {c.topic: (c, s) for c, s in source.channels()}
    wanted = _wanted_topics(by_topic, topics, src, source)
    cams = camera_names([t for t, k in wanted.items() if k in (VIDEO, IMAGE)])
    with tempfile.TemporaryDirectory(prefix="fleet-mcap-") as tmp:
        videos, images, tel = _read_messages(source, wanted, cams, Path(tmp), src)
        if source.damage is not None:
            log.warning("%s: the file is damaged (%s); imported the messages before the damage "
                        "(`mcap recover` may save more)", src, source.damage)
        camera_files, first_times = _camera_files(videos, images, cams, src)
        table, tel_notes = _telemetry(tel, wanted, src)
        if table is not None:
            first_times.append(int(table.column("t_ns")[0].as_py()))
        if not camera_files and table is None:
            raise SourceImportError(src, f"no camera frames and no telemetry with a speed or position in topics {sorted(wanted)}")
        if drive_id is None:
            drive_id = default_drive_id(vehicle_id, min(first_times))
        if min(first_times) < 10**18:
            log.warning("%s: times start at %d ns, before 2001: log_time is probably not UNIX time "
                        "(utc_offset_ns is 0 regardless)", src, min(first_times))

        def place(writer: Any) -> list[dict[str, Any]]:
            out = []
            for name, codec, files in camera_files:
                entries = []
                for i, (f, ft, suffix) in enumerate(files):
                    rel = f"cameras/{name}/{i:03d}{suffix}"
                    rel_t = f"cameras/{name}/{i:03d}.frame_times.npy"
                    copy_into(f, writer.path / rel)
                    save_npy(writer.path / rel_t, ft)
                    entries.append({"path": rel, "start_ns": None, "frame_times": rel_t})
                out.append({"name": name, "codec": codec, "files": entries})
            return out

        notes = f"mcap {path.name}: " + ", ".join([f"{t} -> camera {cams[t]}" for t in wanted if t in cams] + tel_notes)
        return write_drive(
            Path(root), vehicle_id, drive_id, source_path=src, source="mcap",
            utc_offset_ns=0, telemetry=table, place_cameras=place, overwrite=overwrite, notes=notes,
        )


def _telemetry(tel: dict[str, _Telemetry], wanted: dict[str, str], src: str) -> tuple[Any, list[str]]:
    """Canonical table from the telemetry topics (the one with most messages per kind), or None without speed."""
    best: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for topic, rec in sorted(tel.items()):
        if not rec.values:
            log.warning("%s: topic %s has no usable messages", src, topic)
            continue
        kind = wanted[topic]
        if kind in best and best[kind][1].size >= len(rec.values):
            log.info("%s: topic %s ignored (topic %s of the same kind has more messages)", src, topic, best[kind][0])
            continue
        best[kind] = (topic, _pick_times(rec.log_times, rec.stamps), np.asarray(rec.values, dtype=np.float64))
    sig: dict[str, Series] = {}
    notes = []
    if FIX in best:
        topic, t, v = best[FIX]
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        ok = np.isfinite(v).all(axis=1)
        t, v = t[ok], v[ok]
        sig["lat_deg"] = Series.make(t, v[:, 0])
        sig["lon_deg"] = Series.make(t, v[:, 1])
        speed, heading = speed_heading_from_fixes(t, v[:, 0], v[:, 1])
        sig["heading_rad"] = Series.make(t, heading)
        if TWIST not in best:
            sig["speed_mps"] = Series.make(t, speed)
        notes.append(f"{topic} -> position" + ("" if TWIST in best else " and speed"))
    if TWIST in best:
        topic, t, v = best[TWIST]
        sig["speed_mps"] = Series.make(t, v[:, 0])
        notes.append(f"{topic} -> speed")
    if IMU in best:
        topic, t, v = best[IMU]
        sig["yaw_rate_radps"] = Series.make(t, v[:, 0])
        sig["accel_lon_mps2"] = Series.make(t, v[:, 1])
        sig["accel_lat_mps2"] = Series.make(t, v[:, 2])
        notes.append(f"{topic} -> IMU")
    sp = sig.get("speed_mps")
    if sp is None or len(sp) == 0:
        if best:
            log.warning("%s: no speed (no velocity topic and too few position fixes): telemetry left out", src)
        return None, notes
    rate = max(_median_rate(t) for _, t, _ in best.values())
    rate = float(min(MAX_RATE_HZ, max(1.0, round(rate))))
    grid = uniform_grid(int(sp.t_ns[0]), int(sp.t_ns[-1]), rate)
    return telemetry_table(grid, resample_all(sig, grid)), notes
