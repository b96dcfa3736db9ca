"""Post-extraction clip stages: the place where labelling and anonymisation run, between frame
extraction and JPEG encoding.

A stage is a callable ``stage(*, clip, telemetry, drive, record) -> list[label rows]`` that may modify
``clip.frames`` in place (e.g. blur faces) and add JSON-able keys to ``record`` (the sample's JSON).
It raises a :class:`~fleetcore.errors.FleetError` to quarantine the clip (never passes bad frames on).
Stages are registered by name; ``build_stages`` builds them once per worker (``DoFn.setup``).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from fleetcore.errors import ConfigError


class ClipStage(Protocol):
    name: str

    def __call__(self, *, clip: Any, telemetry: dict[str, Any], drive: Any, record: dict[str, Any]) -> list[dict[str, Any]]: ...


#: name -> factory building the stage (heavy objects are made in the factory, once per worker)
REGISTRY: dict[str, Callable[[], ClipStage]] = {}


def register(name: str) -> Callable[[Callable[[], ClipStage]], Callable[[], ClipStage]]:
    def deco(factory: Callable[[], ClipStage]) -> Callable[[], ClipStage]:
        REGISTRY[name] = factory
        return factory

    return deco


def _load_builtin_stages() -> None:
    """Import the modules that register the shipped stages (lazily: they import cv2, onnxruntime)."""
    import importlib

    for mod in ("fleetcore.labels.stage", "fleetcore.privacy"):  # register "labels", "privacy"
        importlib.import_module(mod)


def build_stages(names: Sequence[str]) -> list[ClipStage]:
    if any(n not in REGISTRY for n in names):
        _load_builtin_stages()
    out = []
    for n in names:
        if n not in REGISTRY:
            raise ConfigError("<curate config>", "stages", f"unknown stage {n!r}; registered stages: {sorted(REGISTRY)}")
        out.append(REGISTRY[n]())
    return out


def stages_fingerprint(names: Sequence[str]) -> str:
    """A hash of what the named stages' output depends on (each stage's ``describe()``: labeller
    versions, detector settings ...). Part of the curate config version, so changing a labeller or
    the privacy settings re-curates drives."""
    import hashlib
    import json

    desc = []
    for name, stage in zip(names, build_stages(names)):
        describe = getattr(stage, "describe", None)
        desc.append([name, describe() if callable(describe) else None])
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:12]
