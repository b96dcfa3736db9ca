"""The labeller interface, the labeller registry and the LABELS row conversion.

A labeller is a small object with ``name`` and ``version`` (str) and a method::

    label(clip, telemetry, *, start_utc_ns) -> dict[str, LabelValue]

``clip`` is a :class:`fleetcore.video.extract.ClipFrames` (or anything with ``sample_times_ns``,
``cameras`` and ``frames``); ``telemetry`` maps canonical signal names to float32 arrays aligned
to ``clip.sample_times_ns`` (NaN = unknown). A label value is a categorical ``str``, a ``float``,
an ``int``, a ``bool``, ``None`` (unknown), a JSON-able ``list``/``dict`` (boxes, sequences), or a
:class:`Scored` categorical value with a confidence.

A labeller that reads only the telemetry says so with a class attribute ``reads_frames = False``;
the others (the default) are skipped on a clip without cameras (a telemetry-only drive's).

Adding a labeller is one class plus the ``@register_labeller`` decorator; the labels stage builds
every registered labeller once per worker (heavy objects are made in ``__init__``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, TypeVar, Union

import numpy as np

from fleetcore.errors import FleetError


@dataclass(frozen=True)
class Scored:
    """A categorical value with a confidence in [0, 1] (e.g. a classifier's top class)."""

    value: str
    score: float


LabelValue = Union[str, float, int, bool, None, list, dict, Scored]


class LabelError(FleetError):
    """A labeller failed on a clip: names the clip, the labeller and what went wrong."""

    def __init__(self, clip_id: str, reason: str, *, labeller: str) -> None:
        self.clip_id = clip_id
        self.labeller = labeller
        self.reason = reason
        super().__init__(f"clip {clip_id}: labeller {labeller!r}", reason)


class Labeller(Protocol):
    name: str
    version: str

    def label(self, clip: Any, telemetry: Mapping[str, np.ndarray], *, start_utc_ns: int) -> dict[str, LabelValue]: ...


def reads_frames(labeller: Any) -> bool:
    """Whether a labeller reads the clip's frames (its ``reads_frames`` attribute; default True)."""
    return bool(getattr(labeller, "reads_frames", True))


L = TypeVar("L", bound=type)

#: name -> labeller class (constructed with no arguments by the labels stage)
LABELLERS: dict[str, Callable[[], Labeller]] = {}


def register_labeller(cls: L) -> L:
    """Class decorator: make ``cls`` (constructible without arguments) one of the default labellers."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls!r}: a labeller class needs a non-empty str `name`")
    if name in LABELLERS and LABELLERS[name] is not cls:
        raise ValueError(f"labeller name {name!r} registered twice ({LABELLERS[name]!r} and {cls!r})")
    LABELLERS[name] = cls
    return cls


def jsonable(v: Any) -> Any:
    """Plain-Python, JSON-able copy of a label value (numpy scalars/arrays, tuples, Scored)."""
    if isinstance(v, Scored):
        return {"value": v.value, "score": jsonable(v.score)}
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, str):
        return v
    raise TypeError(f"label value of type {type(v).__name__} is not JSON-able")


def _dumps(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), allow_nan=False)


def labels_to_rows(clip_id: str, labeller: Labeller, values: Mapping[str, LabelValue]) -> list[dict[str, Any]]:
    """LABELS contract rows for one labeller's values, sorted by label name.

    ``str`` -> value; ``bool`` -> value "true"/"false" and score 1/0; ``int``/``float`` -> score
    (value null; NaN -> both null); :class:`Scored` -> value and score; list/dict -> value as
    compact JSON with sorted keys; ``None`` -> both null (unknown).
    """
    rows = []
    for label in sorted(values):
        v = values[label]
        value: str | None = None
        score: float | None = None
        if isinstance(v, Scored):
            value, score = v.value, float(v.score)
        elif isinstance(v, (bool, np.bool_)):
            value, score = ("true" if v else "false"), (1.0 if v else 0.0)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            f = float(v)
            score = f if math.isfinite(f) else None
        elif isinstance(v, str):
            value = v
        elif v is None:
            pass
        else:
            value = _dumps(jsonable(v))
        rows.append(
            {
                "clip_id": clip_id,
                "labeller": labeller.name,
                "labeller_version": labeller.version,
                "label": label,
                "value": value,
                "score": score,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Small helpers shared by labellers
# ---------------------------------------------------------------------------------------------
def camera_frames(clip: Any, camera: str) -> list[tuple[int, np.ndarray]]:
    """(sample index, frame) of the camera's present frames, one per distinct frame object."""
    out = []
    last_id = None
    for i, f in enumerate(clip.frames.get(camera, [])):
        if f is None or id(f) == last_id:
            continue
        last_id = id(f)
        out.append((i, f))
    return out


def pick_evenly(items: list[Any], k: int) -> list[Any]:
    """Up to ``k`` items spread evenly (first and last included), in order."""
    if len(items) <= k:
        return list(items)
    if k <= 1:
        return [items[len(items) // 2]]
    idx = np.linspace(0, len(items) - 1, k).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def primary_camera(clip: Any, preferred: str = "front") -> str | None:
    cams = list(clip.cameras)
    if preferred in cams:
        return preferred
    return cams[0] if cams else None
