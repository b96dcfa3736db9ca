"""Decoded frame -> resized RGB uint8, fast.

When shrinking 8-bit 4:2:0 frames (``yuv420p``/``yuvj420p``, what H.264/HEVC cameras produce) the
planes are resized *before* colour conversion: luma with ``cv2.INTER_AREA`` straight to the
output size, chroma to the same size (INTER_AREA when shrinking, INTER_LINEAR when
growing), then one affine YUV->RGB transform (BT.601 or BT.709 per the frame's colourspace,
limited or full range per its colour range). That is ~4x less colour-conversion work than
converting the full frame and then shrinking, and matches it to within rounding (checked
in tests). Other pixel formats, and frames kept at their size, take the generic path: swscale to rgb24 at full size, then
``cv2.resize(INTER_AREA)``.
"""

from __future__ import annotations

from functools import lru_cache
import threading
from typing import Any

import cv2
import numpy as np

from fleetcore.video.geometry import output_size

#: changes whenever the stored pixels of some source change (part of the curate config version)
CONVERT_VERSION = "2"
_FAST_FORMATS = {"yuv420p": False, "yuvj420p": True}  # name -> full range
_BT709 = 1  # AVCOL_SPC_BT709
_RANGE_JPEG = 2  # AVCOL_RANGE_JPEG


def set_opencv_threads(n: int) -> int:
    """Set OpenCV's worker-thread count for this process (``cv2.setNumThreads``); returns the old one.

    The curate job's workers run OpenCV single-threaded (``CurateConfig.opencv_threads``): each
    conversion call is ~0.1 ms, too short for OpenCV's pool, whose threads then compete for the
    cores with FFmpeg's decoder threads (measured with ``bench/decode.py``: full-coverage extraction
    at 1280x720 went from 0.67 to 0.81 of the ``ffmpeg -f null`` bound with one OpenCV thread).
    The job's own threads (decoder, post-processing, privacy detection, JPEG encoding) provide the parallelism.
    """
    old = cv2.getNumThreads()
    cv2.setNumThreads(int(n))
    return old


_threads_lock = threading.Lock()
_held: dict[str, int] = {"holders": 0, "original": 0}


def hold_opencv_threads(n: int) -> None:
    """:func:`set_opencv_threads` for a worker that shares the process with others (Beam's
    multi-threaded local runner runs several): the first holder remembers the process's setting and
    the last :func:`release_opencv_threads` puts it back."""
    with _threads_lock:
        old = set_opencv_threads(n)
        if _held["holders"] == 0:
            _held["original"] = old
        _held["holders"] += 1


def release_opencv_threads() -> None:
    with _threads_lock:
        if _held["holders"] > 0:
            _held["holders"] -= 1
            if _held["holders"] == 0:
                set_opencv_threads(_held["original"])


@lru_cache(maxsize=8)
def _yuv_to_rgb_matrix(bt709: bool, full_range: bool) -> np.ndarray:
    kr, kb = (0.2126, 0.0722) if bt709 else (0.299, 0.114)
    kg = 1.0 - kr - kb
    if full_range:
        ys, cs, y0 = 1.0, 1.0, 0.0
    else:
        ys, cs, y0 = 255.0 / 219.0, 255.0 / 224.0, 16.0
    # R = ys(Y-y0) + cs*2(1-kr)(V-128); B = ys(Y-y0) + cs*2(1-kb)(U-128); G from Y = kr R + kg G + kb B
    rv = cs * 2 * (1 - kr)
    bu = cs * 2 * (1 - kb)
    gu = -bu * kb / kg
    gv = -rv * kr / kg
    m = np.array(
        [
            [ys, 0.0, rv],
            [ys, gu, gv],
            [ys, bu, 0.0],
        ],
        dtype=np.float64,
    )
    offset = -(m @ np.array([y0, 128.0, 128.0]))
    return np.hstack([m, offset[:, None]]).astype(np.float32)


def _shrink_plane(p: np.ndarray, ow: int, oh: int) -> np.ndarray:
    """Area-shrink a plane. OpenCV's INTER_AREA is fast for integer factors but slow for fractional
    ones (960 -> 640: ~1 ms). A shrink by less than 2x is bilinear (its two taps per output pixel reach
    every source pixel, as an area filter does; 0.15 ms at 960x540, and nearer the full-frame area
    reference than the alternative); a larger fractional one is a bilinear step to the next integer
    multiple of the output followed by an integer area shrink."""
    h, w = p.shape[:2]
    k = -(-w // ow)  # ceil
    if w % ow == 0 and h % oh == 0 or k < 2 or -(-h // oh) > k:
        return cv2.resize(p, (ow, oh), interpolation=cv2.INTER_AREA)
    if w < 2 * ow and h < 2 * oh:
        return cv2.resize(p, (ow, oh), interpolation=cv2.INTER_LINEAR)
    up = cv2.resize(p, (k * ow, k * oh), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(up, (ow, oh), interpolation=cv2.INTER_AREA)


def _plane(p: Any, w: int, h: int) -> np.ndarray:
    a = np.frombuffer(p, dtype=np.uint8).reshape(-1, p.line_size)
    return a[:h, :w]


def _into(out: np.ndarray | None, result: np.ndarray) -> np.ndarray:
    if out is None or result is out:
        return result
    if not np.shares_memory(result, out):
        out[...] = result
    return out


def frame_to_rgb(frame: Any, max_side: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 HxWx3 of a PyAV VideoFrame, longest side == max_side (never upscaled).

    ``out``: a C-contiguous uint8 array of the output shape to write into (e.g. a slot of a
    preallocated per-clip arena: large arrays get transparent huge pages, which makes keeping
    many frames much cheaper than one fresh allocation per frame).
    """
    w, h = frame.width, frame.height
    ow, oh = output_size(w, h, max_side)
    if out is not None and out.shape != (oh, ow, 3):
        raise ValueError(f"out has shape {out.shape}; expected {(oh, ow, 3)}")
    fmt = frame.format.name
    if fmt in _FAST_FORMATS and w % 2 == 0 and h % 2 == 0 and (ow, oh) != (w, h):
        full = _FAST_FORMATS[fmt] or getattr(frame, "color_range", 0) == _RANGE_JPEG
        bt709 = getattr(frame, "colorspace", 0) == _BT709
        y = _plane(frame.planes[0], w, h)
        u = _plane(frame.planes[1], w // 2, h // 2)
        v = _plane(frame.planes[2], w // 2, h // 2)
        y = _shrink_plane(y, ow, oh)
        cinterp = cv2.INTER_AREA if ow <= w // 2 else cv2.INTER_LINEAR
        if (ow, oh) != (w // 2, h // 2):
            u = cv2.resize(u, (ow, oh), interpolation=cinterp)
            v = cv2.resize(v, (ow, oh), interpolation=cinterp)
        yuv = cv2.merge([y, u, v])
        return _into(out, cv2.transform(yuv, _yuv_to_rgb_matrix(bt709, full), dst=out))
    rgb = frame.to_ndarray(format="rgb24")
    if (ow, oh) != (w, h):
        return _into(out, cv2.resize(rgb, (ow, oh), dst=out, interpolation=cv2.INTER_AREA))
    return _into(out, rgb)


def frame_to_rgb_reference(frame: Any, max_side: int) -> np.ndarray:
    """The generic path (swscale rgb24 at full size, then INTER_AREA), for checks."""
    ow, oh = output_size(frame.width, frame.height, max_side)
    rgb = frame.to_ndarray(format="rgb24")
    if (ow, oh) != (frame.width, frame.height):
        rgb = cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_AREA)
    return rgb
