"""Clip embeddings for similarity search (docs/loop.md, "Similarity search").

Two kinds:

* **telemetry** (built in, no model): the shape of the manoeuvre. For each clip, the drive's
  derived telemetry (:func:`fleetcore.triggers.signals.derived_frame`) over the clip's span gives
  five channels: speed relative to the clip's mean speed, longitudinal and lateral acceleration,
  yaw rate and steering-wheel angle. Each is resampled to :data:`PROFILE_POINTS` points and divided
  by a fixed scale (:data:`CHANNEL_SCALES`); the minimum, maximum and standard deviation of each
  channel are appended (weighted by :data:`STATS_WEIGHT`, so where in the window a manoeuvre falls
  matters less than what it is), and the vector is L2-normalised. Clips alike in shape have a small
  cosine distance: "find manoeuvres like this one".
* **image**: a user's ONNX model (:class:`ImageModel`, ``image:`` in the loop config) maps frames to
  feature vectors; the stored frames of every camera are grouped into windows of ``window_s``
  seconds and each (clip, camera, window) gets the L2-normalised mean of its frames' features.
  One ``--like`` query then matches any camera and any moment of other clips.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Iterator, Sequence

import numpy as np
import polars as pl

from fleetcore.configfile import read_config_file
from fleetcore.errors import ConfigError
from fleetcore.loop import LoopError
from fleetcore.store.catalog import Catalog
from fleetcore.triggers.signals import derived_frame
from schemas import TELEMETRY

log = logging.getLogger(__name__)

NS_PER_S: Final = 1_000_000_000
PROFILE_POINTS: Final = 32
#: channel -> scale (divided by): typical magnitudes of a strong manoeuvre
CHANNEL_SCALES: Final[dict[str, float]] = {
    "speed_rel": 5.0,  # m/s
    "accel_lon": 3.0,  # m/s^2
    "accel_lat": 3.0,  # m/s^2
    "yaw_rate": 0.3,  # rad/s
    "steering_angle_rad": 1.5,  # rad (steering wheel)
}
STATS_WEIGHT: Final = 3.0
TELEMETRY_DIM: Final = len(CHANNEL_SCALES) * (PROFILE_POINTS + 3)
TELEMETRY_EMBEDDING_VERSION: Final = "telemetry-shape-1"
_EPS: Final = 1e-6


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n if n > _EPS else np.zeros_like(v)).astype(np.float32)


def telemetry_vector(derived: pl.DataFrame, start_ns: int, end_ns: int) -> np.ndarray | None:
    """The telemetry-shape embedding of ``[start_ns, end_ns]`` of one drive's derived frame (None:
    fewer than two samples there)."""
    win = derived.filter((pl.col("t_ns") >= start_ns) & (pl.col("t_ns") <= end_ns))
    if win.height < 2:
        return None
    t = win.get_column("t_ns").to_numpy().astype(np.float64)
    grid = np.linspace(t[0], t[-1], PROFILE_POINTS)
    parts: list[np.ndarray] = []
    stats: list[np.ndarray] = []
    speed = win.get_column("speed_mps").cast(pl.Float64).to_numpy()
    for name, scale in CHANNEL_SCALES.items():
        if name == "speed_rel":
            x = speed - np.nanmean(speed) if np.isfinite(speed).any() else np.zeros_like(speed)
        else:
            x = win.get_column(name).cast(pl.Float64).fill_null(float("nan")).to_numpy()
        ok = np.isfinite(x)
        if not ok.any():
            parts.append(np.zeros(PROFILE_POINTS))
            stats.append(np.zeros(3))
            continue
        xs = np.interp(grid, t[ok], x[ok]) / scale
        parts.append(xs)
        stats.append(np.array([xs.min(), xs.max(), xs.std()]) * STATS_WEIGHT)
    return _unit(np.concatenate(parts + stats))


def _drive_derived(cat: Catalog, vehicle_id: str, drive_id: str, rate_hz: float) -> pl.DataFrame | None:
    t = cat.read_drive_table("telemetry", vehicle_id, drive_id, columns=TELEMETRY.column_names)
    if t is None or t.num_rows < 2:
        return None
    return derived_frame(TELEMETRY.conform(t), rate_hz=rate_hz)


def telemetry_embeddings(store: str | Path | Catalog, clips: pl.DataFrame | None = None, *, rate_hz: float = 20.0) -> pl.DataFrame:
    """One telemetry-shape vector per clip that has telemetry: clip_id, vehicle_id, drive_id, date,
    start_ns, end_ns, vector (list of float32)."""
    cat = Catalog.of(store)
    if clips is None:
        clips = cat.scan("clips", missing_ok=True).select("clip_id", "vehicle_id", "drive_id", "date", "start_ns", "end_ns").collect()
    rows: list[dict[str, Any]] = []
    for (veh, drv), group in clips.sort("vehicle_id", "drive_id", "start_ns").group_by(["vehicle_id", "drive_id"], maintain_order=True):
        derived = _drive_derived(cat, str(veh), str(drv), rate_hz)
        if derived is None:
            log.info("%s/%s: no telemetry; its clips get no telemetry embedding", veh, drv)
            continue
        for r in group.iter_rows(named=True):
            v = telemetry_vector(derived, int(r["start_ns"]), int(r["end_ns"]))
            if v is not None:
                rows.append({k: r[k] for k in ("clip_id", "vehicle_id", "drive_id", "date", "start_ns", "end_ns")} | {"vector": v.tolist()})
    return pl.DataFrame(rows, schema={"clip_id": pl.String, "vehicle_id": pl.String, "drive_id": pl.String, "date": pl.String,
                                      "start_ns": pl.Int64, "end_ns": pl.Int64, "vector": pl.List(pl.Float32)})


# --------------------------------------------------------------------------------------
# Image embeddings
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageModel:
    """An ONNX image model that maps a float32 NCHW batch of RGB frames (resized to ``input_size``
    (W, H), scaled to 0..1, then ``(x - mean) / std``) to one feature vector per frame (its output
    ``output``, default the first, flattened per frame)."""

    path: str
    input_size: tuple[int, int] = (64, 64)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    window_s: float = 2.0
    frames_per_window: int = 2
    cameras: tuple[str, ...] | None = None  # None: every camera of a clip
    output: str | None = None
    batch_size: int = 16
    threads: int = 1
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = self.path
        if not Path(self.path).is_file():
            raise ConfigError(where, "ONNX model file not found (models are never downloaded)", field="image.path")
        w, h = self.input_size
        if int(w) < 1 or int(h) < 1:
            raise ConfigError(where, f"expected a positive [W, H], got {self.input_size!r}", field="image.input_size")
        if not (self.window_s > 0 and math.isfinite(self.window_s)):
            raise ConfigError(where, f"must be > 0, got {self.window_s!r}", field="image.window_s")
        if self.frames_per_window < 1:
            raise ConfigError(where, f"must be >= 1, got {self.frames_per_window!r}", field="image.frames_per_window")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(Path(self.path).read_bytes()).hexdigest()

    @classmethod
    def from_mapping(cls, raw: Any, *, where: str, base: Path | None = None) -> ImageModel:
        if not isinstance(raw, dict):
            raise ConfigError(where, "expected a mapping with path, input_size, ...", field="image")
        allowed = {"path", "input_size", "mean", "std", "window_s", "frames_per_window", "cameras", "output", "batch_size", "threads", "name"}
        extra = sorted(set(map(str, raw)) - allowed)
        if extra:
            raise ConfigError(where, f"unknown key; allowed: {sorted(allowed)}", field=f"image.{extra[0]}")
        if "path" not in raw:
            raise ConfigError(where, "missing required field", field="image.path")
        p = Path(str(raw["path"]))
        if base is not None and not p.is_absolute():
            p = base / p
        size = raw.get("input_size", [64, 64])
        size = (size, size) if isinstance(size, int) else tuple(size)
        try:
            return cls(path=str(p.resolve()), input_size=(int(size[0]), int(size[1])),
                       mean=tuple(float(x) for x in raw.get("mean", (0.0, 0.0, 0.0))),  # type: ignore[arg-type]
                       std=tuple(float(x) for x in raw.get("std", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
                       window_s=float(raw.get("window_s", 2.0)), frames_per_window=int(raw.get("frames_per_window", 2)),
                       cameras=None if raw.get("cameras") is None else tuple(str(c) for c in raw["cameras"]),
                       output=raw.get("output"), batch_size=int(raw.get("batch_size", 16)), threads=int(raw.get("threads", 1)),
                       name=str(raw.get("name") or p.stem))
        except (TypeError, ValueError, IndexError) as exc:
            raise ConfigError(where, f"bad image model options ({exc})", field="image") from exc


def load_loop_config(path: str | Path) -> dict[str, Any]:
    """The loop config file (YAML/JSON): ``image:`` (an :class:`ImageModel`, path relative to the file)."""
    doc = read_config_file(Path(path), what="loop config")
    if not isinstance(doc, dict):
        raise ConfigError(str(path), "expected a mapping (image: ...)")
    extra = sorted(set(map(str, doc)) - {"image"})
    if extra:
        raise ConfigError(str(path), "unknown key; allowed: ['image']", field=extra[0])
    out: dict[str, Any] = {}
    if doc.get("image") is not None:
        out["image"] = ImageModel.from_mapping(doc["image"], where=str(path), base=Path(path).parent)
    return out


class ImageEmbedder:
    """An onnxruntime session over an :class:`ImageModel` (CPU)."""

    def __init__(self, model: ImageModel) -> None:
        import onnxruntime as ort

        self.model = model
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(model.threads)
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(Path(model.path).read_bytes(), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ConfigError(model.path, f"cannot load ONNX model: {exc}", field="image.path") from exc
        self.input_name = self.session.get_inputs()[0].name
        b = self.session.get_inputs()[0].shape[0] if self.session.get_inputs()[0].shape else None
        self.fixed_batch = int(b) if isinstance(b, int) and b > 0 else None
        self.mean = np.asarray(model.mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(model.std, np.float32).reshape(1, 3, 1, 1)

    def embed(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float32 features of RGB uint8 frames."""
        import cv2

        out = []
        bs = self.fixed_batch or max(1, self.model.batch_size)
        for a in range(0, len(frames), bs):
            chunk = list(frames[a:a + bs])
            n = len(chunk)
            if self.fixed_batch is not None and n < self.fixed_batch:
                chunk += [chunk[-1]] * (self.fixed_batch - n)
            x = np.stack([cv2.resize(np.ascontiguousarray(f), self.model.input_size, interpolation=cv2.INTER_AREA) for f in chunk])
            x = (x.astype(np.float32).transpose(0, 3, 1, 2) / 255.0 - self.mean) / self.std
            names = [self.model.output] if self.model.output else None
            try:
                y = self.session.run(names, {self.input_name: x.astype(np.float32)})[0]
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise LoopError(self.model.path, f"the image model failed on a batch of {n} frames: {exc}") from exc
            out.append(np.asarray(y, np.float32).reshape(len(chunk), -1)[:n])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _camera_windows(indices: Sequence[int], rate_hz: float, window_s: float, per_window: int) -> Iterator[tuple[int, list[int]]]:
    """(window number, positions into ``indices``) with at most ``per_window`` evenly spaced frames each."""
    groups: dict[int, list[int]] = {}
    for pos, idx in enumerate(indices):
        groups.setdefault(int(math.floor(idx / rate_hz / window_s + 1e-9)), []).append(pos)
    for w in sorted(groups):
        g = groups[w]
        if len(g) > per_window:
            g = [g[int(i)] for i in np.linspace(0, len(g) - 1, per_window).round().astype(int)]
        yield w, g


