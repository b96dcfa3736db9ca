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


def build_stages(names: Sequence[str]) -> list[ClipStage]:
    out = []
    for n in names:
        if n not in REGISTRY:
            raise ConfigError("<curate config>", "stages", f"unknown stage {n!r}; registered stages: {sorted(REGISTRY)}")
        out.append(REGISTRY[n]())
    return out
