"""Sparse, exact, time-synced multi-camera clip extraction.

One sampling timeline (``rate_hz``) is shared by every camera. For each sample time each
camera contributes the frame whose presentation time (from the frame index) is nearest;
the offset is recorded. A camera whose nearest frame is more than half a sample period
away is *missing* for that sample (``None``, pts -1) -- never silently misaligned.

Decoding is sparse, the way the frame index's ``seek`` column says for each file:

- ``"index"``: for every needed frame we seek to the keyframe at or before it
  (``container.seek(..., backward=True)`` on the video stream, which uses the container's
  index) and decode forward only as far as the last needed frame; a later needed frame behind
  another keyframe triggers a new seek, an earlier one a seek back.
- ``"byte"``: raw H.264/HEVC elementary streams carry no timestamps and FFmpeg's raw demuxers
  cannot seek by time; the file is re-opened at the keyframe's byte offset
  (:mod:`fleetcore.video.rawseek`).
- ``"decode"``: no usable index (e.g. MPEG-TS, or a raw stream that cannot be re-opened at a
  keyframe): the file is decoded forward from its start; :class:`ClipExtractor` keeps the decoder open and continues
  forward for later windows of the same file, and re-opens it for an earlier one.

Frames are matched to the index by timestamp (container files) or by output position (raw
streams, whose output order is taken to be the ``frame_times`` order, and AVI, which stores
decode times only: counted from the first packet's DTS after a seek), so every mode returns
the same frames. Packets the demuxer flags discard (the frames before an MP4 edit list's start:
negative start PTS) are decoded too, since they are in the index. Windows spanning segment files
switch files. Only the sampled frames are kept (resized), so memory is bounded by the clip, not the drive.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator, Sequence

import av
import av.error
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fleetcore.errors import VideoError
from fleetcore.landing.drives import drive_file
from fleetcore.store.fs import open_input_file
from fleetcore.video.convert import frame_to_rgb
from fleetcore.video.geometry import output_size
from fleetcore.video.rawseek import SplicedFile, parameter_sets
from fleetcore.video.probe import (
    codec_name,
    decode_packet,
    frame_time,
    is_dts_timed,
    is_raw_stream,
    ns_to_pts,
    open_input,
    pts_to_ns,
    select_video_stream,
)

log = logging.getLogger(__name__)

SEEK_MIN_SKIP = 8  # seek forward only when it skips more than this many frames


@dataclass
class ClipFrames:
    """Frames of one clip on a shared sampling timeline.

    ``frames[cam][i]`` is an RGB uint8 HxWx3 array (longest side == max_side, never upscaled)
    or None when the camera has no frame within half a sample period of ``sample_times_ns[i]``.
    Two samples that pick the same source frame share one array object.
    """

    sample_times_ns: np.ndarray
    cameras: list[str]
    frames: dict[str, list[np.ndarray | None]]
    pts_ns: dict[str, np.ndarray]
    offset_ns: dict[str, np.ndarray]
    frames_decoded: int = 0

    @property
    def num_samples(self) -> int:
        return int(len(self.sample_times_ns))

    def missing(self, camera: str) -> np.ndarray:
        """Boolean mask of samples where ``camera`` has no frame (frame None; its pts reads -1, but
        a present frame's pts may be negative: frames before a file's PTS 0)."""
        return np.asarray([f is None for f in self.frames[camera]], dtype=bool)


def sample_times(start_ns: int, end_ns: int, rate_hz: float = 10.0) -> np.ndarray:
    """Sample times ``start + k / rate`` in the half-open window [start_ns, end_ns), int64 ns."""
    if not rate_hz > 0 or not math.isfinite(rate_hz):
        raise ValueError(f"rate_hz must be a positive finite number, found {rate_hz!r}")
    if end_ns <= start_ns:
        return np.empty(0, dtype=np.int64)
    period = 1e9 / rate_hz
    n = int(math.ceil((end_ns - start_ns) / period - 1e-9))
    ts = int(start_ns) + np.round(np.arange(n, dtype=np.float64) * period).astype(np.int64)
    return ts[ts < end_ns]


@dataclass
class _CameraIndex:
    pts_ns: np.ndarray  # sorted, all files
    file_index: np.ndarray
    frame_index: np.ndarray
    # per file: sorted keyframe ns, and (raw streams) frame times by frame_index
    key_ns: dict[int, np.ndarray] = field(default_factory=dict)
    first_ns: dict[int, int] = field(default_factory=dict)
    file_times: dict[int, np.ndarray] = field(default_factory=dict)
    file_pos: dict[int, np.ndarray] = field(default_factory=dict)  # byte offsets by frame number, -1 unknown
    file_seek: dict[int, str] = field(default_factory=dict)  # the index's seek mode per file (absent in old indexes)

    @classmethod
    def from_table(cls, t: pa.Table) -> "_CameraIndex":
        pts = t.column("pts_ns").to_numpy().astype(np.int64)
        fi = t.column("file_index").to_numpy().astype(np.int64)
        fr = t.column("frame_index").to_numpy().astype(np.int64)
        key = t.column("is_keyframe").to_numpy(zero_copy_only=False).astype(bool)
        bpos = t.column("byte_offset").fill_null(-1).to_numpy().astype(np.int64) if t.num_rows else np.empty(0, np.int64)
        order = np.lexsort((fi, pts))
        pts, fi, fr, key, bpos = pts[order], fi[order], fr[order], key[order], bpos[order]
        seek: list[Any] | None = None
        if "seek" in t.column_names and t.num_rows:
            seek = t.column("seek").to_numpy(zero_copy_only=False)[order].tolist()
        out = cls(pts, fi, fr)
        for f in np.unique(fi):
            m = fi == f
            out.key_ns[int(f)] = np.sort(pts[m & key])
            out.first_ns[int(f)] = int(pts[m].min())
            times = np.empty(int(fr[m].max()) + 1, dtype=np.int64)
            times[:] = -1
            times[fr[m]] = pts[m]
            out.file_times[int(f)] = times
            fpos = np.full(len(times), -1, dtype=np.int64)
            fpos[fr[m]] = bpos[m]
            out.file_pos[int(f)] = fpos
            if seek is not None:
                mode = seek[int(np.flatnonzero(m)[0])]
                if mode is not None:
                    out.file_seek[int(f)] = str(mode)
        return out

    def nearest(self, t: np.ndarray, half_period_ns: float) -> tuple[np.ndarray, np.ndarray]:
        """Row of the nearest frame per sample (-1 where missing) and the chosen pts (-1 where missing)."""
        n = len(self.pts_ns)
        rows = np.full(len(t), -1, dtype=np.int64)
        if n == 0 or len(t) == 0:
            return rows, np.full(len(t), -1, dtype=np.int64)
        r = np.searchsorted(self.pts_ns, t, side="left")
        left = np.clip(r - 1, 0, n - 1)
        right = np.clip(r, 0, n - 1)
        dl = np.abs(t - self.pts_ns[left])
        dr = np.abs(self.pts_ns[right] - t)
        best = np.where(dr < dl, right, left)  # ties: the earlier frame
        off = np.abs(self.pts_ns[best] - t)
        ok = off <= half_period_ns
        rows[ok] = best[ok]
        pts = np.where(ok, self.pts_ns[best], -1)
        return rows, pts

    def keyframe_before(self, file_index: int, t_ns: int) -> int:
        keys = self.key_ns.get(file_index)
        if keys is None or len(keys) == 0:
            return self.first_ns[file_index]
        i = int(np.searchsorted(keys, t_ns, side="right")) - 1
        return int(keys[i]) if i >= 0 else self.first_ns[file_index]


class _FileDecoder:
    """An open camera file with a resumable forward decoder."""

    def __init__(
        self, path: str, *, start_ns: int | None, file_times: np.ndarray | None, file_pos: np.ndarray | None, threads: int,
        seek: str | None = None,
    ) -> None:
        """``file_times``: vehicle times of the file's frames by frame number (presentation order; the
        decoder's output order for raw streams), ``file_pos`` their byte offsets, ``seek`` the file's
        seek mode, from the frame index (None: an index without the column; derived as it was before)."""
        self.path = path
        self.start_ns = start_ns
        self.file_times = file_times
        self.file_pos = file_pos
        self.threads = threads
        self.frames_decoded = 0
        self.container: Any = None
        self._header: bytes | None = None
        self._k0 = 0  # frame number of the first frame the current raw decoder produces
        # AVI is indexed by DTS only by indexes that have the seek column (older ones used FFmpeg's guessed PTS)
        self._index_dts = seek is not None
        self._open()
        positions = file_pos is not None and len(file_pos) > 1 and bool(np.all(file_pos >= 0))
        if seek is None:
            seek = ("byte" if positions else "decode") if self.raw else "index"
        if seek == "byte" and not (self.raw and positions and self._raw_header()):
            seek = "decode"
        if seek == "index" and self.raw:
            seek = "decode"
        self.mode = seek
        self.raw_seekable = seek == "byte"

    def _raw_header(self) -> bytes:
        """Parameter sets from the start of a raw stream (cached)."""
        if self._header is None:
            assert self.file_pos is not None
            end = int(self.file_pos[1]) if len(self.file_pos) > 1 and self.file_pos[1] > 0 else 1 << 20
            with open_input_file(self.path) as f:
                head = f.read(min(end, 1 << 22))
            self._header = parameter_sets(head, "hevc" if self.codec == "hevc" else "h264")
        return self._header

    def _open(self, from_frame: int = 0) -> None:
        """(Re)open the file; a raw stream from frame ``from_frame`` (a keyframe) via byte offset."""
        if self.container is not None:
            self.container.close()
            self.container = None
        self._k0 = 0
        if from_frame > 0:
            assert self.file_pos is not None
            spliced = SplicedFile(self.path, int(self.file_pos[from_frame]), self._raw_header())
            try:
                self.container = av.open(spliced, mode="r", format=self.fmt)
                self._k0 = from_frame
            except av.error.FFmpegError as exc:
                spliced.close()
                log.warning("%s: cannot open at byte %d (%s); decoding from the start", self.path, self.file_pos[from_frame], exc)
        if self.container is None:
            self.container = open_input(self.path)
        self.fmt = self.container.format.name
        self.stream = select_video_stream(self.container, self.path)
        self.codec = codec_name(self.stream)
        self.raw = is_raw_stream(self.container)
        self.dts_timed = self._index_dts and is_dts_timed(self.container)  # AVI: frames timed in output order from the first packet's DTS
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = max(1, int(self.threads))
        tb = self.stream.time_base
        self.tb = Fraction(tb.numerator, tb.denominator) if tb is not None else None
        if self.raw and self.file_times is None:
            raise VideoError(self.path, "raw stream without per-frame times in the frame index", code="video_no_timestamps")
        if not self.raw and self.start_ns is None:
            raise VideoError(self.path, "container file without start_ns in the manifest", code="video_no_timestamps")
        self.pos_ns: int | None = None  # vehicle time of the last frame the decoder produced
        self._gen: Iterator[tuple[int, Any]] | None = None

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None
            self._gen = None

    def _first_frame_number(self, pkt: Any) -> int:
        """Frame number of the first frame decoded from ``pkt``, the first packet after a seek in a
        DTS-timed container: its DTS is the time of a keyframe, which in a closed GOP is also presented first."""
        assert self.file_times is not None and self.start_ns is not None and self.tb is not None
        t = pkt.dts if pkt.dts is not None else pkt.pts
        if t is None:
            raise VideoError(self.path, "packet without DTS in a DTS-timed container", code="video_no_timestamps")
        ns = self.start_ns + pts_to_ns(int(t), self.tb)
        k = int(np.searchsorted(self.file_times, ns, side="left"))
        if k >= len(self.file_times) or self.file_times[k] != ns:
            raise VideoError(self.path, f"the decoder resumed at DTS {t}, which is no frame of the index", code="video_frame_times_mismatch")
        return k

    def _frames(self) -> Iterator[tuple[int, Any]]:
        k = self._k0
        by_order = self.raw or self.dts_timed
        first = self.dts_timed
        try:
            for pkt in self.container.demux(self.stream):
                if first and pkt.size:
                    k, first = self._first_frame_number(pkt), False
                for frame in decode_packet(self.stream, pkt):
                    self.frames_decoded += 1
                    if by_order:
                        assert self.file_times is not None
                        if k >= len(self.file_times):
                            raise VideoError(self.path, f"decoder produced frame {k} but the index has {len(self.file_times)} frames", code="video_frame_times_mismatch")
                        ns = int(self.file_times[k])
                        k += 1
                    else:
                        t = frame_time(frame)
                        if t is None:
                            raise VideoError(self.path, "decoded frame without PTS", code="video_no_timestamps")
                        assert self.start_ns is not None and self.tb is not None
                        ns = self.start_ns + pts_to_ns(t, self.tb)
                    yield ns, frame
        except av.error.FFmpegError as exc:
            raise VideoError(self.path, f"decoding failed ({exc.strerror or exc})", code="video_decode_error") from exc

    def _seek(self, key_ns: int | None) -> None:
        """Position the decoder at the keyframe ``key_ns`` (None: the start of the file)."""
        if self.mode == "decode":
            self._open()  # no usable index: decode from the start
        elif self.raw:
            # Raw demuxers cannot seek by time: re-open at the keyframe's byte offset.
            j = 0
            if key_ns is not None and self.raw_seekable and self.file_times is not None:
                j = int(np.searchsorted(self.file_times, key_ns, side="left"))
            self._open(from_frame=j if 0 < j < len(self.file_times if self.file_times is not None else ()) else 0)
        elif key_ns is None:
            self._open()
        else:
            assert self.start_ns is not None and self.tb is not None
            target = ns_to_pts(key_ns - self.start_ns, self.tb)
            self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
            self.pos_ns = None
        self._gen = self._frames()

    def _frames_between(self, after_ns: int, before_ns: int) -> int:
        """Number of indexed frames strictly between two vehicle times of this file."""
        if self.file_times is None:
            return 0
        lo = int(np.searchsorted(self.file_times, after_ns, side="right"))
        hi = int(np.searchsorted(self.file_times, before_ns, side="left"))
        return max(0, hi - lo)

    def _worth_seeking(self, pos_ns: int, key_ns: int) -> bool:
        """Seek forward to ``key_ns`` only when that skips more than a few frames (a seek flushes the decoder)."""
        return key_ns > pos_ns and self._frames_between(pos_ns, key_ns) > SEEK_MIN_SKIP

    def decode(self, targets: list[int], keys: list[int], convert: Any) -> dict[int, np.ndarray]:
        """Decode the frames with vehicle times ``targets`` (sorted), ``keys[i]`` the keyframe time before each.

        ``convert(frame, slot_count)`` turns a kept frame into an array."""
        out: dict[int, np.ndarray] = {}
        i = 0
        n = len(targets)
        from_start = False  # set when a seek overshot: decode this file from its start
        seeked_for = -1  # index of the target the last seek was for
        while i < n:
            t = targets[i]
            can_continue = (
                self._gen is not None and self.pos_ns is not None and self.pos_ns < t
                and (self.mode == "decode" or not self._worth_seeking(self.pos_ns, keys[i]))
            )
            just_seeked = False
            if not can_continue:
                self._seek(None if from_start else keys[i])
                just_seeked, seeked_for = True, i
            exhausted = True
            assert self._gen is not None
            for ns, frame in self._gen:
                if just_seeked and ns > t and not from_start and self.mode == "index":
                    log.warning("%s: seek to %d ns landed at %d ns; decoding from the start of the file", self.path, keys[i], ns)
                    from_start = True
                    self._gen = None
                    exhausted = False
                    break
                just_seeked = False
                self.pos_ns = ns
                while i < n and targets[i] < ns:
                    log.warning("%s: frame at %d ns from the index was not produced by the decoder; marking it missing", self.path, targets[i])
                    i += 1
                if i < n and targets[i] == ns:
                    out[ns] = convert(frame, n)
                    i += 1
                if i >= n or (self.mode != "decode" and i > seeked_for and self._worth_seeking(ns, keys[i])):
                    exhausted = False  # done, or the next needed frame is behind a later keyframe: seek there
                    break
            if exhausted:
                self._gen = None
                if i < n:
                    log.warning("%s: %d indexed frames from %d ns on were not produced by the decoder; marking them missing", self.path, n - i, targets[i])
                break
        return out


def _refs(arrays: list[np.ndarray], i: int) -> int:
    return sys.getrefcount(arrays[i])


_UNREFERENCED = _refs([np.empty(1)], 0)  # the count for an array held only by its list (calibrated, not assumed)


def arena_size_class(count: int) -> int:
    """The frame count an arena for ``count`` frames is allocated with: the next of 8, 10, 12,
    15 ... (steps of about 1.25), so clips of slightly different lengths can reuse each
    other's arenas (at most a quarter of an arena is spare)."""
    c = 8
    while c < count:
        c = max(c + 1, int(c * 1.25))
    return c


