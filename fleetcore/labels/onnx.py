"""A pluggable ONNX image classifier labeller (onnxruntime, CPU, never downloads anything).

The model takes a float32 NCHW batch of RGB frames resized to ``input_size`` (W, H), scaled to
0..1, then ``(x - mean) / std`` per channel, and returns one (N, len(labels)) array of class
scores (probabilities, or logits when ``softmax=True``). Per clip it classifies ``frames`` evenly
spaced frames of ``camera`` in batches of ``batch_size`` and reports, under its own name:

``class``   the top class of the mean probability over the frames, with that probability as score
``probs``   ``{label: mean probability}``
``frames``  how many frames were classified
"""

from __future__ import annotations

import hashlib

from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from fleetcore.errors import ConfigError
from fleetcore.labels.base import LabelValue, Scored, camera_frames, pick_evenly, primary_camera
from fleetcore.stages.options import OnnxLabellerOptions


class OnnxLabeller:
    def __init__(
        self,
        name: str,
        version: str,
        model_path: str | Path,
        input_size: int | Sequence[int],
        labels: Sequence[str],
        batch_size: int = OnnxLabellerOptions.batch_size,
        *,
        camera: str | None = OnnxLabellerOptions.camera,
        frames: int = OnnxLabellerOptions.frames,
        mean: Sequence[float] = OnnxLabellerOptions.mean,
        std: Sequence[float] = OnnxLabellerOptions.std,
        softmax: bool = OnnxLabellerOptions.softmax,
        threads: int = OnnxLabellerOptions.threads,
        expect_sha256: str | None = None,
    ) -> None:
        import onnxruntime as ort

        self.name = str(name)
        self.version = str(version)
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ConfigError(str(self.model_path), f"ONNX model of labeller {name!r} not found (models are never downloaded)", field="path")
        w, h = (input_size, input_size) if isinstance(input_size, int) else tuple(int(x) for x in input_size)
        self.input_size = (int(w), int(h))
        self.labels = [str(x) for x in labels]
        if not self.labels:
            raise ConfigError(str(self.model_path), "needs at least one class label", field="labels")
        self.batch_size = max(1, int(batch_size))
        self.camera = camera
        self.frames = max(1, int(frames))
        self.mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
        self.softmax = softmax
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        model = self.model_path.read_bytes()
        if expect_sha256 is not None and (got := hashlib.sha256(model).hexdigest()) != expect_sha256:
            raise ConfigError(str(self.model_path), f"the model file changed since the run was configured (sha256 {got[:12]}, "
                                                    f"expected {expect_sha256[:12]})", field="path")
        try:
            self.session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ConfigError(str(self.model_path), f"cannot load ONNX model: {exc}", field="path") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        b = inp.shape[0] if inp.shape else None
        self.fixed_batch = int(b) if isinstance(b, int) and b > 0 else None
        if self.fixed_batch is not None:
            self.batch_size = self.fixed_batch

    def preprocess(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        x = np.stack([cv2.resize(np.ascontiguousarray(f), self.input_size, interpolation=cv2.INTER_AREA) for f in frames])
        x = x.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return (x - self.mean) / self.std

    def predict(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(N, classes) probabilities, batched."""
        out = []
        for a in range(0, len(frames), self.batch_size):
            chunk = list(frames[a : a + self.batch_size])
            n = len(chunk)
            if self.fixed_batch is not None and n < self.fixed_batch:
                chunk += [chunk[-1]] * (self.fixed_batch - n)
            y = np.asarray(self.session.run(None, {self.input_name: self.preprocess(chunk)})[0], np.float64)[:n]
            y = y.reshape(n, -1)
            if self.softmax:
                y = np.exp(y - y.max(axis=1, keepdims=True))
                y /= y.sum(axis=1, keepdims=True)
            out.append(y)
        probs = np.concatenate(out) if out else np.zeros((0, len(self.labels)))
        if probs.shape[1] != len(self.labels):
            raise ValueError(f"model {self.model_path} gives {probs.shape[1]} scores for {len(self.labels)} labels")
        return probs

    def label(self, clip: Any, telemetry: Mapping[str, np.ndarray], *, start_utc_ns: int) -> dict[str, LabelValue]:
        cam = self.camera if self.camera is not None else primary_camera(clip)
        present = pick_evenly(camera_frames(clip, cam), self.frames) if cam in clip.frames else []
        if not present:
            return {"class": None, "probs": {}, "frames": 0}
        probs = self.predict([f for _, f in present]).mean(axis=0)
        k = int(np.argmax(probs))
        return {
            "class": Scored(self.labels[k], round(float(probs[k]), 6)),
            "probs": {lab: round(float(p), 6) for lab, p in zip(self.labels, probs)},
            "frames": len(present),
        }
