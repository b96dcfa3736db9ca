"""One clip as WebDataset members (encode and decode).

A clip sample with key ``K`` (no dots, no slashes) is these tar members, in this order:

- ``K.json`` — metadata: the caller's ``record`` plus cameras, sample times, per-camera
  frame PTS and offsets (null where the frame is missing), missing frame indices, image
  sizes and the telemetry column names. JSON with sorted keys, so deterministic.
- ``K.<camera>.<NNN>.jpg`` (or ``.png``) — the RGB frame of ``camera`` at sample ``NNN``
  (zero-padded to at least 3 digits), cameras in the order given, frames in sample
  order. A missing frame has no member; it is listed under ``missing_frames`` in the JSON.
- ``K.telemetry.npy`` — float32 array of shape (samples, columns), columns in the order
  of ``telemetry_columns`` in the JSON.

WebDataset groups these under ``__key__ = K`` (it splits at the first dot of the
basename) with extensions ``json``, ``front.000.jpg``, ..., ``telemetry.npy``; its
decoders pick the handler from the last extension, so ``.decode("rgb")`` decodes the
frames and ``.npy`` / ``.json`` decode as usual.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import simplejpeg

from fleetcore.errors import FleetError
from fleetcore.store.tario import split_member_name

SAMPLE_FORMAT_VERSION = 1
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,199}$")
CAMERA_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}$")
TELEMETRY_COLUMN_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
JSON_EXT = "json"
TELEMETRY_EXT = "telemetry.npy"
_PNG_COMPRESSION = 3

ImageFormat = Literal["jpg", "png"]


class SampleError(FleetError):
    """A clip sample cannot be encoded or decoded: names the sample key and what was expected."""

    def __init__(self, key: str, problem: str, *, member: str | None = None) -> None:
        self.key = key
        self.member = member
        super().__init__(f"sample {key!r}" + (f", member {member!r}" if member else ""), problem)


@dataclass
class DecodedSample:
    """A decoded clip sample. ``frames[cam][i]`` is an RGB uint8 array or None (missing)."""

    key: str
    record: dict[str, Any]
    cameras: list[str]
    sample_times_ns: np.ndarray
    pts_ns: dict[str, list[int | None]]
    offset_ns: dict[str, list[int | None]]
    frames: dict[str, list[np.ndarray | None]]
    telemetry: dict[str, np.ndarray]
    telemetry_columns: list[str]
    meta: dict[str, Any]
    extras: dict[str, bytes] = field(default_factory=dict)  # members this module does not know

    @property
    def n_samples(self) -> int:
        return int(self.sample_times_ns.shape[0])

    @property
    def missing_frames(self) -> dict[str, list[int]]:
        return {c: [i for i, f in enumerate(fr) if f is None] for c, fr in self.frames.items()}


def frame_digits(n_samples: int) -> int:
    """Zero-padding width of frame indices in member names (at least 3)."""
    return max(3, len(str(max(n_samples - 1, 0))))


def frame_ext(camera: str, index: int, n_samples: int, image_format: ImageFormat = "jpg") -> str:
    """Member extension of one frame, e.g. ``front.007.jpg``."""
    return f"{camera}.{index:0{frame_digits(n_samples)}d}.{image_format}"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"value of type {type(o).__name__} is not JSON-serialisable")


def dumps_deterministic(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no NaN/inf, ASCII, trailing newline."""
    return (
        json.dumps(obj, sort_keys=True, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=_json_default) + "\n"
    ).encode("ascii")


def _encode_image(key: str, cam: str, i: int, frame: Any, fmt: ImageFormat, quality: int) -> tuple[bytes, tuple[int, int]]:
    if not isinstance(frame, np.ndarray):
        raise SampleError(key, f"camera {cam!r} frame {i}: expected a numpy array or None, found {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise SampleError(key, f"camera {cam!r} frame {i}: expected an RGB uint8 array (H, W, 3), found {frame.dtype} {frame.shape}")
    rgb = np.ascontiguousarray(frame)
    if fmt == "jpg":
        data = simplejpeg.encode_jpeg(rgb, quality=quality, colorspace="RGB")
    else:
        import cv2  # lazy: only PNG needs OpenCV

        ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, _PNG_COMPRESSION])
        if not ok:
            raise SampleError(key, f"camera {cam!r} frame {i}: PNG encoding failed")
        data = buf.tobytes()
    return bytes(data), (int(rgb.shape[0]), int(rgb.shape[1]))


