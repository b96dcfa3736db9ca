"""Vision labels (OpenCV) per camera on a few sampled frames, pedestrians (HOG) on the front
camera, and the telemetry-vs-vision light cross-check.

Per camera ``<cam>`` (labeller ``vision``):

``<cam>.brightness``     mean luma 0..255 over the sampled frames
``<cam>.exposure``       ``under`` (mean < 50 or > 60 % of pixels < 20) / ``over`` (mean > 205 or
                         > 50 % of pixels > 245) / ``ok`` — majority over the sampled frames
                         (6 evenly spaced distinct frames per camera)
``<cam>.sharpness``      variance of the Laplacian of the grey frame scaled to 480 px longest side,
                         90th percentile over an 8x8 cell grid (robust to a sharp timestamp overlay
                         on a blurred frame), median over the sampled frames; ``<cam>.blurry`` =
                         >= 20 % of the sampled frames have sharpness < 15 (sharp road scenes give
                         100-1500, a Gaussian blur of sigma 3 about 10)
``<cam>.blocked``        camera covered / smeared in >= 20 % of up to 16 evenly spaced frames
                         (``<cam>.blocked_frames_share``), each shrunk by an integer factor to about 240 px. On an 8x8 grid
                         of cells, a cell is flat
                         when its luma std < 6. A frame is blocked when >= 90 % of the cells are
                         flat (featureless), or >= 60 % of the cells are flat, not dark (mean > 35)
                         and of one colour (each channel within 12: mud, smear, a cover; a
                         flat-shaded sky + road + grass is several colours), or >= 70 % are flat
                         and the frame has no light (99.5th percentile luma < 50: capped lens). A
                         night scene is mostly dark and flat too, but it has lights and edges in
                         more than 10 % of the cells, so it is not blocked.
                         ``<cam>.blocked_fraction`` = mean flat-cell share
``<cam>.motion_energy``  mean Farneback optical-flow magnitude (pixels per sample interval on
                         frames scaled to 160 px wide) over up to 3 consecutive frame pairs
``<cam>.scene_cut``      a consecutive-frame colour-histogram correlation < 0.5 inside the clip;
                         ``<cam>.scene_cut_sample`` = the sample index after the cut (or -1)
``scene_light``          ``bright`` / ``dim`` / ``dark`` from the primary camera's brightness
                         (>= 90 / 40..90 / < 40)
``light_conflict``       ``none``, ``night_but_bright`` (sun < -6 deg but bright frames: street
                         lights, tunnel exit), ``day_but_dark`` (sun > 6 deg but dark frames: tunnel,
                         covered camera) or ``unknown`` (no GPS or no frames). Both source values are
                         kept (``time_of_day`` from telemetry here too, and ``scene_light``).

Labeller ``pedestrians`` (front camera, or the first camera, 2 frames: the middles of the two
halves of the clip; frames lower than 432 px
are upscaled; image pyramid step 1.1; SVM score >= 1.0 after non-maximum suppression): ``pedestrians`` (bool), ``pedestrian_count`` (max per frame) and
``pedestrian_boxes`` = ``[[sample, x, y, w, h, score], ...]`` in frame pixels.
"""

from __future__ import annotations

from typing import Any, Mapping

import cv2
import numpy as np

from fleetcore.labels.base import LabelValue, camera_frames, pick_evenly, primary_camera, register_labeller
from fleetcore.labels.telemetry import clip_sun

ANALYSIS_SIDE = 480
FRAMES_PER_CAMERA = 6
BLURRY_BELOW = 15.0
BLURRY_FRAMES_SHARE = 0.2
FLAT_STD = 6.0
GRID = 8
BLOCKED_FLAT_SHARE = 0.7
FEATURELESS_SHARE = 0.9
BLOCKED_FRAMES_SHARE = 0.2
BLOCKED_CHECK_FRAMES = 16
BLOCKED_SIDE = 240
COVER_SHARE = 0.6
SAME_COLOUR = 12.0
FLAT_BRIGHT_MEAN = 35.0
NO_LIGHT_P995 = 50.0
SCENE_CUT_CORR = 0.5
BRIGHT = 90.0
DARK = 40.0


def grey_scaled(frame: np.ndarray, side: int = ANALYSIS_SIDE) -> np.ndarray:
    g = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    h, w = g.shape
    s = side / max(h, w)
    if s < 1.0:
        g = cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return g


def exposure(g: np.ndarray) -> str:
    m = float(g.mean())
    if m < 50 or float(np.mean(g < 20)) > 0.6:
        return "under"
    if m > 205 or float(np.mean(g > 245)) > 0.5:
        return "over"
    return "ok"


