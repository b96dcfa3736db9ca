"""The ``labels`` clip stage: runs every labeller on each clip, returns LABELS rows and adds
``record["labels"] = {labeller: {"version": v, "values": {...}}}`` to the sample JSON.

Which labellers run: every registered default labeller (``fleetcore.labels.base.LABELLERS``) plus
the model labellers of an optional config file (YAML or JSON)::

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

The registered stage factory (``build_stages(["labels"])``) reads the config path from the
``FLEET_LABELS_CONFIG`` environment variable *when the stage is built* (once per worker), or uses
only the built-in labellers when it is unset.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fleetcore.configfile import read_config_file
from fleetcore.errors import ConfigError, FleetError
from fleetcore.labels.base import LABELLERS, LabelError, Labeller, jsonable, labels_to_rows
from fleetcore.stages import register

log = logging.getLogger(__name__)

CONFIG_ENV = "FLEET_LABELS_CONFIG"
_ONNX_KEYS = {"kind", "name", "version", "path", "input_size", "labels", "batch_size", "camera", "frames", "mean", "std", "softmax", "threads"}


def _load_builtins() -> None:
    """Import the built-in labeller modules (importing registers their labellers)."""
    import importlib

    for mod in ("fleetcore.labels.telemetry", "fleetcore.labels.vision", "fleetcore.labels.phash"):
        importlib.import_module(mod)


def load_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    cfg = read_config_file(p, what="labels config")
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ConfigError(str(p), None, "expected a mapping with `builtins` and/or `labellers`")
    unknown = set(cfg) - {"builtins", "labellers"}
    if unknown:
        raise ConfigError(str(p), sorted(unknown)[0], "unknown key (expected `builtins`, `labellers`)")
    return cfg


def build_labellers(config_path: str | Path | None = None) -> list[Labeller]:
    """Instantiate the labellers (built-ins, then the config's model labellers)."""
    from fleetcore.labels.onnx import OnnxLabeller

    _load_builtins()
    cfg: dict[str, Any] = load_config(config_path) if config_path else {}
    where = str(config_path) if config_path else "<labels config>"
    names = cfg.get("builtins")
    if names is None:
        names = sorted(LABELLERS)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(where, "builtins", "expected a list of labeller names")
    out: list[Labeller] = []
    for n in names:
        if n not in LABELLERS:
            raise ConfigError(where, "builtins", f"unknown labeller {n!r}; registered: {sorted(LABELLERS)}")
        out.append(LABELLERS[n]())
    base = Path(config_path).parent if config_path else Path(".")
    specs = cfg.get("labellers") or []
    if not isinstance(specs, list):
        raise ConfigError(where, "labellers", "expected a list")
    for i, spec in enumerate(specs):
        field = f"labellers[{i}]"
        if not isinstance(spec, dict) or spec.get("kind") != "onnx":
            raise ConfigError(where, f"{field}.kind", "expected a mapping with kind: onnx")
        extra = set(spec) - _ONNX_KEYS
        if extra:
            raise ConfigError(where, f"{field}.{sorted(extra)[0]}", "unknown key")
        for k in ("name", "path", "input_size", "labels"):
            if k not in spec:
                raise ConfigError(where, f"{field}.{k}", "required")
        path = Path(spec["path"])
        if not path.is_absolute():
            path = base / path
        kw = {k: spec[k] for k in ("camera", "frames", "mean", "std", "softmax", "threads") if k in spec}
        out.append(
            OnnxLabeller(
                spec["name"],
                str(spec.get("version", "1")),
                path,
                spec["input_size"],
                spec["labels"],
                int(spec.get("batch_size", 8)),
                **kw,
            )
        )
    seen: set[str] = set()
    for lab in out:
        if lab.name in seen:
            raise ConfigError(where, "labellers", f"labeller name {lab.name!r} used twice")
        seen.add(lab.name)
    return out


class LabelsStage:
    name = "labels"
    #: reads frames, writes only record["labels"]: runs beside the privacy stage (fleetcore.stages.run_stages)
    frames_read_only = True

    def __init__(self, labellers: Sequence[Labeller], *, threads: int | None = None) -> None:
        """``threads``: how many labellers run at once on a clip (default: one per CPU, at most one
        per labeller); the labels do not depend on it."""
        self.labellers = list(labellers)
        self.threads = max(1, min(len(self.labellers), int(threads) if threads is not None else (os.cpu_count() or 1)))
        self._pool: Any = None
        self._pool_lock = threading.Lock()

    @classmethod
    def from_config(cls, config_path: str | Path | None = None) -> "LabelsStage":
        return cls(build_labellers(config_path))

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
                raise LabelError(clip_id, lab.name, f"{type(exc).__name__}: {exc}") from exc

        if self.threads > 1 and len(self.labellers) > 1:
            from concurrent.futures import wait

            futures = [self._labeller_pool().submit(run, lab) for lab in self.labellers]
            wait(futures)  # all done before anything is raised: none still reads the frames after
            results = [f.result() for f in futures]
        else:
            results = [run(lab) for lab in self.labellers]
        rows: list[dict[str, Any]] = []
        rec: dict[str, Any] = {}
        for lab, values in zip(self.labellers, results):
            rows.extend(labels_to_rows(clip_id, lab, values))
            rec[lab.name] = {"version": lab.version, "values": jsonable(values)}
        return rows, rec

    def __call__(self, *, clip: Any, telemetry: Mapping[str, np.ndarray], drive: Any, record: dict[str, Any]) -> list[dict[str, Any]]:
        rows, rec = self.label_clip(clip, telemetry, clip_id=str(record["clip_id"]), start_utc_ns=int(record["start_utc_ns"]))
        record["labels"] = rec
        return rows


@register("labels")
def labels_stage() -> LabelsStage:
    return LabelsStage.from_config(os.environ.get(CONFIG_ENV) or None)
