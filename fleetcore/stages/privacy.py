"""Privacy: detect faces and licence plates in every frame of every camera and blur them in place,
before the frames are JPEG-encoded (the ``privacy`` clip stage).

Guarantees
----------
* Every present frame of every camera is processed (``frames_processed`` counts distinct frame
  objects; samples sharing a source frame share the blurred array); a read-only frame is copied,
  blurred and replaced in ``clip.frames`` (copy on write).
* A frame is never passed on unblurred because a detector failed: if a model or cascade cannot be
  found or loaded, or detection raises, the stage raises :class:`PrivacyError` and the pipeline quarantines
  the clip (a load failure quarantines every clip, loudly logged once at build time).
* Only the padded boxes are modified; every other pixel is left byte-identical.

Detection (``backend="learned"``, the default) runs two ONNX models through onnxruntime
(``fleetcore.stages.learned``): CenterFace for faces (on the frame scaled by ``face_scales``, 1.5:
faces from about 10 px on a 640-px frame) and the PP-OCRv4 text detector for plates (text regions
of a plate's shape). The detection frames of all cameras of a clip run as batches of
``batch_size`` (default: 8 on CUDA; one frame at a time on the CPU, where a batch of large frames
runs slower per frame), on the CUDA execution provider when onnxruntime has one (``docs/labels.md`` gives
the recall floors the test suite holds it to on real annotated images). ``backend="haar"`` runs the OpenCV Haar cascades instead (frontal face,
profile face in both directions, Russian-style plate; a fallback that misses most real faces) on a
grey copy of the frame downscaled to ``detect_max_side`` (384 px; histogram-equalised only with
``equalize=True``), one octave of object sizes at a time on a halving pyramid
(``_Detector._run``); plate boxes wider than a third of the frame are texture false positives and
are dropped.
Detection runs on every ``detect_every``-th distinct frame (default 6) and the last one, and half
way to the neighbouring detection frames around a box that matches nothing there
(``refinement_frames``); each frame is blurred with the boxes found within ``detect_every`` frames
of it, before and after, plus each box interpolated towards its match on the next detection frame
and matched boxes coasting on at their velocity (``boxes_per_frame``). The detection
frames of all cameras are shared out over ``threads`` threads (Haar; each with its own
CascadeClassifier objects: one object shared by two threads corrupts both detections) or batched
(learned; ``threads`` is onnxruntime's intra-op thread count). ``bench/privacy.py`` measures recall
and cost per detector and setting.
Boxes are padded by ``padding`` (10 %) of their size on each side, then anonymised irreversibly
(``blur_region``): averaged down to 6 cells across and blurred back up with a Gaussian whose
sigma scales with the box, or shown as those 6 cells (``mode="pixelate"``), or filled black
(``mode="fill"``).

Cascade files are looked up in ``cascade_dirs``, then ``cv2.data.haarcascades``, then the copies
shipped in ``fleetcore/labels/data/haarcascades`` (gzip; from the OpenCV 4.14 wheel, Intel licence:
see LICENSE.txt there) — OpenCV 5 wheels no longer ship them.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Sequence

import cv2
import numpy as np

from fleetcore.errors import FleetError
from fleetcore.stages.options import PrivacyOptions
from fleetcore.stages.registry import register

log = logging.getLogger(__name__)

PRIVACY_VERSION = "6"
VENDORED_CASCADES = Path(__file__).resolve().parents[1] / "labels" / "data" / "haarcascades"

#: detector name -> (kind, cascade file stem, scaleFactor, minNeighbors, min size (w, h), also mirrored,
#: max box width as a share of the detection frame's width; None = no limit)
DETECTORS: dict[str, tuple[str, str, float, int, tuple[int, int], bool, float | None]] = {
    "face": ("face", "haarcascade_frontalface_default", 1.15, 3, (20, 20), False, None),
    "face_profile": ("face", "haarcascade_profileface", 1.1, 4, (20, 20), True, None),
    # a plate wider than a third of the frame is a texture false positive (grass, gravel), not a plate
    "plate": ("plate", "haarcascade_russian_plate_number", 1.12, 2, (30, 10), False, 1 / 3),
    "plate_rus16": ("plate", "haarcascade_license_plate_rus_16stages", 1.05, 3, (30, 10), False, 1 / 3),
}

Box = tuple[int, int, int, int]
#: detectMultiScale's own grouping tolerance (OpenCV's GROUP_EPS)
GROUP_EPS = 0.2
#: how many hits a hit on a halved octave counts for when grouping (see _Detector._run): with 2,
#: bench/privacy.py's coverage is the single call's or better at every face and plate size tried
#: (40-160 px faces, 90-200 px plates); 1 loses faces of twice the window, 4 adds false positives
COARSE_HIT_WEIGHT = 2
#: learned detectors' frames per batch on CUDA when ``batch_size`` is None (the CPU runs one at a time)
CUDA_BATCH = 8
#: how many detection frames ahead a box's match is looked for when interpolating (see boxes_per_frame)
INTERPOLATE_HOPS = 3


class PrivacyError(FleetError):
    """A clip cannot be anonymised: it must be quarantined, never passed on unblurred."""

    def __init__(self, clip_id: str, reason: str) -> None:
        self.clip_id = clip_id
        self.reason = reason
        super().__init__(f"clip {clip_id}: privacy", reason, code="privacy_failed")


def find_cascade(stem: str, cascade_dirs: Sequence[str | Path] = ()) -> Path | None:
    dirs = [Path(d) for d in cascade_dirs]
    cv2_data = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if cv2_data:
        dirs.append(Path(cv2_data))
    dirs.append(VENDORED_CASCADES)
    for d in dirs:
        for name in (f"{stem}.xml", f"{stem}.xml.gz"):
            if (d / name).is_file():
                return d / name
    return None


@dataclass
class _Detector:
    name: str
    kind: str
    path: Path
    cascade: Any  # used by the thread that built the stage
    scale_factor: float
    min_neighbors: int
    min_size: tuple[int, int]
    mirrored: bool
    max_width_share: float | None = None
    window: tuple[int, int] = (24, 24)  # the cascade's own window (w, h), read when loaded
    owner: int = field(default_factory=threading.get_ident)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def classifier(self) -> Any:
        """This thread's CascadeClassifier: ``detectMultiScale`` keeps per-call state in the object,
        so two threads must never share one (shared, their detections corrupt each other)."""
        if threading.get_ident() == self.owner:
            return self.cascade
        c = getattr(self._local, "cascade", None)
        if c is None:
            c = self._local.cascade = load_cascade(self.path)
        return c

    def _run(self, grey: np.ndarray) -> np.ndarray:
        """OpenCV's detectMultiScale, one octave at a time. On each octave (the grey frame, then
        halved by INTER_AREA while the window still fits) it scans the window sizes from the
        window to just under twice it, which OpenCV scans on a 2-px grid; larger objects are left
        to the next octave. (A single call over every size scans sizes of twice the window and
        more on a 1-px grid, which made the face cascade about 1.5 times as costly, for no better
        coverage.)
        The raw hits of all octaves are then grouped together as detectMultiScale groups its own
        (``groupRectangles``, eps 0.2, kept with more than ``min_neighbors`` hits). A hit on a
        halved octave counts ``COARSE_HIT_WEIGHT`` times, since that octave is scanned on a grid
        four times sparser than OpenCV's own scan of those sizes."""
        c = self.classifier()
        ww, wh = self.window
        max_w = max_h = None
        if self.max_width_share is not None:
            max_w = max(self.min_size[0] + 1, int(grey.shape[1] * self.max_width_share))
            max_h = max(self.min_size[1] + 1, int(max_w * self.min_size[1] / self.min_size[0]) * 2)
        hits = []
        g, f = grey, 1
        while g.shape[1] >= ww and g.shape[0] >= wh:
            # this octave's size range, in its own pixels (an object of w px is w / f px here)
            lo = (max(ww, -(-self.min_size[0] // f)), max(wh, -(-self.min_size[1] // f)))
            hi = (2 * ww - 1, 2 * wh - 1)
            if max_w is not None and max_h is not None:
                hi = (min(hi[0], max_w // f), min(hi[1], max_h // f))
                if hi[0] < ww or hi[1] < wh:  # past the largest size wanted
                    break
            if lo[0] <= hi[0] and lo[1] <= hi[1]:
                r = np.asarray(c.detectMultiScale(g, scaleFactor=self.scale_factor, minNeighbors=0, minSize=lo, maxSize=hi)).reshape(-1, 4)
                hits.append(np.repeat(r * f, 1 if f == 1 else COARSE_HIT_WEIGHT, axis=0))
            if g.shape[1] // 2 < ww or g.shape[0] // 2 < wh:  # the window no longer fits a halved frame
                break
            g = cv2.resize(g, (g.shape[1] // 2, g.shape[0] // 2), interpolation=cv2.INTER_AREA)
            f *= 2
        raw = [[int(v) for v in b] for b in np.concatenate(hits)] if hits else []
        if not raw:
            return np.zeros((0, 4), dtype=np.int64)
        boxes, _ = cv2.groupRectangles(raw, self.min_neighbors, GROUP_EPS)
        return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)

    def detect(self, grey: np.ndarray) -> list[Box]:
        found: list[Box] = [(int(x), int(y), int(bw), int(bh)) for x, y, bw, bh in self._run(grey)]
        if self.mirrored:
            w = grey.shape[1]
            found += [(int(w - x - bw), int(y), int(bw), int(bh)) for x, y, bw, bh in self._run(cv2.flip(grey, 1))]
        return found


def load_cascade(path: Path) -> Any:
    if not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(
            f"this OpenCV build ({cv2.__version__}) has no CascadeClassifier; install opencv-contrib-python-headless"
        )
    try:
        c = cv2.CascadeClassifier(str(path))
    except (cv2.error, SystemError) as exc:  # a malformed XML raises from inside the constructor
        raise RuntimeError(f"{path}: cascade failed to load ({str(exc).strip().splitlines()[-1]})") from exc
    if c.empty():
        raise RuntimeError(f"{path}: cascade failed to load (empty classifier)")
    return c


def pad_box(box: Box, padding: float, shape: tuple[int, ...]) -> Box:
    x, y, w, h = box
    px, py = int(round(w * padding)), int(round(h * padding))
    x0, y0 = max(0, x - px), max(0, y - py)
    x1, y1 = min(shape[1], x + w + px), min(shape[0], y + h + py)
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


#: cells across the longer side of a box that the blur keeps (see blur_region)
BLUR_CELLS = 6


def blur_region(frame: np.ndarray, box: Box, mode: Literal["gaussian", "pixelate", "fill"] = "gaussian") -> None:
    """Anonymise ``frame[y:y+h, x:x+w]`` in place (box already padded and clipped), irreversibly:
    the region is first averaged down to ``BLUR_CELLS`` cells across its longer side (whatever its
    size: a small face keeps no more detail than a large one, and nothing finer than a cell can be
    recovered), then ``gaussian`` smooths it back up (a Gaussian of sigma = max(w, h) / 8 over the
    bilinear upscale), ``pixelate`` shows the cells as blocks; ``fill`` paints the box black."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return
    if mode == "fill":
        frame[y : y + h, x : x + w] = 0
        return
    roi = frame[y : y + h, x : x + w]
    cell = max(1.0, max(w, h) / BLUR_CELLS)
    small = cv2.resize(roi, (max(1, round(w / cell)), max(1, round(h / cell))), interpolation=cv2.INTER_AREA)
    if mode == "pixelate":
        frame[y : y + h, x : x + w] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        return
    up = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    sigma = max(2.0, max(w, h) / 8.0)
    k = int(sigma * 6) | 1
    frame[y : y + h, x : x + w] = cv2.GaussianBlur(up, (k, k), sigma, borderType=cv2.BORDER_REPLICATE)


#: what a failing detector or blur raises (the clip is quarantined with the message)
_DETECT_ERRORS = (cv2.error, ValueError, RuntimeError, AttributeError, TypeError, MemoryError)


class PrivacyStage:
    name = "privacy"

    def __init__(
        self,
        *,
        backend: Literal["learned", "haar"] = PrivacyOptions.backend,
        detectors: Sequence[str] = PrivacyOptions.detectors,
        face_threshold: float = PrivacyOptions.face_threshold,
        face_scales: Sequence[float] = PrivacyOptions.face_scales,
        plate_score: float = PrivacyOptions.plate_score,
        detect_max_side: int = PrivacyOptions.detect_max_side,
        detect_every: int = PrivacyOptions.detect_every,
        padding: float = PrivacyOptions.padding,
        mode: Literal["gaussian", "pixelate", "fill"] = PrivacyOptions.mode,
        cascade_dirs: Sequence[str | Path] = PrivacyOptions.cascade_dirs,
        model_dirs: Sequence[str | Path] = PrivacyOptions.model_dirs,
        threads: int | None = PrivacyOptions.threads,
        batch_size: int | None = PrivacyOptions.batch_size,
        device: Literal["auto", "cpu", "cuda"] = PrivacyOptions.device,
        equalize: bool = PrivacyOptions.equalize,
    ) -> None:
        """The defaults are ``PrivacyOptions``' (what the curate job runs with); see ``from_options``."""
        #: detection threads (default: one per CPU), shared by all cameras; does not change the output
        self.threads = max(1, int(threads if threads is not None else (os.cpu_count() or 1)))
        self.backend = backend
        self.equalize = bool(equalize)
        self.detect_max_side = int(detect_max_side)
        self.detect_every = max(1, int(detect_every))
        self.padding = float(padding)
        self.mode = mode
        self.detectors: list[_Detector] = []
        self.learned: list[tuple[str, Any]] = []  # (kind, detector) of the learned backend
        self.load_error: str | None = None
        self._pool: Any = None  # detection threads, made on first use and kept (their classifiers too)
        self._pool_lock = threading.Lock()
        if backend == "learned":
            self._load_learned(detectors, face_threshold=face_threshold, face_scales=face_scales, plate_score=plate_score,
                               model_dirs=model_dirs, device=device)
        else:
            self._load_haar(detectors, cascade_dirs)
        # frames per onnxruntime batch: as given, else 8 on CUDA and one at a time on the CPU
        on_cuda = any(det.session.get_providers()[0] == "CUDAExecutionProvider" for _, det in self.learned)
        self.batch_size = max(1, int(batch_size)) if batch_size is not None else (CUDA_BATCH if on_cuda else 1)
        if not self.detectors and not self.learned and self.load_error is None:
            self.load_error = "no detectors configured"
        if self.load_error:
            log.error("privacy stage cannot anonymise (every clip will be quarantined): %s", self.load_error)

    def _load_learned(self, kinds: Sequence[str], *, face_threshold: float, face_scales: Sequence[float], plate_score: float,
                      model_dirs: Sequence[str | Path], device: str) -> None:
        from fleetcore.stages import learned

        dirs = tuple(str(d) for d in model_dirs)
        for kind in kinds:
            try:
                if kind == "face":
                    det = learned.shared_detector(learned.CenterFaceDetector, threshold=float(face_threshold), scales=tuple(face_scales),
                                                  prefer=device, threads=self.threads, model_dirs=dirs)
                elif kind == "plate":
                    det = learned.shared_detector(learned.PlateTextDetector, box_score=float(plate_score), prefer=device,
                                                  threads=self.threads, model_dirs=dirs)
                else:
                    self.load_error = f"unknown detector {kind!r} for the learned backend (known: face, plate)"
                    return
            except learned.ModelMissing as exc:
                self.load_error = str(exc)
                return
            except (RuntimeError, ValueError, OSError) as exc:  # onnxruntime could not build a session
                self.load_error = f"{kind} detector failed to load: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
                return
            self.learned.append((kind, det))

    def _load_haar(self, detectors: Sequence[str], cascade_dirs: Sequence[str | Path]) -> None:
        for name in detectors:
            if name not in DETECTORS:
                self.load_error = f"unknown detector {name!r} (known: {sorted(DETECTORS)})"
                return
            kind, stem, sf, mn, ms, mirrored, max_share = DETECTORS[name]
            path = find_cascade(stem, cascade_dirs)
            if path is None:
                self.load_error = f"cascade {stem} not found (looked in {list(cascade_dirs)}, cv2.data, {VENDORED_CASCADES})"
                return
            try:
                cascade = load_cascade(path)
            except (RuntimeError, cv2.error) as exc:
                self.load_error = str(exc)
                return
            ww, wh = (int(v) for v in cascade.getOriginalWindowSize())
            self.detectors.append(_Detector(name, kind, path, cascade, sf, mn, ms, mirrored, max_share, (ww, wh)))

    @classmethod
    def from_options(cls, options: PrivacyOptions) -> PrivacyStage:
        return cls(**{f.name: getattr(options, f.name) for f in fields(options)})

    def describe(self) -> dict[str, Any]:
        common = {"version": PRIVACY_VERSION, "backend": self.backend, "detect_every": self.detect_every, "padding": self.padding, "mode": self.mode}
        if self.backend == "learned":
            return {**common, "models": {kind: det.describe() for kind, det in self.learned}}
        return {**common, "opencv": cv2.__version__, "cascades": {d.name: d.path.name for d in self.detectors},
                "detect_max_side": self.detect_max_side, "equalize": self.equalize}

    def detect_many(self, frames: Sequence[np.ndarray]) -> list[list[tuple[str, Box]]]:
        """:meth:`detect` of several RGB frames (the learned backend runs them as batches)."""
        if self.backend != "learned":
            return [self.detect(f) for f in frames]
        out: list[list[tuple[str, Box]]] = [[] for _ in frames]
        for start in range(0, len(frames), self.batch_size):
            chunk = [np.ascontiguousarray(f) for f in frames[start : start + self.batch_size]]
            for kind, det in self.learned:
                for i, boxes in enumerate(det.detect(chunk)):
                    out[start + i].extend((kind, b) for b in boxes)
        return [sorted(o) for o in out]

    def detect(self, frame: np.ndarray) -> list[tuple[str, Box]]:
        """(kind, box in frame pixels) of every face/plate found in an RGB frame."""
        if self.backend == "learned":
            return self.detect_many([frame])[0]
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        h, w = grey.shape
        s = min(1.0, self.detect_max_side / max(h, w))
        if s < 1.0:
            grey = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        if self.equalize:
            grey = cv2.equalizeHist(grey)
        out = []
        for d in self.detectors:
            for x, y, bw, bh in d.detect(grey):
                x0, y0 = int(np.floor(x / s)), int(np.floor(y / s))
                x1, y1 = int(np.ceil((x + bw) / s)), int(np.ceil((y + bh) / s))
                out.append((d.kind, (x0, y0, min(w, x1) - x0, min(h, y1) - y0)))
        return sorted(out)

    def detection_frames(self, n: int) -> list[int]:
        """Indexes of the distinct frames detection runs on: every ``detect_every``-th and the last."""
        return sorted(set(range(0, n, self.detect_every)) | ({n - 1} if n else set()))

    @staticmethod
    def _matches(det_idx: list[int], found: dict[int, list[tuple[str, Box]]]) -> tuple[dict[tuple[int, int], tuple[int, Box]], dict[tuple[int, int], tuple[int, Box]]]:
        """Each box's match on the next detection frame that has one (same kind, nearest centre,
        moved by at most its size per frame; up to ``INTERPOLATE_HOPS`` detection frames on: the
        detector may miss the object once or twice in between): ``fwd[(a, i)] = (b, box)`` for the
        i-th box of frame a, and the reverse, ``back[(b, i)] = (a, box)``."""
        fwd: dict[tuple[int, int], tuple[int, Box]] = {}
        back: dict[tuple[int, int], tuple[int, Box]] = {}
        for i, a in enumerate(det_idx):
            for ia, (kind, (x0, y0, w0, h0)) in enumerate(found[a]):
                for b in det_idx[i + 1 : i + 1 + INTERPOLATE_HOPS]:
                    best, best_d = None, None
                    for ib, (kind1, (x1, y1, w1, h1)) in enumerate(found[b]):
                        d = float(np.hypot(x1 + w1 / 2 - x0 - w0 / 2, y1 + h1 / 2 - y0 - h0 / 2))
                        if kind1 == kind and d <= (b - a) * max(w0, h0, w1, h1) and (best_d is None or d < best_d):
                            best, best_d = ib, d
                    if best is not None:
                        fwd[(a, ia)] = (b, found[b][best][1])
                        back.setdefault((b, best), (a, (x0, y0, w0, h0)))
                        break
        return fwd, back

    def refinement_frames(self, n: int, found: dict[int, list[tuple[str, Box]]]) -> list[int]:
        """Extra detection frames, ``detect_every // 2`` before and after each detection frame with
        a box that matches nothing on the detection frames around it (``found``: the regular
        detection frames' results). An object seen once has no velocity, so it would be blurred
        only where it was seen; a second sighting lets it be interpolated and coast. Costs nothing
        on frames with no detections."""
        h = self.detect_every // 2
        if h < 1:
            return []
        det_idx = sorted(found)
        fwd, back = self._matches(det_idx, found)
        lone = {j for j in det_idx for i in range(len(found[j])) if (j, i) not in fwd and (j, i) not in back}
        return sorted({j + d for j in lone for d in (-h, h) if 0 <= j + d < n} - set(det_idx))

    def boxes_per_frame(self, n: int, detect: Any) -> list[list[Box]]:
        """The boxes to blur on each of ``n`` distinct frames, calling ``detect(j) -> [(kind, box)]``
        only on the detection frames (every ``detect_every``-th and the last one, then the
        ``refinement_frames`` their results call for).

        Frame j gets (a) every box found on a detection frame within ``detect_every`` frames of it,
        before or after (a face seen at j-2 or j+2 is blurred at j too, which also covers a frame
        where the detector flickers off; with ``detect_every=1`` the neighbouring frames' boxes),
        (b) each box of a detection frame linearly interpolated towards its match on the next
        detection frame that has one (same kind, nearest centre, moved by at most its size per
        frame; up to ``INTERPOLATE_HOPS`` detection frames on, as the detector may miss it in
        between), so a face or plate that moves between detections is covered where it is, not
        only where it was and will be, and (c) each matched box coasting on at its match's
        velocity for up to ``detect_every`` frames on the other side of its detection frame
        (forwards from a box matched backwards, backwards from one matched forwards), which covers
        an object the next detection misses and one that turns between two detections. A wrong
        match only blurs more."""
        k = self.detect_every
        found = {j: detect(j) for j in self.detection_frames(n)}
        for j in self.refinement_frames(n, found):
            found[j] = detect(j)
        det_idx = sorted(found)
        out: list[set[Box]] = [set() for _ in range(n)]
        for jd in det_idx:
            lo, hi = max(0, jd - k), min(n - 1, jd + k)
            for j in range(lo, hi + 1):
                out[j].update(b for _, b in found[jd])
        fwd, back = self._matches(det_idx, found)
        for (a, ia), (b, box1) in fwd.items():
            box0 = found[a][ia][1]
            for j in range(a + 1, b):
                t = (j - a) / (b - a)
                out[j].add(tuple(int(round(u + t * (v - u))) for u, v in zip(box0, box1)))  # type: ignore[misc]
        # coasting: each box also moves on at the velocity of its match, for up to detect_every
        # frames past its detection frame on the side away from that match (forwards from a box
        # matched backwards, backwards from one matched forwards), so an object the next detection
        # misses, or one that turns between two detections, stays covered where it is heading
        for (b, ib), (a, box0) in back.items():
            self._coast(out, (a, box0), (b, found[b][ib][1]), b, range(b + 1, min(n - 1, b + k) + 1))
        for (a, ia), (b, box1) in fwd.items():
            self._coast(out, (a, found[a][ia][1]), (b, box1), a, range(max(0, a - k), a))
        # sorted: overlapping blurs must be applied in a fixed order (determinism)
        return [sorted(s) for s in out]

    @staticmethod
    def _coast(out: list[set[Box]], first: tuple[int, Box], last: tuple[int, Box], at: int, frames: range) -> None:
        """Add to ``out[j]`` for each j in ``frames`` the box of detection frame ``at`` (one of the
        matched pair ``first``, ``last``: (frame, box)) moved on at the pair's velocity."""
        (a, (xa, ya, _, _)), (b, (xb, yb, _, _)) = first, last
        x, y, w, h = first[1] if at == a else last[1]
        vx, vy = (xb - xa) / (b - a), (yb - ya) / (b - a)
        for j in frames:
            out[j].add((int(round(x + vx * (j - at))), int(round(y + vy * (j - at))), w, h))

    @staticmethod
    def distinct_frames(frames: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """The distinct frame objects of one camera, in order (samples may share a source frame)."""
        uniq: list[np.ndarray] = []
        seen: set[int] = set()
        for f in frames:
            if f is not None and id(f) not in seen:
                seen.add(id(f))
                uniq.append(f)
        return uniq

    def anonymise_camera(self, frames: list[np.ndarray | None], found: dict[int, list[tuple[str, Box]]] | None = None) -> tuple[int, int]:
        """Blur every distinct frame of one camera (read-only frames are replaced by blurred copies
        in ``frames``). ``found``: detections already made, by distinct-frame index (the rest are
        detected here). Returns (regions blurred, distinct frames)."""
        uniq = self.distinct_frames(frames)
        n = len(uniq)
        done = found or {}
        per_frame = self.boxes_per_frame(n, lambda j: done[j] if j in done else self.detect(uniq[j]))
        regions = 0
        replaced: dict[int, np.ndarray] = {}
        for j, f in enumerate(uniq):
            boxes = per_frame[j]
            if not boxes:
                continue
            if not f.flags.writeable:
                g = f.copy()
                replaced[id(f)] = g
                f = g
            for b in boxes:
                blur_region(f, pad_box(b, self.padding, f.shape), self.mode)
            regions += len(boxes)
        if replaced:
            for i, f in enumerate(frames):
                if f is not None and id(f) in replaced:
                    frames[i] = replaced[id(f)]
        return regions, n

    def anonymised(self, frames: Sequence[np.ndarray], *, what: str = "preview") -> list[np.ndarray]:
        """Blurred copies of one camera's consecutive RGB frames (a preview outside the curate job:
        the same detection schedule, tracking and blur). Raises :class:`PrivacyError` (``what`` in
        its message) if the stage cannot anonymise: the frames are then never shown."""
        if self.load_error:
            raise PrivacyError(what, self.load_error)
        out: list[np.ndarray | None] = [np.array(f, copy=True) for f in frames]
        try:
            self.anonymise_camera(out)
        except _DETECT_ERRORS as exc:
            raise PrivacyError(what, f"detection failed: {type(exc).__name__}: {exc}") from exc
        return [f for f in out if f is not None]

    def _detection_pool(self) -> Any:
        """The stage's detection threads (made on first use and kept: each keeps its classifiers)."""
        from concurrent.futures import ThreadPoolExecutor

        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="privacy")
            return self._pool

    def _detect_wave(self, items: list[tuple[str, int, np.ndarray]], found: dict[str, dict[int, list[tuple[str, Box]]]], failed: Any) -> None:
        """Detect every (camera, distinct-frame index, frame) of ``items`` into ``found``; a failure
        raises ``failed(camera, exc)`` (nothing is blurred yet)."""
        if not items:
            return
        if self.backend == "learned":
            by_cam: dict[str, list[tuple[int, np.ndarray]]] = {}
            for cam, j, f in items:
                by_cam.setdefault(cam, []).append((j, f))
            frames = [f for _, _, f in items]
            try:
                results = self.detect_many(frames)
            except _DETECT_ERRORS as exc:
                # name the camera whose frame fails on its own
                for cam, jf in by_cam.items():
                    try:
                        self.detect_many([f for _, f in jf])
                    except _DETECT_ERRORS as exc2:
                        raise failed(cam, exc2) from exc2
                raise failed(items[0][0], exc) from exc
            for (cam, j, _), res in zip(items, results):
                found[cam][j] = res
            return
        pool = self._detection_pool()
        jobs = [(cam, j, pool.submit(self.detect, f)) for cam, j, f in items]
        try:
            for cam, j, fut in jobs:
                try:
                    found[cam][j] = fut.result()
                except _DETECT_ERRORS as exc:
                    raise failed(cam, exc) from exc
        finally:
            for _, _, fut in jobs:  # on a failure, drop this clip's queued detections
                fut.cancel()

    def __call__(self, *, clip: Any, telemetry: Any, drive: Any, record: dict[str, Any]) -> list[dict[str, Any]]:
        clip_id = str(record.get("clip_id", "?"))
        if self.load_error:
            raise PrivacyError(clip_id, self.load_error)
        regions = frames_done = 0

        def failed(cam: str, exc: Exception) -> PrivacyError:
            return PrivacyError(clip_id, f"camera {cam}: detection failed: {type(exc).__name__}: {exc}")

        cams = list(clip.cameras)
        found: dict[str, dict[int, list[tuple[str, Box]]]] = {cam: {} for cam in cams}
        if self.backend == "learned" or self.threads > 1:
            # Detection is the cost: the detection frames of every camera are detected together (the
            # learned backend batches them through onnxruntime; Haar shares them out over the stage's
            # threads, each with its own classifiers, OpenCV releasing the GIL). A second wave runs
            # the refinement frames the first wave's results call for.
            uniqs = {cam: self.distinct_frames(clip.frames[cam]) for cam in cams}
            wave = {cam: self.detection_frames(len(uniqs[cam])) for cam in cams}
            for second in (False, True):
                if second:
                    wave = {cam: self.refinement_frames(len(uniqs[cam]), found[cam]) for cam in cams}
                self._detect_wave([(cam, j, uniqs[cam][j]) for cam in cams for j in wave[cam]], found, failed)
        done = []
        for cam in cams:
            try:
                done.append(self.anonymise_camera(clip.frames[cam], found[cam]))
            except _DETECT_ERRORS as exc:
                raise failed(cam, exc) from exc
        for r, n in done:
            regions += r
            frames_done += n
        record["privacy"] = {"enabled": True, "regions_blurred": regions, "frames_processed": frames_done, "detector": self.describe()}
        return [
            {
                "clip_id": clip_id,
                "labeller": "privacy",
                "labeller_version": PRIVACY_VERSION,
                "label": "regions_blurred",
                "value": None,
                "score": float(regions),
            }
        ]


@register("privacy")
def privacy_stage(options: PrivacyOptions | None) -> PrivacyStage:
    """The stage of a curate run, built from the run config's privacy options."""
    return PrivacyStage.from_options(options or PrivacyOptions())
