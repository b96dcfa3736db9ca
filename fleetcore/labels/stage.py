"""The ``labels`` clip stage: runs every labeller on each clip, returns LABELS rows and adds
``record["labels"] = {labeller: {"version": v, "values": {...}}}`` to the sample JSON.

Which labellers run: the stage's ``LabelsOptions`` (``fleetcore.stages.options``; part of the curate
run config, read at launch with ``LabelsOptions.from_file`` from a YAML or JSON file)::

    builtins: [telemetry, vision, pedestrians, phash]   # optional; default: all registered
    labellers:
      - kind: onnx
        name: colour                  # LABELS.labeller
        version: "1"
        path: models/colour.onnx      # relative to the config file
        input_size: [32, 32]          # W, H (or one int)
        labels: [red, green, blue]
        batch_size: 4
        camera: front                 # optional (default: front, else the first camera)
        frames: 4                     # optional
        mean: [0, 0, 0]               # optional
        std: [1, 1, 1]                # optional
        softmax: false                # optional: the model returns logits

The registered stage factory (``build_stages(["labels"], options=...)``) builds every default
labeller (``fleetcore.labels.base.LABELLERS``) or the listed ``builtins``, then the model labellers.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping, Sequence

import numpy as np

from fleetcore.errors import ConfigError, FleetError
from fleetcore.labels.base import LABELLERS, LabelError, Labeller, jsonable, labels_to_rows, reads_frames
from fleetcore.stages.options import LABELS_WHERE, LabelsOptions
from fleetcore.stages.registry import register

log = logging.getLogger(__name__)


def _load_builtins() -> None:
    """Import the built-in labeller modules (importing registers their labellers)."""
    import importlib

    for mod in ("fleetcore.labels.telemetry", "fleetcore.labels.vision", "fleetcore.labels.phash"):
        importlib.import_module(mod)


def build_labellers(options: LabelsOptions | None = None) -> list[Labeller]:
    """Instantiate the labellers (the built-ins, then the options' model labellers)."""
    from fleetcore.labels.onnx import OnnxLabeller

    _load_builtins()
    opts = options or LabelsOptions()
    names = sorted(LABELLERS) if opts.builtins is None else list(opts.builtins)
    out: list[Labeller] = []
    for n in names:
        if n not in LABELLERS:
            raise ConfigError(LABELS_WHERE, f"unknown labeller {n!r}; registered: {sorted(LABELLERS)}", field="builtins")
        out.append(LABELLERS[n]())
    for spec in opts.labellers:
        out.append(OnnxLabeller(spec.name, spec.version, spec.path, spec.input_size, spec.labels, spec.batch_size, camera=spec.camera,
                                frames=spec.frames, mean=spec.mean, std=spec.std, softmax=spec.softmax, threads=spec.threads,
                                expect_sha256=spec.model_sha256))
    seen: set[str] = set()
    for lab in out:
        if lab.name in seen:
            raise ConfigError(LABELS_WHERE, f"labeller name {lab.name!r} used twice", field="labellers")
        seen.add(lab.name)
    return out


class LabelsStage:
    name = "labels"
    #: reads frames, writes only record["labels"]: runs beside the privacy stage (fleetcore.stages.registry.run_stages)
    frames_read_only = True

    def __init__(self, labellers: Sequence[Labeller], *, threads: int | None = None) -> None:
        """``threads``: how many labellers run at once on a clip (default: one per CPU, at most one
        per labeller); the labels do not depend on it."""
        self.labellers = list(labellers)
        self.threads = max(1, min(len(self.labellers), int(threads) if threads is not None else (os.cpu_count() or 1)))
        self._pool: Any = None
        self._pool_lock = threading.Lock()

    @classmethod
    def from_options(cls, options: LabelsOptions | None = None) -> "LabelsStage":
        return cls(build_labellers(options))

    def describe(self) -> dict[str, Any]:
        """What this stage's output depends on: each labeller's name and version."""
        return {"labellers": {lab.name: lab.version for lab in self.labellers}}

    def _labeller_pool(self) -> Any:
        """The stage's labeller threads (made on first use and kept)."""
        from concurrent.futures import ThreadPoolExecutor

        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="labeller")
            return self._pool

    def label_clip(self, clip: Any, telemetry: Mapping[str, np.ndarray], *, clip_id: str, start_utc_ns: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every labeller on one clip; with ``threads`` > 1 they run side by side (the labellers read
        the frames only; OpenCV and onnxruntime release the GIL). Rows and record in labeller order;
        the first failure in labeller order is raised, once every labeller is done."""

        def run(lab: Labeller) -> dict[str, Any]:
            try:
                return lab.label(clip, telemetry, start_utc_ns=start_utc_ns)
            except FleetError:
                raise
            except Exception as exc:  # a labeller bug or library error quarantines the clip, typed
                raise LabelError(clip_id, f"{type(exc).__name__}: {exc}", labeller=lab.name) from exc

        # a clip without cameras (a telemetry-only drive's) is labelled by the labellers that do not read frames
        labellers = self.labellers if list(clip.cameras) else [lab for lab in self.labellers if not reads_frames(lab)]
        if self.threads > 1 and len(labellers) > 1:
            from concurrent.futures import wait

            futures = [self._labeller_pool().submit(run, lab) for lab in labellers]
            wait(futures)  # all done before anything is raised: none still reads the frames after
            results = [f.result() for f in futures]
        else:
            results = [run(lab) for lab in labellers]
        rows: list[dict[str, Any]] = []
        rec: dict[str, Any] = {}
        for lab, values in zip(labellers, results):
            rows.extend(labels_to_rows(clip_id, lab, values))
            rec[lab.name] = {"version": lab.version, "values": jsonable(values)}
        return rows, rec

    def __call__(self, *, clip: Any, telemetry: Mapping[str, np.ndarray], drive: Any, record: dict[str, Any]) -> list[dict[str, Any]]:
        rows, rec = self.label_clip(clip, telemetry, clip_id=str(record["clip_id"]), start_utc_ns=int(record["start_utc_ns"]))
        record["labels"] = rec
        return rows


@register("labels")
def labels_stage(options: LabelsOptions | None) -> LabelsStage:
    """The stage of a curate run, built from the run config's labels options."""
    return LabelsStage.from_options(options)
