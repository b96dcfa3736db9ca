"""The curate job's run config: one typed ``CurateConfig`` (every option of a run and its version)
and the fingerprints that re-curation compares."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import fleetcore
from fleetcore.configfile import check_int, check_names, check_number
from fleetcore.errors import ConfigError
from fleetcore.stages.options import (
    NOT_IN_VERSION,
    LabelsOptions,
    PrivacyOptions,
    version_payload,
)
from fleetcore.store.layout import sha256_hex

CONFIG_WHERE = "<curate config>"


#: Bounds of the run options: beyond them a run would only exhaust memory, so they are refused up front.
MAX_RATE_HZ = 240.0
MAX_TELEMETRY_RATE_HZ = 1000.0
MAX_CLIP_S = 600.0
MAX_SIDE = 8192

@dataclass(frozen=True, kw_only=True)
class CurateConfig:
    """The curate job's one run config: everything that changes the bytes of the clip store, and
    the worker knobs that do not (marked ``NOT_IN_VERSION``). Its hash is the config version.

    The CLI, Dagster, ``python -m pipelines.curate`` and the tests build it with this constructor,
    which checks every field (a bad value raises a one-line ConfigError; lists are stored as tuples)
    and computes what else the version covers: ``trigger_hash``, the content of the shipped trigger
    library and ``trigger_paths``, and ``stages_hash``, each stage's ``describe()`` with the stages
    built from ``privacy`` / ``labels``. Beam pickles the config to the workers (unpickling does not
    run the constructor), which build their stages from it (``build_stages``): neither a worker's
    environment nor a file read there decides the bytes.
    """

    rate_hz: float = 10.0
    max_side: int = 640
    jpeg_quality: int = 90
    shard_bytes: int = 256 * 2**20
    telemetry_rate_hz: float = 20.0
    max_clip_s: float = 30.0
    cameras: tuple[str, ...] | None = None  # None = every camera of the drive
    #: extra trigger files/folders beside the shipped library; where they lie is not in the
    #: version, their content is (trigger_hash)
    trigger_paths: tuple[str, ...] = field(default=(), metadata=NOT_IN_VERSION)
    stages: tuple[str, ...] = ("labels", "privacy")  # post-extraction stages, in order (labels see unblurred frames)
    #: options of the privacy and labels stages (in the version when the stage is in ``stages``)
    privacy: PrivacyOptions = field(default_factory=PrivacyOptions)
    labels: LabelsOptions = field(default_factory=LabelsOptions)
    #: clips post-processed (stages, JPEG encoding, staging) at once by worker threads while the
    #: calling thread decodes the next clip; 0 = all in the calling thread. Not in the version: the
    #: bytes written do not depend on it.
    post_workers: int = field(default=2, metadata=NOT_IN_VERSION)
    #: OpenCV's own worker threads in a curate worker process (see
    #: fleetcore.video.convert.set_opencv_threads); not in the version either
    opencv_threads: int = field(default=1, metadata=NOT_IN_VERSION)
    #: threads that JPEG-encode one clip's frames (fleetcore.store.sample.encode_sample); not in the version
    encode_threads: int = field(default=2, metadata=NOT_IN_VERSION)
    #: computed by the constructor (see above)
    trigger_hash: str = field(init=False)
    stages_hash: str = field(init=False)
    #: the trigger library read at launch (fleetcore.triggers.library.TriggerSpec): workers use these,
    #: never the files (trigger_hash covers their content)
    triggers: tuple[Any, ...] = field(init=False, repr=False, metadata=NOT_IN_VERSION)

    def __post_init__(self) -> None:
        from fleetcore.stages.registry import stages_fingerprint
        from fleetcore.triggers.library import library_hash

        w = CONFIG_WHERE
        for name, most in (("rate_hz", MAX_RATE_HZ), ("telemetry_rate_hz", MAX_TELEMETRY_RATE_HZ), ("max_clip_s", MAX_CLIP_S)):
            check_number(self, name, w, minimum=0.0, strict=True, maximum=most)
        check_int(self, "max_side", w, minimum=16, maximum=MAX_SIDE)
        check_int(self, "jpeg_quality", w, minimum=1, maximum=100)
        check_int(self, "shard_bytes", w, minimum=1)
        check_int(self, "post_workers", w, minimum=0)
        check_int(self, "opencv_threads", w, minimum=1)
        check_int(self, "encode_threads", w, minimum=1)
        check_names(self, "cameras", w, allow_none=True)
        if self.cameras == ():
            raise ConfigError(w, "expected None (every camera) or at least one camera name", field="cameras")
        check_names(self, "trigger_paths", w)
        check_names(self, "stages", w)
        twice = sorted({s for s in self.stages if self.stages.count(s) > 1})
        if twice:
            raise ConfigError(w, f"stage {twice[0]!r} listed twice", field="stages")
        for name, cls in (("privacy", PrivacyOptions), ("labels", LabelsOptions)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(w, f"expected {cls.__name__}, got {type(getattr(self, name)).__name__}", field=name)
        from fleetcore.triggers.library import TRIGGERS_DIR, load_triggers

        object.__setattr__(self, "triggers", tuple(load_triggers([TRIGGERS_DIR, *self.trigger_paths])))
        object.__setattr__(self, "trigger_hash", library_hash(self.triggers))
        object.__setattr__(self, "stages_hash", stages_fingerprint(self.stages, options=self.stage_options()))

    def as_dict(self) -> dict[str, Any]:
        """The options as plain data (for run summaries): every field but the loaded trigger specs."""
        from dataclasses import asdict

        d = asdict(self)
        d.pop("triggers")
        return d

    def stage_options(self) -> dict[str, Any]:
        """What ``fleetcore.stages.registry.build_stages`` hands each stage's factory, by stage name."""
        return {"privacy": self.privacy, "labels": self.labels}

    def build_stages(self) -> list[Any]:
        """This run's stages, built from its options (once per worker: detectors, models)."""
        from fleetcore.stages.registry import build_stages

        return build_stages(self.stages, options=self.stage_options())

    def version(self) -> str:
        from fleetcore.video.convert import CONVERT_VERSION  # lazy: imports OpenCV

        payload = version_payload(self)
        for stage in self.stage_options():
            if stage not in self.stages:
                payload.pop(stage)  # the options of a stage this run does not run
        payload["code"] = fleetcore.__version__
        payload["frame_conversion"] = CONVERT_VERSION  # the stored pixels of a source
        blob = json.dumps(payload, sort_keys=True).encode()
        return "cfg-" + hashlib.sha256(blob).hexdigest()[:12]