def _int_list(key: str, what: str, arr: Any, n: int) -> list[int]:
    a = np.asarray(arr)
    if a.shape != (n,):
        raise SampleError(key, f"{what}: expected shape ({n},), found {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise SampleError(key, f"{what}: expected integer nanoseconds, found dtype {a.dtype}")
    return [int(v) for v in a.astype(np.int64)]


#: one encoded image: its bytes and (height, width)
EncodedImage = tuple[bytes, tuple[int, int]]


def _check_image_options(key: str, image_format: str, jpeg_quality: Any) -> None:
    if image_format not in ("jpg", "png"):
        raise SampleError(key, f"image_format must be 'jpg' or 'png', found {image_format!r}")
    if not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
        raise SampleError(key, f"jpeg_quality must be an int in 1..100, found {jpeg_quality!r}")


def encode_images(
    key: str,
    frames: Mapping[str, Sequence[np.ndarray | None]],
    *,
    jpeg_quality: int = 90,
    image_format: ImageFormat = "jpg",
    threads: int = 1,
) -> list[EncodedImage | SampleError]:
    """The images :func:`encode_sample` would encode (every present frame, camera by camera in
    ``frames`` order, samples in order), encoded ahead of the rest: pass the list as
    ``encode_sample(images=...)`` with the same frames (the curate job encodes a clip's frames
    while a labeller is still reading them). A frame that cannot be encoded gives its
    :class:`SampleError` in its place, raised by ``encode_sample`` where member order reaches it.
    ``threads`` as in ``encode_sample``; the bytes do not depend on it."""
    _check_image_options(key, image_format, jpeg_quality)
    jobs = [(cam, i, fr) for cam in frames for i, fr in enumerate(frames[cam]) if fr is not None]

    def encode(job: tuple[str, int, Any]) -> EncodedImage | SampleError:
        try:
            return _encode_image(key, job[0], job[1], job[2], image_format, jpeg_quality)
        except SampleError as exc:
            return exc

    if threads > 1 and len(jobs) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(int(threads), len(jobs)), thread_name_prefix="encode") as pool:
            return list(pool.map(encode, jobs))
    return [encode(job) for job in jobs]