def _window_positions(indices: list[int], *, rate_hz: float, model: ImageModel) -> list[int]:
    """Positions into ``indices`` of every frame some window of :func:`_camera_windows` uses."""
    return sorted(p for _, g in _camera_windows(indices, rate_hz, model.window_s, model.frames_per_window) for p in g)


def image_embeddings(store: str | Path | Catalog, model: ImageModel, clips: pl.DataFrame | None = None) -> pl.DataFrame:
    """One vector per (clip, camera, window): clip_id, vehicle_id, drive_id, date, camera, window,
    start_ns, end_ns, vector (list of float32)."""
    from fleetcore.query.preview import PreviewError, clip_frames

    cat = Catalog.of(store)
    if clips is None:
        clips = cat.scan("clips", missing_ok=True).collect()
    embedder = ImageEmbedder(model)
    rows: list[dict[str, Any]] = []
    for i, r in enumerate(clips.iter_rows(named=True)):
        rate = float(r["sample_rate_hz"] or 10.0)
        one = clips.slice(i, 1)
        for cam in model.cameras or tuple(r["cameras"] or ()):
            if cam not in (r["cameras"] or ()):
                continue
            try:
                # only the frames the windows use are read and decoded
                got = clip_frames(cat, one, camera=cam, pick=functools.partial(_window_positions, rate_hz=rate, model=model))[0]
            except PreviewError as exc:
                log.info("%s: no frames of camera %s (%s)", r["clip_id"], cam, exc)
                continue
            for w, pos in _camera_windows(got.indices, rate, model.window_s, model.frames_per_window):
                feats = embedder.embed([got.frames[p] for p in pos])
                if feats.size == 0:
                    continue
                v = _unit(feats.mean(axis=0))
                i0, i1 = got.indices[pos[0]], got.indices[pos[-1]]
                rows.append({"clip_id": r["clip_id"], "vehicle_id": r["vehicle_id"], "drive_id": r["drive_id"], "date": r["date"],
                             "camera": got.camera, "window": w, "start_ns": int(r["start_ns"] + i0 * NS_PER_S / rate),
                             "end_ns": int(r["start_ns"] + i1 * NS_PER_S / rate), "vector": v.tolist()})
    return pl.DataFrame(rows, schema={"clip_id": pl.String, "vehicle_id": pl.String, "drive_id": pl.String, "date": pl.String,
                                      "camera": pl.String, "window": pl.Int32, "start_ns": pl.Int64, "end_ns": pl.Int64,
                                      "vector": pl.List(pl.Float32)})