class ArenaPool:
    """Reusable frame arenas: one (count, H, W, 3) uint8 block per decode call.

    Writing decoded frames into freshly allocated memory costs page faults that can exceed the
    colour conversion itself (measured on a 2-core VM: 1.6 ms a 640x360 frame into fresh memory,
    0.3 ms into a reused arena); arenas whose frames are no longer referenced by
    anyone (every returned frame is a view holding a reference to its arena) are handed out
    again. Arenas are allocated in size classes (:func:`arena_size_class`) and at most
    ``max_bytes`` are kept: to make room for a new one, the oldest unreferenced arenas are
    dropped; when that cannot make room, the new arena is a plain allocation.

    One pool may serve many :class:`ClipExtractor` objects in turn (the curate job keeps one per
    worker, made in ``DoFn.setup``, so arenas carry over from drive to drive); it is not
    thread-safe: use it from one thread at a time.
    """

    def __init__(self, max_bytes: int = 512 << 20) -> None:
        self.max_bytes = int(max_bytes)
        self._arenas: list[np.ndarray] = []

    @property
    def nbytes(self) -> int:
        """Bytes of the arenas kept for reuse."""
        return sum(a.nbytes for a in self._arenas)

    def get(self, count: int, shape: tuple[int, int, int]) -> np.ndarray:
        best: int | None = None
        # No local name may hold an arena here: the reference count must see only the list's.
        for i in range(len(self._arenas)):
            n_i = self._arenas[i].shape[0]
            if self._arenas[i].shape[1:] != shape or n_i < count:
                continue
            if best is not None and n_i >= self._arenas[best].shape[0]:
                continue
            if _refs(self._arenas, i) <= _UNREFERENCED:  # any live frame/view adds a reference
                best = i
        if best is not None:
            return self._arenas[best][:count]
        arena = np.empty((arena_size_class(count), *shape), dtype=np.uint8)
        over = self.nbytes + arena.nbytes - self.max_bytes
        if over > 0:
            unused = [i for i in range(len(self._arenas)) if _refs(self._arenas, i) <= _UNREFERENCED]
            if sum(self._arenas[i].nbytes for i in unused) < over:
                return arena[:count]  # the arenas in use fill the budget: a plain allocation
            drop, freed = [], 0
            for i in unused:  # the oldest unused ones, as many as needed
                drop.append(i)
                freed += self._arenas[i].nbytes
                if freed >= over:
                    break
            for i in reversed(drop):
                del self._arenas[i]
        self._arenas.append(arena)
        return arena[:count]

    def clear(self) -> None:
        self._arenas.clear()