def _checked_inputs(key: str, frames: Mapping[str, Sequence[np.ndarray | None]], sample_times_ns: np.ndarray,
                    pts_ns: Mapping[str, np.ndarray], offset_ns: Mapping[str, np.ndarray],
                    telemetry: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str], list[str], np.ndarray, dict[str, tuple[list, list]]]:
    """:func:`encode_sample`'s inputs checked: (times, cameras, telemetry columns, the float32
    telemetry array, per camera (pts, offsets) as lists). Raises SampleError naming the problem."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise SampleError(str(key), "key must match [A-Za-z0-9][A-Za-z0-9_-]* (no dots or slashes: WebDataset splits keys at the first dot)")
    times = np.asarray(sample_times_ns)
    if times.ndim != 1 or not np.issubdtype(times.dtype, np.integer):
        raise SampleError(key, f"sample_times_ns: expected a 1-D integer array, found {times.dtype} {times.shape}")
    n = int(times.shape[0])
    if n > 1 and np.any(np.diff(times.astype(np.int64)) <= 0):
        raise SampleError(key, "sample_times_ns must be strictly increasing")
    cameras = list(frames)
    for cam in cameras:
        if not isinstance(cam, str) or not CAMERA_RE.match(cam):
            raise SampleError(key, f"camera name {cam!r} is not valid (lowercase letters, digits, _ -; no dots)")
        if len(frames[cam]) != n:
            raise SampleError(key, f"camera {cam!r}: expected {n} frames (one per sample time, None if missing), found {len(frames[cam])}")
        for what, m in (("pts_ns", pts_ns), ("offset_ns", offset_ns)):
            if cam not in m:
                raise SampleError(key, f"{what}: camera {cam!r} is missing")
    cols = list(telemetry)
    tel = np.zeros((n, len(cols)), dtype=np.float32)
    for j, col in enumerate(cols):
        if not isinstance(col, str) or not TELEMETRY_COLUMN_RE.match(col):
            raise SampleError(key, f"telemetry column name {col!r} is not valid (letters, digits, _ -)")
        v = np.asarray(telemetry[col])
        if v.shape != (n,):
            raise SampleError(key, f"telemetry column {col!r}: expected shape ({n},), found {v.shape}")
        try:
            tel[:, j] = v.astype(np.float32)
        except (TypeError, ValueError) as exc:
            raise SampleError(key, f"telemetry column {col!r}: not convertible to float32 ({exc})") from exc

    times_of = {cam: (_int_list(key, f"pts_ns[{cam!r}]", pts_ns[cam], n), _int_list(key, f"offset_ns[{cam!r}]", offset_ns[cam], n)) for cam in cameras}
    return times, cameras, cols, tel, times_of


def encode_sample(
    key: str,
    *,
    frames: Mapping[str, Sequence[np.ndarray | None]],
    sample_times_ns: np.ndarray,
    pts_ns: Mapping[str, np.ndarray],
    offset_ns: Mapping[str, np.ndarray],
    telemetry: Mapping[str, np.ndarray],
    record: Mapping[str, Any],
    jpeg_quality: int = 90,
    image_format: ImageFormat = "jpg",
    threads: int = 1,
    images: Sequence[EncodedImage | SampleError] | None = None,
) -> list[tuple[str, bytes]]:
    """Encode one clip into (member name, bytes) pairs, in member order (see module docstring).

    ``frames`` maps camera name (in output order) to one RGB uint8 (H, W, 3) array or None
    per sample time; ``pts_ns`` / ``offset_ns`` give, per camera and sample, the chosen
    frame's PTS and its offset from the sample time (ignored where the frame is None);
    ``telemetry`` maps column name (in output order) to a per-sample array (cast to float32;
    NaN marks a missing value). ``record`` is JSON-able metadata stored under ``record``.
    ``threads`` > 1 encodes the images on that many threads (the encoders release the GIL); the
    bytes do not depend on it. ``images``: the frames' images already encoded by
    :func:`encode_images` (same frames and options). Raises SampleError naming the key and the
    problem (the first one in member order).
    """
    _check_image_options(key, image_format, jpeg_quality)
    times, cameras, cols, tel, times_of = _checked_inputs(key, frames, sample_times_ns, pts_ns, offset_ns, telemetry)
    n = int(times.shape[0])
    present = sum(fr is not None for cam in cameras for fr in frames[cam])
    if images is None:
        images = encode_images(key, frames, jpeg_quality=jpeg_quality, image_format=image_format, threads=threads)
    elif len(images) != present:
        raise SampleError(key, f"images: expected {present} encoded images (one per present frame), found {len(images)}")
    image_members, pts_out, off_out, missing, sizes = _image_members(key, frames, cameras, times_of, images, n, image_format)

    meta = {
        "format_version": SAMPLE_FORMAT_VERSION,
        "key": key,
        "record": dict(record),
        "cameras": cameras,
        "n_samples": n,
        "sample_times_ns": [int(t) for t in times.astype(np.int64)],
        "pts_ns": pts_out,
        "offset_ns": off_out,
        "missing_frames": missing,
        "image_format": image_format,
        "image_size_hw": sizes,
        "frame_digits": frame_digits(n),
        "telemetry_columns": cols,
        "telemetry_dtype": "float32",
    }
    try:
        meta_bytes = dumps_deterministic(meta)
    except (TypeError, ValueError) as exc:
        raise SampleError(key, f"record is not JSON-serialisable without NaN/inf ({exc})", member=f"{key}.{JSON_EXT}") from exc

    npy = io.BytesIO()
    np.save(npy, tel, allow_pickle=False)
    return [(f"{key}.{JSON_EXT}", meta_bytes), *image_members, (f"{key}.{TELEMETRY_EXT}", npy.getvalue())]


def _image_members(
    key: str,
    frames: Mapping[str, Sequence[np.ndarray | None]],
    cameras: list[str],
    times_of: dict[str, tuple[list[int], list[int]]],
    images: Sequence[EncodedImage | SampleError],
    n: int,
    image_format: ImageFormat,
) -> tuple[list[tuple[str, bytes]], dict[str, list[int | None]], dict[str, list[int | None]], dict[str, list[int]], dict[str, list[int] | None]]:
    """The image members in member order, with each camera's PTS / offsets (None where a frame is
    missing), missing sample indices and image size. A frame's encoding error surfaces where the loop
    reaches it, whatever the threads that encoded it."""
    encoded = iter(images)
    image_members: list[tuple[str, bytes]] = []
    pts_out: dict[str, list[int | None]] = {}
    off_out: dict[str, list[int | None]] = {}
    missing: dict[str, list[int]] = {}
    sizes: dict[str, list[int] | None] = {}
    for cam in cameras:
        pts, off = times_of[cam]
        size: tuple[int, int] | None = None
        miss: list[int] = []
        for i, fr in enumerate(frames[cam]):
            if fr is None:
                miss.append(i)
                pts[i] = None  # type: ignore[call-overload]
                off[i] = None  # type: ignore[call-overload]
                continue
            got = next(encoded)
            if isinstance(got, SampleError):
                raise got
            data, hw = got
            if size is None:
                size = hw
            elif hw != size:
                raise SampleError(key, f"camera {cam!r} frame {i}: size {hw} differs from the camera's first frame {size}")
            image_members.append((f"{key}.{frame_ext(cam, i, n, image_format)}", data))
        pts_out[cam] = pts  # type: ignore[assignment]
        off_out[cam] = off  # type: ignore[assignment]
        missing[cam] = miss
        sizes[cam] = [size[0], size[1]] if size is not None else None
    return image_members, pts_out, off_out, missing, sizes


def _decode_image(key: str, ext: str, data: bytes) -> np.ndarray:
    try:
        if ext.endswith(".jpg"):
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        import cv2

        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except (ValueError, RuntimeError) as exc:
        raise SampleError(key, f"image does not decode ({exc})", member=f"{key}.{ext}") from exc
    if arr is None:
        raise SampleError(key, "image does not decode", member=f"{key}.{ext}")
    return np.ascontiguousarray(arr[:, :, ::-1])


def decode_sample(members: Mapping[str, bytes]) -> DecodedSample:
    """Decode a sample from its members.

    Accepts either full member names (``K.json``, ``K.front.000.jpg``, ...) or a raw
    WebDataset sample dict (``__key__`` plus extensions, values as bytes). Members this
    module does not know are returned in ``extras`` (keyed by extension).
    """
    by_ext: dict[str, bytes] = {}
    if "__key__" in members:
        key = str(members["__key__"])
        for name, data in members.items():
            if not name.startswith("__"):
                by_ext[name] = data
    else:
        keys = set()
        for name, data in members.items():
            split = split_member_name(name)
            if split is None:
                raise SampleError(name, "member name has no extension (expected <key>.<ext>)")
            prefix, ext = split
            keys.add(prefix)
            by_ext[ext] = data
        if len(keys) != 1:
            raise SampleError(",".join(sorted(keys)) or "?", f"expected the members of exactly one sample, found keys {sorted(keys)}")
        key = keys.pop()
    for ext, data in by_ext.items():
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SampleError(key, f"expected raw bytes, found {type(data).__name__} (decode without WebDataset decoders)", member=f"{key}.{ext}")
    if JSON_EXT not in by_ext:
        raise SampleError(key, f"missing the metadata member {key}.{JSON_EXT}")
    try:
        meta = json.loads(bytes(by_ext.pop(JSON_EXT)))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SampleError(key, f"metadata is not valid JSON ({exc})", member=f"{key}.{JSON_EXT}") from exc
    if not isinstance(meta, dict) or meta.get("format_version") != SAMPLE_FORMAT_VERSION:
        raise SampleError(key, f"metadata format_version: expected {SAMPLE_FORMAT_VERSION}", member=f"{key}.{JSON_EXT}")
    n = int(meta["n_samples"])
    fmt = meta["image_format"]
    cameras = list(meta["cameras"])
    frames: dict[str, list[np.ndarray | None]] = {}
    for cam in cameras:
        miss = set(meta["missing_frames"][cam])
        out: list[np.ndarray | None] = []
        for i in range(n):
            ext = frame_ext(cam, i, n, fmt)
            data = by_ext.pop(ext, None)
            if i in miss:
                if data is not None:
                    raise SampleError(key, "frame is marked missing but has a member", member=f"{key}.{ext}")
                out.append(None)
                continue
            if data is None:
                raise SampleError(key, f"frame member is absent (expected camera {cam!r} sample {i})", member=f"{key}.{ext}")
            out.append(_decode_image(key, ext, bytes(data)))
        frames[cam] = out
    cols = list(meta["telemetry_columns"])
    if TELEMETRY_EXT not in by_ext:
        raise SampleError(key, f"missing the telemetry member {key}.{TELEMETRY_EXT}")
    try:
        tel = np.load(io.BytesIO(bytes(by_ext.pop(TELEMETRY_EXT))), allow_pickle=False)
    except ValueError as exc:
        raise SampleError(key, f"telemetry is not a valid .npy ({exc})", member=f"{key}.{TELEMETRY_EXT}") from exc
    if tel.shape != (n, len(cols)) or tel.dtype != np.float32:
        raise SampleError(key, f"telemetry: expected float32 ({n}, {len(cols)}), found {tel.dtype} {tel.shape}", member=f"{key}.{TELEMETRY_EXT}")
    return DecodedSample(
        key=key,
        record=meta["record"],
        cameras=cameras,
        sample_times_ns=np.asarray(meta["sample_times_ns"], dtype=np.int64),
        pts_ns={c: list(v) for c, v in meta["pts_ns"].items()},
        offset_ns={c: list(v) for c, v in meta["offset_ns"].items()},
        frames=frames,
        telemetry={c: tel[:, j].copy() for j, c in enumerate(cols)},
        telemetry_columns=cols,
        meta=meta,
        extras={ext: bytes(d) for ext, d in by_ext.items()},
    )


def rekey_sample(members: Sequence[tuple[str, bytes]], new_key: str, record: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """A stored sample under a new key with an updated ``record``: the JSON member is rewritten
    (key, ``record`` keys replaced by ``record``'s), every other member (frames, telemetry) is kept
    byte for byte under the new name. The result is what :func:`encode_sample` gives for the same
    frames with that key and record, so re-curation can reuse stored frames without decoding."""
    if not KEY_RE.match(new_key):
        raise SampleError(new_key, "key must match [A-Za-z0-9][A-Za-z0-9_-]* (no dots or slashes)")
    if not members or split_member_name(members[0][0]) is None or split_member_name(members[0][0])[1] != JSON_EXT:  # type: ignore[index]
        raise SampleError(members[0][0] if members else "?", "expected the sample's JSON member first (encode_sample's member order)")
    old_key = split_member_name(members[0][0])[0]  # type: ignore[index]
    try:
        meta = json.loads(members[0][1])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SampleError(old_key, f"JSON member does not parse ({exc})", member=members[0][0]) from exc
    meta["key"] = new_key
    meta["record"] = {**meta.get("record", {}), **record}
    out = [(f"{new_key}.{JSON_EXT}", dumps_deterministic(meta))]
    for name, data in members[1:]:
        split = split_member_name(name)
        if split is None or split[0] != old_key:
            raise SampleError(old_key, f"member {name!r} does not belong to the sample", member=name)
        out.append((f"{new_key}.{split[1]}", data))
    return out