def curate_stages(*, labels: bool = True, privacy: bool = True, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """``CurateConfig.stages`` from the launchers' switches (``--labels/--no-labels``,
    ``--privacy/--no-privacy``, ``--stage``): labels, then privacy, then the further stages."""
    return (*(("labels",) if labels else ()), *(("privacy",) if privacy else ()), *extra)


def load_trigger_library(cfg: CurateConfig) -> list[Any]:
    """The shipped trigger library plus the config's extra trigger files / folders, as read when
    the config was built (a worker does not read the files again)."""
    return list(cfg.triggers)


def curate_fingerprints(cfg: CurateConfig) -> dict[str, str]:
    """What each part of a drive's generation depends on, so re-curation redoes only what changed:

    * ``extract``: the stored frames and telemetry (sampling, frame size, JPEG quality, cameras,
      frame conversion, code, and every stage but labels: privacy blurring edits the pixels);
    * ``labels``: the labels stage (its labellers and their versions);
    * ``windows``: the trigger library and the window rules.

    A window the drive's current generation holds under the same ``extract`` and ``labels``
    fingerprints is re-keyed from the stored sample instead of decoded (:func:`reuse_clip`)."""
    from fleetcore.stages.registry import stages_fingerprint
    from fleetcore.video.convert import CONVERT_VERSION

    def h(obj: Any) -> str:
        return sha256_hex(json.dumps(obj, sort_keys=True, default=str))[:12]

    options = cfg.stage_options()
    pixel_stages = [[s, stages_fingerprint([s], options=options)] for s in cfg.stages if s != "labels"]
    return {
        "extract": h({"rate_hz": cfg.rate_hz, "max_side": cfg.max_side, "jpeg_quality": cfg.jpeg_quality, "cameras": cfg.cameras,
                      "code": fleetcore.__version__, "frame_conversion": CONVERT_VERSION, "stages": pixel_stages}),
        "labels": h(stages_fingerprint(["labels"], options=options) if "labels" in cfg.stages else None),
        "windows": h({"triggers": cfg.trigger_hash, "max_clip_s": cfg.max_clip_s, "telemetry_rate_hz": cfg.telemetry_rate_hz}),
    }