class ClipExtractor:
    """Extracts clips from one drive, keeping decoders open between clips (use as a context manager).

    Frames of a clip are views into per-(camera, file) arenas; once a clip's frames are no
    longer referenced, their memory is reused for later clips (up to ``arena_pool_bytes``), or
    for later drives too when the caller passes its own ``arena_pool`` (kept on close).
    """

    def __init__(
        self,
        drive_dir: str | os.PathLike[str],
        manifest: dict[str, Any],
        frame_index: pa.Table,
        *,
        max_side: int = 640,
        cameras: Sequence[str] | None = None,
        threads: int = 2,
        max_open_files: int = 8,
        arena_pool_bytes: int = 512 << 20,
        arena_pool: ArenaPool | None = None,
    ) -> None:
        if max_side <= 0:
            raise ValueError(f"max_side must be positive, found {max_side}")
        self.drive_dir = drive_dir
        self.manifest = manifest
        self.max_side = int(max_side)
        self.threads = int(threads)
        self.max_open_files = max(1, int(max_open_files))
        self._cams = {c["name"]: c for c in manifest["cameras"]}
        self.cameras = self._check_cameras(cameras)
        self._index: dict[str, _CameraIndex] = {}
        cam_col = frame_index.column("camera")
        for name in self._cams:
            self._index[name] = _CameraIndex.from_table(frame_index.filter(pc.equal(cam_col, name)))
        self._open: OrderedDict[tuple[str, int], _FileDecoder] = OrderedDict()
        self._own_pool = arena_pool is None
        self._pool = ArenaPool(arena_pool_bytes) if arena_pool is None else arena_pool
        self._decoded_closed = 0

    def _check_cameras(self, cameras: Sequence[str] | None) -> list[str]:
        if cameras is None:
            return list(self._cams)
        unknown = [c for c in cameras if c not in self._cams]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; the manifest has {list(self._cams)}")
        return list(cameras)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        for dec in self._open.values():
            self._decoded_closed += dec.frames_decoded
            dec.close()
        self._open.clear()
        if self._own_pool:
            self._pool.clear()

    def __enter__(self) -> "ClipExtractor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def frames_decoded(self) -> int:
        """Total source frames decoded by this extractor so far."""
        return self._decoded_closed + sum(d.frames_decoded for d in self._open.values())

    def _decoder(self, camera: str, file_index: int) -> _FileDecoder:
        key = (camera, file_index)
        dec = self._open.get(key)
        if dec is not None:
            self._open.move_to_end(key)
            return dec
        entry = self._cams[camera]["files"][file_index]
        path = drive_file(self.drive_dir, entry["path"])
        idx = self._index[camera]
        dec = _FileDecoder(
            path, start_ns=entry.get("start_ns"), file_times=idx.file_times.get(file_index),
            file_pos=idx.file_pos.get(file_index), threads=self.threads, seek=idx.file_seek.get(file_index),
        )
        self._open[key] = dec
        while len(self._open) > self.max_open_files:
            _, old = self._open.popitem(last=False)
            self._decoded_closed += old.frames_decoded
            old.close()
        return dec

    def _converter(self) -> Any:
        """A frame converter writing into one arena per decode call (slots for every needed frame)."""
        arena: list[Any] = [None, 0]  # array, next slot

        def convert(frame: Any, count: int) -> np.ndarray:
            ow, oh = output_size(frame.width, frame.height, self.max_side)
            buf, k = arena
            if buf is None:
                buf = arena[0] = self._pool.get(count, (oh, ow, 3))
            if k < len(buf) and buf.shape[1:] == (oh, ow, 3):
                arena[1] = k + 1
                return frame_to_rgb(frame, self.max_side, out=buf[k])
            return frame_to_rgb(frame, self.max_side)  # size changed mid-file: a separate array

        return convert

    # -- extraction ------------------------------------------------------------------------
    def extract(self, start_ns: int, end_ns: int, *, rate_hz: float = 10.0, cameras: Sequence[str] | None = None) -> ClipFrames:
        cams = self._check_cameras(cameras) if cameras is not None else self.cameras
        ts = sample_times(start_ns, end_ns, rate_hz)
        half = 0.5e9 / rate_hz
        before = self.frames_decoded
        frames: dict[str, list[np.ndarray | None]] = {}
        pts_out: dict[str, np.ndarray] = {}
        off_out: dict[str, np.ndarray] = {}
        for cam in cams:
            idx = self._index[cam]
            rows, pts = idx.nearest(ts, half)
            wanted = rows[rows >= 0]
            got: dict[int, np.ndarray] = {}
            for f in np.unique(idx.file_index[wanted]) if len(wanted) else []:
                f = int(f)
                targets = sorted({int(p) for p in idx.pts_ns[wanted[idx.file_index[wanted] == f]]})
                keys = [idx.keyframe_before(f, t) for t in targets]
                got.update(self._decoder(cam, f).decode(targets, keys, self._converter()))
            cam_frames: list[np.ndarray | None] = []
            found = rows >= 0  # pts may be negative (frames before PTS 0): -1 is no marker
            for j in range(len(ts)):
                if found[j] and int(pts[j]) in got:
                    cam_frames.append(got[int(pts[j])])
                else:
                    found[j] = False
                    pts[j] = -1
                    cam_frames.append(None)
            frames[cam] = cam_frames
            pts_out[cam] = pts.astype(np.int64)
            off_out[cam] = np.where(found, pts - ts, 0).astype(np.int64)
        return ClipFrames(ts, list(cams), frames, pts_out, off_out, self.frames_decoded - before)


def extract_clip(
    drive_dir: str | os.PathLike[str],
    manifest: dict[str, Any],
    frame_index: pa.Table,
    start_ns: int,
    end_ns: int,
    *,
    rate_hz: float = 10.0,
    max_side: int = 640,
    cameras: Sequence[str] | None = None,
    threads: int = 2,
) -> ClipFrames:
    """Extract one clip (see the module docstring). Opens and closes the files it needs."""
    with ClipExtractor(drive_dir, manifest, frame_index, max_side=max_side, cameras=cameras, threads=threads) as ex:
        return ex.extract(start_ns, end_ns, rate_hz=rate_hz)