def sharpness(g: np.ndarray) -> float:
    """90th percentile over an 8x8 cell grid of the variance of the Laplacian: robust to a small
    sharp overlay (timestamp, logo) on a blurred frame and to flat sky or road on a sharp one."""
    lap = cv2.Laplacian(g, cv2.CV_64F)
    h, w = g.shape
    ys = np.linspace(0, h, GRID + 1).astype(int)
    xs = np.linspace(0, w, GRID + 1).astype(int)
    cells = [lap[ys[i] : ys[i + 1], xs[j] : xs[j + 1]].var() for i in range(GRID) for j in range(GRID) if ys[i + 1] > ys[i] and xs[j + 1] > xs[j]]
    return float(np.percentile(cells, 90)) if cells else 0.0


def shrink_by_integer(frame: np.ndarray, side: int) -> np.ndarray:
    """``frame`` averaged over k x k blocks, k = round(longest side / ``side``) (>= 1), edges
    cropped to a multiple of k: OpenCV's fast integer-factor area path (a fractional INTER_AREA
    costs several times more)."""
    h, w = frame.shape[:2]
    k = max(1, round(max(h, w) / side))
    if k == 1:
        return np.ascontiguousarray(frame)
    return cv2.resize(frame[: h - h % k, : w - w % k], ((w - w % k) // k, (h - h % k) // k), interpolation=cv2.INTER_AREA)


def _cell_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column starts of the GRID x GRID cells of an h x w image and each cell's pixel count."""
    ys = np.linspace(0, h, GRID + 1).astype(int)
    xs = np.linspace(0, w, GRID + 1).astype(int)
    counts = np.outer(np.diff(ys), np.diff(xs)).astype(np.float64)
    return ys, xs, counts


def _cell_sums(a: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Per-cell sums of ``a`` (H x W or H x W x C) over the grid (``np.add.reduceat`` on both axes)."""
    return np.add.reduceat(np.add.reduceat(a, ys[:-1], axis=0), xs[:-1], axis=1)


def blocked_stats(frame: np.ndarray, side: int = BLOCKED_SIDE) -> tuple[bool, float]:
    """(blocked, flat share of the cells) of one RGB frame; see the module docstring."""
    small = shrink_by_integer(frame, side)
    g = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    h, w = g.shape
    n = GRID * GRID
    if h < GRID or w < GRID:  # too small to grid: one cell per pixel row/column is meaningless
        return False, 0.0
    ys, xs, counts = _cell_grid(h, w)
    gf = g.astype(np.float64)
    mean = _cell_sums(gf, ys, xs) / counts
    var = np.maximum(_cell_sums(gf * gf, ys, xs) / counts - mean * mean, 0.0)
    flat = np.sqrt(var) < FLAT_STD
    flat_share = int(flat.sum()) / n
    cover = 0
    if flat.any():
        cols = (_cell_sums(small.astype(np.float64), ys, xs) / counts[:, :, None])[flat]
        bright = cols.mean(axis=1) > FLAT_BRIGHT_MEAN
        same = (np.abs(cols[:, None, :] - cols[None, :, :]).max(axis=2) <= SAME_COLOUR) & bright[None, :]
        cover = int((same.sum(axis=1) * bright).max())
    no_light = float(np.percentile(g, 99.5)) < NO_LIGHT_P995
    blocked = (
        flat_share >= FEATURELESS_SHARE
        or cover / n >= COVER_SHARE
        or (flat_share >= BLOCKED_FLAT_SHARE and no_light)
    )
    return blocked, flat_share


def motion_energy(frames: list[np.ndarray]) -> float:
    """Mean Farneback flow magnitude over consecutive pairs (160 px wide grey frames)."""
    mags = []
    prev = None
    for f in frames:
        g = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY)
        h, w = g.shape
        g = cv2.resize(g, (160, max(1, round(h * 160 / w))), interpolation=cv2.INTER_AREA)
        if prev is not None and prev.shape == g.shape:
            flow = cv2.calcOpticalFlowFarneback(prev, g, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            mags.append(float(np.linalg.norm(flow, axis=2).mean()))
        prev = g
    return float(np.mean(mags)) if mags else float("nan")


def _hist(f: np.ndarray) -> np.ndarray:
    # nearest-neighbour sampling (9,216 pixels): an area average reads every pixel and costs 20x more
    small = cv2.resize(np.ascontiguousarray(f), (128, 72), interpolation=cv2.INTER_NEAREST)
    h = cv2.calcHist([small], [0, 1, 2], None, [8, 8, 8], [0, 256, 0, 256, 0, 256])
    return cv2.normalize(h, h).flatten()


def scene_cut(frames: list[tuple[int, np.ndarray]]) -> tuple[bool, int, float]:
    """(cut?, sample index after the strongest cut or -1, min correlation) over consecutive frames."""
    worst, at = 1.0, -1
    prev = None
    for i, f in frames:
        h = _hist(f)
        if prev is not None:
            c = float(cv2.compareHist(prev, h, cv2.HISTCMP_CORREL))
            if c < worst:
                worst, at = c, i
        prev = h
    cut = worst < SCENE_CUT_CORR
    return cut, (at if cut else -1), worst


def scene_light(brightness: float) -> str:
    if not np.isfinite(brightness):
        return "unknown"
    if brightness >= BRIGHT:
        return "bright"
    if brightness < DARK:
        return "dark"
    return "dim"


#: the upper share of a road frame that is mostly sky (frames_time_of_day)
SKY_SHARE = 0.4
#: frames_time_of_day thresholds on grey levels (0..255): see its docstring
NIGHT_SKY, NIGHT_FRAME, DAY_SKY = 50.0, 80.0, 100.0
#: a lit night: the sky glows (light pollution, a camera's gain) up to LIT_NIGHT_SKY, the frame's median is
#: below LIT_NIGHT_FRAME, and at least LIGHTS_SHARE of the pixels are lights (luma >= LIGHT_LEVEL)
LIT_NIGHT_SKY, LIT_NIGHT_FRAME, LIGHT_LEVEL, LIGHTS_SHARE = 70.0, 60.0, 235, 0.002


def frames_time_of_day(greys: list[np.ndarray]) -> str:
    """``day`` / ``dusk_dawn`` / ``night`` from grey frames of a forward camera, for clips without a
    GPS fix (no solar elevation). Per frame: the median luma of the upper ``SKY_SHARE`` (mostly sky:
    bright by day, dark at night; a median, so street lamps and a dashcam's text overlay up there
    do not lift it), the mean and median luma of the whole frame, and the share of pixels that are
    lights (saturated points: lamps, headlights); then the median of each over the frames.

    ``night`` when the sky is darker than ``NIGHT_SKY`` and the frame's mean below ``NIGHT_FRAME``
    (headlights light the road, not the sky), or when the sky glows no brighter than
    ``LIT_NIGHT_SKY``, the frame's median is below ``LIT_NIGHT_FRAME`` and lights make up at least
    ``LIGHTS_SHARE`` of it (a city at night: a dusk scene is dark without lamps, or has a bright
    sky); ``day`` when the sky is at least ``DAY_SKY`` or the frame's mean at least ``BRIGHT``;
    else ``dusk_dawn``. ``unknown`` without frames."""
    if not greys:
        return "unknown"
    sky = float(np.median([np.median(g[: max(1, int(g.shape[0] * SKY_SHARE))]) for g in greys]))
    mean = float(np.median([g.mean() for g in greys]))
    med = float(np.median([np.median(g) for g in greys]))
    lights = float(np.median([np.count_nonzero(g >= LIGHT_LEVEL) / g.size for g in greys]))
    if sky < NIGHT_SKY and mean < NIGHT_FRAME:
        return "night"
    if sky <= LIT_NIGHT_SKY and med < LIT_NIGHT_FRAME and lights >= LIGHTS_SHARE:
        return "night"
    if sky >= DAY_SKY or mean >= BRIGHT:
        return "day"
    return "dusk_dawn"


def light_conflict(tod: str, light: str) -> str:
    if tod == "unknown" or light == "unknown":
        return "unknown"
    if tod == "night" and light == "bright":
        return "night_but_bright"
    if tod == "day" and light == "dark":
        return "day_but_dark"
    return "none"


def _majority(values: list[Any]) -> Any:
    return max(sorted(set(values), key=str), key=values.count)


@register_labeller
class VisionLabeller:
    name = "vision"
    version = "4"

    def __init__(self, frames_per_camera: int = FRAMES_PER_CAMERA) -> None:
        self.frames_per_camera = frames_per_camera

    def label(self, clip: Any, telemetry: Mapping[str, np.ndarray], *, start_utc_ns: int) -> dict[str, LabelValue]:
        out: dict[str, LabelValue] = {}
        bright_by_cam: dict[str, float] = {}
        greys_by_cam: dict[str, list[np.ndarray]] = {}
        for cam in clip.cameras:
            present = camera_frames(clip, cam)
            if not present:
                continue
            picked = pick_evenly(present, self.frames_per_camera)
            greys = greys_by_cam[cam] = [grey_scaled(f) for _, f in picked]
            b = float(np.mean([g.mean() for g in greys]))
            bright_by_cam[cam] = b
            out[f"{cam}.brightness"] = b
            out[f"{cam}.exposure"] = _majority([exposure(g) for g in greys])
            sharps = [sharpness(g) for g in greys]
            out[f"{cam}.sharpness"] = float(np.median(sharps))
            out[f"{cam}.blurry"] = sum(x < BLURRY_BELOW for x in sharps) / len(sharps) >= BLURRY_FRAMES_SHARE
            stats = [blocked_stats(f) for _, f in pick_evenly(present, BLOCKED_CHECK_FRAMES)]
            share = sum(s[0] for s in stats) / len(stats)
            out[f"{cam}.blocked"] = share >= BLOCKED_FRAMES_SHARE
            out[f"{cam}.blocked_frames_share"] = share
            out[f"{cam}.blocked_fraction"] = float(np.mean([s[1] for s in stats]))
            # motion: up to 3 consecutive pairs spread over the clip
            pairs = []
            for k in pick_evenly(list(range(len(present) - 1)), 3):
                pairs.append(motion_energy([present[k][1], present[k + 1][1]]))
            n_samples = sum(f is not None for f in clip.frames[cam])
            frozen = len(present) == 1 and n_samples > 1  # every sample shows the same source frame
            out[f"{cam}.motion_energy"] = float(np.mean(pairs)) if pairs else (0.0 if frozen else float("nan"))
            cut, at, corr = scene_cut(present)
            out[f"{cam}.scene_cut"] = cut
            out[f"{cam}.scene_cut_sample"] = at
            out[f"{cam}.min_hist_corr"] = corr
        prim = primary_camera(clip)
        light = scene_light(bright_by_cam.get(prim, float("nan")) if prim else float("nan"))
        tod, _ = clip_sun(telemetry, np.asarray(clip.sample_times_ns, dtype=np.int64), start_utc_ns)
        out["scene_light"] = light
        out["light_conflict"] = light_conflict(tod, light)
        source = "gps"
        if tod == "unknown":  # no GPS fix: what the forward camera sees decides
            tod = frames_time_of_day(greys_by_cam.get(prim, []) if prim else [])
            source = "frames" if tod != "unknown" else "none"
        out["time_of_day"] = tod
        out["time_of_day_source"] = source
        return out


def _nms(boxes: list[tuple[float, float, float, float, float]], iou: float = 0.4) -> list[tuple[float, float, float, float, float]]:
    keep: list[tuple[float, float, float, float, float]] = []
    for b in sorted(boxes, key=lambda r: (-r[4], r[:4])):
        ok = True
        for k in keep:
            x0, y0 = max(b[0], k[0]), max(b[1], k[1])
            x1, y1 = min(b[0] + b[2], k[0] + k[2]), min(b[1] + b[3], k[1] + k[3])
            inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
            if inter / (b[2] * b[3] + k[2] * k[3] - inter) > iou:
                ok = False
                break
        if ok:
            keep.append(b)
    return keep


@register_labeller
class PedestrianLabeller:
    """HOG + linear SVM people detector (OpenCV's default) on a few front-camera frames."""

    name = "pedestrians"
    version = "2"

    def __init__(self, frames: int = 2, min_height: int = 432, min_score: float = 1.0, scale: float = 1.1) -> None:
        self.frames = frames
        self.scale = scale
        self.min_height = min_height
        self.min_score = min_score
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, frame: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        h, w = frame.shape[:2]
        s = max(1.0, self.min_height / h)
        img = np.ascontiguousarray(frame)
        if s > 1.0:
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
        rects, weights = self.hog.detectMultiScale(img, winStride=(8, 8), padding=(8, 8), scale=self.scale)
        found = []
        for (x, y, bw, bh), wt in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            if float(wt) >= self.min_score:
                found.append((float(x) / s, float(y) / s, float(bw) / s, float(bh) / s, float(wt)))
        return _nms(found)

    def label(self, clip: Any, telemetry: Mapping[str, np.ndarray], *, start_utc_ns: int) -> dict[str, LabelValue]:
        cam = primary_camera(clip)
        present = camera_frames(clip, cam) if cam else []
        boxes: list[list[float]] = []
        count = 0
        # the middles of `frames` equal stretches of the clip (2 frames: at 1/4 and 3/4), not its edges
        picked = sorted({min(len(present) - 1, int((j + 0.5) * len(present) / self.frames)) for j in range(self.frames)}) if present else []
        for i, f in (present[j] for j in picked):
            found = self.detect(f)
            count = max(count, len(found))
            boxes.extend([[i, round(x, 1), round(y, 1), round(bw, 1), round(bh, 1), round(sc, 3)] for x, y, bw, bh, sc in found])
        return {"pedestrians": count > 0, "pedestrian_count": count, "pedestrian_boxes": boxes, "camera": cam or "none"}
