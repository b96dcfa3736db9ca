"""The trigger engine: YAML trigger specs, event finding on telemetry, and clip-window merging.

A trigger is a Polars SQL predicate (``where:``) over the derived telemetry frame of
:mod:`fleetcore.triggers.signals` (and, for a trigger with ``model: NAME@VERSION``, that model's
signals of :mod:`fleetcore.triggers.model_signals`: docs/loop.md), plus durations (min duration, pre/post roll, cooldown) and a priority;
or a seeded ``random_sample`` trigger that picks background windows. See ``docs/triggers.md``.

* :func:`load_triggers` reads and validates trigger files (raises :class:`ConfigError`).
* :func:`find_events` runs specs over one drive and returns a ``schemas.TRIGGER_EVENTS`` table.
* :func:`merge_windows` merges overlapping event windows into :class:`ClipWindow` s.

Nothing here evaluates Python code from a trigger file: predicates are parsed by ``pl.sql_expr``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Sequence, cast

import numpy as np
import polars as pl
import pyarrow as pa

from fleetcore.configfile import read_config_file
from fleetcore.errors import ConfigError
from fleetcore.triggers.model_signals import MODEL_COLUMNS, empty_model_signals, parse_model
from fleetcore.triggers.signals import DERIVED_COLUMNS, NS_PER_S, derived_frame, empty_derived
from schemas import TRIGGER_EVENTS

log = logging.getLogger(__name__)

TRIGGERS_DIR: Final = Path(__file__).resolve().parents[2] / "triggers"
NAME_RE: Final = re.compile(r"^[a-z0-9_]+$")

PeakMode = Literal["min", "max", "absmax", "median"]
TriggerKind = Literal["predicate", "random_sample"]

DEFAULT_BRIDGE_S: Final = 0.1
DEFAULT_RATE_HZ: Final = 20.0


@dataclass(frozen=True)
class RandomSample:
    """One background window per ``every_s`` of drive, at a seeded random offset."""

    every_s: float
    duration_s: float
    seed: int = 0


@dataclass(frozen=True)
class TriggerSpec:
    """A validated trigger definition. ``source`` (the file it came from) is not part of its identity."""

    name: str
    version: int
    kind: TriggerKind = "predicate"
    description: str = ""
    where: str | None = None
    min_duration_s: float = 0.0
    pre_roll_s: float = 0.0
    post_roll_s: float = 0.0
    cooldown_s: float = 0.0
    bridge_s: float = DEFAULT_BRIDGE_S
    priority: int = 0
    peak: str | None = None
    peak_mode: PeakMode = "absmax"
    sample: RandomSample | None = None
    #: ``NAME@VERSION``: the predicate may use that model's signals (fleetcore.triggers.model_signals)
    model: str | None = None
    #: the catalog label ``label_disagreement`` compares the predicted class with
    model_label: str | None = None
    source: str | None = field(default=None, compare=False)

    def normalized(self) -> dict[str, Any]:
        """The spec's content as a JSON-able dict (without ``source``)."""
        d = asdict(self)
        d.pop("source")
        for key in ("model", "model_label"):  # absent unless set: the hashes of existing triggers stay as they were
            if d[key] is None:
                d.pop(key)
        return d

    def config_hash(self) -> str:
        """Stable sha256 (hex) of the normalized content: same trigger config -> same hash."""
        blob = json.dumps(self.normalized(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def peak_column(self) -> str | None:
        """The column whose extreme value is reported as ``peak_value``."""
        if self.peak is not None:
            return self.peak
        if self.where is None:
            return None
        roots = pl.sql_expr(self.where).meta.root_names()
        return roots[0] if roots else None

    def predicate(self) -> pl.Expr:
        if self.where is None:
            raise ValueError(f"trigger {self.name!r} has no predicate")
        return pl.sql_expr(self.where)


def library_hash(specs: Sequence[TriggerSpec]) -> str:
    """Stable sha256 (hex) of a set of triggers (order-independent)."""
    h = hashlib.sha256()
    for digest in sorted(s.config_hash() for s in specs):
        h.update(digest.encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
_FIELDS: Final = {
    "name",
    "version",
    "kind",
    "description",
    "where",
    "min_duration_s",
    "pre_roll_s",
    "post_roll_s",
    "cooldown_s",
    "bridge_s",
    "priority",
    "peak",
    "peak_mode",
    "sample",
    "model",
    "model_label",
}
_REQUIRED: Final = ("name", "version")
_DURATIONS: Final = ("min_duration_s", "pre_roll_s", "post_roll_s", "cooldown_s", "bridge_s")
_SAMPLE_FIELDS: Final = {"every_s", "duration_s", "seed"}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _validate_where(path: str, fld: str, where: Any, model: bool = False) -> str:
    if not isinstance(where, str) or not where.strip():
        raise ConfigError(path, f"expected a non-empty SQL predicate string, got {where!r}", field=fld)
    try:
        expr = pl.sql_expr(where)
    except pl.exceptions.PolarsError as exc:
        raise ConfigError(path, f"cannot parse SQL predicate {where!r}: {exc}", field=fld) from exc
    allowed = (*DERIVED_COLUMNS, *MODEL_COLUMNS) if model else DERIVED_COLUMNS
    valid = ", ".join(allowed)
    roots = expr.meta.root_names()
    unknown = sorted({r for r in roots if r not in allowed})
    if unknown and not model and set(unknown) <= set(MODEL_COLUMNS):
        raise ConfigError(path, f"column(s) {unknown} are model signals: give the trigger a model: NAME@VERSION", field=fld)
    if unknown:
        raise ConfigError(path, f"unknown column(s) {unknown} in {where!r}; valid columns: {valid}", field=fld)
    if not roots:
        raise ConfigError(path, f"predicate {where!r} references no column; valid columns: {valid}", field=fld)
    try:
        frame = empty_model_signals(empty_derived()) if model else empty_derived()
        out = frame.select(expr.alias("_p"))
    except pl.exceptions.PolarsError as exc:
        raise ConfigError(path, f"predicate {where!r} cannot be evaluated: {exc}", field=fld) from exc
    if out.schema["_p"] != pl.Boolean:
        raise ConfigError(path, f"predicate {where!r} must be boolean, it gives {out.schema['_p']}", field=fld)
    return where


def _parse_sample(path: str, prefix: str, raw: Any) -> RandomSample:
    fld = f"{prefix}sample"
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping with every_s, duration_s, seed, got {raw!r}", field=fld)
    unknown = sorted(set(map(str, raw)) - _SAMPLE_FIELDS)
    if unknown:
        raise ConfigError(path, f"unknown field; allowed: {sorted(_SAMPLE_FIELDS)}", field=f"{fld}.{unknown[0]}")
    for key in ("every_s", "duration_s"):
        if key not in raw:
            raise ConfigError(path, "missing required field", field=f"{fld}.{key}")
        if not _is_number(raw[key]):
            raise ConfigError(path, f"expected a number of seconds, got {raw[key]!r}", field=f"{fld}.{key}")
        if float(raw[key]) <= 0:
            raise ConfigError(path, f"must be > 0, got {raw[key]!r}", field=f"{fld}.{key}")
    seed = raw.get("seed", 0)
    if not _is_int(seed):
        raise ConfigError(path, f"expected an integer, got {seed!r}", field=f"{fld}.seed")
    if float(raw["duration_s"]) > float(raw["every_s"]):
        raise ConfigError(path, "must not exceed every_s", field=f"{fld}.duration_s")
    return RandomSample(every_s=float(raw["every_s"]), duration_s=float(raw["duration_s"]), seed=int(seed))


def parse_trigger(raw: Any, *, path: str, prefix: str = "") -> TriggerSpec:
    """Validate one trigger mapping (``prefix`` locates it in its file, e.g. ``triggers[2].``)."""
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping of trigger fields, got {type(raw).__name__}", field=prefix.rstrip(".") or None)
    unknown = sorted(set(map(str, raw)) - _FIELDS)
    if unknown:
        raise ConfigError(path, f"unknown field; allowed fields: {sorted(_FIELDS)}", field=f"{prefix}{unknown[0]}")
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigError(path, "missing required field", field=f"{prefix}{key}")
    name = raw["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(path, f"expected a name matching [a-z0-9_]+, got {name!r}", field=f"{prefix}name")
    if not _is_int(raw["version"]) or raw["version"] < 1:
        raise ConfigError(path, f"expected an integer >= 1, got {raw['version']!r}", field=f"{prefix}version")
    kind = raw.get("kind", "predicate")
    if kind not in ("predicate", "random_sample"):
        raise ConfigError(path, f"expected 'predicate' or 'random_sample', got {kind!r}", field=f"{prefix}kind")
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise ConfigError(path, f"expected a string, got {desc!r}", field=f"{prefix}description")
    vals: dict[str, float] = {}
    for key in _DURATIONS:
        if key in raw:
            x = raw[key]
            if not _is_number(x):
                raise ConfigError(path, f"expected a number of seconds, got {x!r}", field=f"{prefix}{key}")
            if float(x) < 0:
                raise ConfigError(path, f"must not be negative, got {x!r}", field=f"{prefix}{key}")
            vals[key] = float(x)
    priority = raw.get("priority", 0)
    if not _is_int(priority):
        raise ConfigError(path, f"expected an integer, got {priority!r}", field=f"{prefix}priority")
    peak_mode = raw.get("peak_mode", "absmax")
    if peak_mode not in ("min", "max", "absmax", "median"):
        raise ConfigError(path, f"expected one of min, max, absmax, median, got {peak_mode!r}", field=f"{prefix}peak_mode")
    model = raw.get("model")
    if model is not None:
        name_, version_ = parse_model(model, where=path, field=f"{prefix}model")
        model = f"{name_}@{version_}"
    model_label = raw.get("model_label")
    if model_label is not None and (model is None or not isinstance(model_label, str) or not NAME_RE.match(model_label)):
        raise ConfigError(path, f"expected a label name [a-z0-9_]+ next to a model, got {model_label!r}", field=f"{prefix}model_label")
    peak = raw.get("peak")
    columns = (*DERIVED_COLUMNS, *MODEL_COLUMNS) if model is not None else DERIVED_COLUMNS
    if peak is not None and (not isinstance(peak, str) or peak not in columns):
        raise ConfigError(path, f"unknown column {peak!r}; valid columns: {', '.join(columns)}", field=f"{prefix}peak")

    where: str | None = None
    sample: RandomSample | None = None
    if kind == "predicate":
        if "sample" in raw:
            raise ConfigError(path, "only allowed with kind: random_sample", field=f"{prefix}sample")
        if "where" not in raw:
            raise ConfigError(path, "missing required field (a Polars SQL predicate)", field=f"{prefix}where")
        where = _validate_where(path, f"{prefix}where", raw["where"], model=model is not None)
    else:
        if "where" in raw:
            raise ConfigError(path, "not allowed with kind: random_sample", field=f"{prefix}where")
        if "sample" not in raw:
            raise ConfigError(path, "missing required field for kind: random_sample", field=f"{prefix}sample")
        sample = _parse_sample(path, prefix, raw["sample"])
    return TriggerSpec(
        name=name,
        version=int(raw["version"]),
        kind=cast(TriggerKind, kind),
        description=desc.strip(),
        where=where,
        priority=int(priority),
        peak=peak,
        peak_mode=cast(PeakMode, peak_mode),
        sample=sample,
        model=model,
        model_label=model_label,
        source=path,
        **vals,
    )


def load_trigger_file(path: str | Path) -> list[TriggerSpec]:
    """Triggers of one YAML file: a single trigger mapping, or ``triggers: [ ... ]``."""
    p = Path(path)
    doc = read_config_file(p, what="trigger file")
    if not isinstance(doc, dict):
        raise ConfigError(str(p), "expected a YAML mapping (one trigger, or 'triggers:' with a list)")
    if "triggers" in doc:
        extra = sorted(set(map(str, doc)) - {"triggers"})
        if extra:
            raise ConfigError(str(p), "unknown field next to 'triggers:'", field=extra[0])
        items = doc["triggers"]
        if not isinstance(items, list) or not items:
            raise ConfigError(str(p), "expected a non-empty list of triggers", field="triggers")
        return [parse_trigger(item, path=str(p), prefix=f"triggers[{i}].") for i, item in enumerate(items)]
    return [parse_trigger(doc, path=str(p))]


def _expand(paths: Sequence[Path | str]) -> list[Path]:
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise ConfigError(str(p), "directory holds no *.yaml / *.yml trigger files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(str(p), "trigger file or directory does not exist")
    return out


def load_triggers(paths: Sequence[Path | str] | None = None) -> list[TriggerSpec]:
    """Load and validate trigger files and/or directories of ``*.yaml`` (default: the shipped library).

    Returns specs sorted by name. Raises :class:`ConfigError` naming the file and field for any
    problem, including a trigger name defined twice (in any files).
    """
    files = _expand([TRIGGERS_DIR] if paths is None else list(paths))
    seen: dict[str, str] = {}
    specs: list[TriggerSpec] = []
    for f in files:
        for spec in load_trigger_file(f):
            if spec.name in seen:
                raise ConfigError(str(f), f"duplicate trigger name {spec.name!r} (also defined in {seen[spec.name]})", field="name")
            seen[spec.name] = str(f)
            specs.append(spec)
    return sorted(specs, key=lambda s: s.name)


# --------------------------------------------------------------------------------------
# Event finding
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Event:
    trigger: str
    start_ns: int
    end_ns: int
    peak_ns: int | None
    peak_value: float | None


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) index pairs of True runs."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def _bridge(mask: np.ndarray, max_false: int) -> np.ndarray:
    """Fill interior False runs of at most ``max_false`` samples between True samples."""
    if max_false <= 0:
        return mask
    out = mask.copy()
    for s, e in _runs(~mask):
        if s > 0 and e < len(mask) - 1 and e - s + 1 <= max_false:
            out[s : e + 1] = True
    return out


def _peak(values: np.ndarray, t: np.ndarray, mode: PeakMode) -> tuple[int | None, float | None]:
    ok = np.isfinite(values)
    if not ok.any():
        return None, None
    v = np.where(ok, values, np.nan)
    if mode == "min":
        i = int(np.nanargmin(v))
    elif mode == "max":
        i = int(np.nanargmax(v))
    elif mode == "median":
        i = int(np.nanargmin(np.abs(v - np.nanmedian(v))))
    else:
        i = int(np.nanargmax(np.abs(v)))
    return int(t[i]), float(values[i])


def _predicate_events(df: pl.DataFrame, spec: TriggerSpec, step_ns: int) -> list[_Event]:
    mask = df.select(spec.predicate().fill_null(False).alias("_m")).get_column("_m").to_numpy().astype(bool)
    mask = _bridge(mask, int(math.floor(spec.bridge_s * NS_PER_S / step_ns + 1e-9)))
    t = df.get_column("t_ns").to_numpy()
    col = spec.peak_column
    values = (
        df.get_column(col).cast(pl.Float64).fill_null(float("nan")).to_numpy()
        if col is not None
        else np.full(len(t), np.nan)
    )
    min_n = spec.min_duration_s * NS_PER_S / step_ns - 1e-6
    events = []
    for s, e in _runs(mask):
        if (e - s + 1) < min_n:
            continue
        pk_ns, pk_v = _peak(values[s : e + 1], t[s : e + 1], spec.peak_mode)
        events.append(_Event(spec.name, int(t[s]), int(t[e]), pk_ns, pk_v))
    return events


def _uniform(*parts: object) -> float:
    """Deterministic uniform [0, 1) from hashlib (never Python's hash())."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _random_events(spec: TriggerSpec, drive_id: str, span: tuple[int, int]) -> list[_Event]:
    assert spec.sample is not None
    every = int(round(spec.sample.every_s * NS_PER_S))
    dur = int(round(spec.sample.duration_s * NS_PER_S))
    s0, s1 = span
    out = []
    k = 0
    # Each period of ``every`` gets one window at a seeded offset. A last, partial period gets one too
    # when it can hold a whole window (so a short dashcam drive still yields background clips); a drive
    # shorter than one window gives one window covering all of it.
    while s0 + k * every < s1:
        p0 = s0 + k * every
        length = min(every, s1 - p0)
        u = _uniform("fleet-random-sample", spec.sample.seed, drive_id, spec.name, k)
        if length >= dur:
            start = p0 + int(u * (length - dur))
            out.append(_Event(spec.name, start, start + dur, None, None))
        elif k == 0:
            out.append(_Event(spec.name, s0, s1, None, None))
        k += 1
    return out


def _cooldown_merge(events: list[_Event], cooldown_ns: int, mode: PeakMode) -> list[_Event]:
    merged: list[_Event] = []
    for ev in sorted(events, key=lambda e: (e.start_ns, e.end_ns)):
        if merged and ev.start_ns - merged[-1].end_ns <= cooldown_ns:
            prev = merged[-1]
            pk_ns, pk_v = prev.peak_ns, prev.peak_value
            if ev.peak_value is not None and (pk_v is None or _more_extreme(ev.peak_value, pk_v, mode)):
                pk_ns, pk_v = ev.peak_ns, ev.peak_value
            merged[-1] = _Event(prev.trigger, prev.start_ns, max(prev.end_ns, ev.end_ns), pk_ns, pk_v)
        else:
            merged.append(ev)
    return merged


def _more_extreme(a: float, b: float, mode: PeakMode) -> bool:
    if mode == "min":
        return a < b
    if mode == "max":
        return a > b
    if mode == "median":  # merged events keep the first event's representative value
        return False
    return abs(a) > abs(b)


def find_events(
    telemetry: pa.Table | pl.DataFrame | None,
    specs: Sequence[TriggerSpec],
    *,
    vehicle_id: str,
    drive_id: str,
    rate_hz: float = DEFAULT_RATE_HZ,
    drive_span_ns: tuple[int, int] | None = None,
    derived: pl.DataFrame | None = None,
) -> pa.Table:
    """Run triggers over one drive; returns a ``TRIGGER_EVENTS`` table sorted by window start.

    ``telemetry`` is canonical telemetry (or None for a video-only drive: then only
    random-sample triggers fire and ``drive_span_ns`` is required). A trigger with a ``model`` runs
    only where ``derived`` carries the model signals (``fleetcore.triggers.model_signals``). The drive span
    (``drive_span_ns``, else the telemetry's first..last sample) bounds every window and drives
    the random samples; events lying entirely outside the span are dropped. ``derived`` may pass a
    precomputed ``signals.derived_frame`` result.
    """
    if drive_span_ns is not None:
        if drive_span_ns[1] < drive_span_ns[0]:
            raise ValueError(f"drive_span_ns end < start: {drive_span_ns}")
    df: pl.DataFrame | None = derived
    if df is None and telemetry is not None:
        start = drive_span_ns[0] if drive_span_ns is not None else None
        df = derived_frame(telemetry, rate_hz=rate_hz, drive_start_ns=start)
    if df is not None and df.height == 0:
        df = None
    if drive_span_ns is not None:
        span = (int(drive_span_ns[0]), int(drive_span_ns[1]))
    elif df is not None:
        t = df.get_column("t_ns")
        span = (int(cast(int, t.min())), int(cast(int, t.max())))
    else:
        raise ValueError(f"{drive_id}: drive_span_ns is required when there is no telemetry")
    step_ns = int(round(NS_PER_S / rate_hz))

    rows: list[dict[str, Any]] = []
    for spec in sorted(specs, key=lambda s: s.name):
        if spec.kind == "random_sample":
            events = _random_events(spec, drive_id, span)
        elif df is None:
            continue
        elif spec.model is not None and MODEL_COLUMNS[0] not in df.columns:
            log.debug("%s/%s: trigger %s needs the signals of model %s; skipped", vehicle_id, drive_id, spec.name, spec.model)
            continue
        else:
            events = _predicate_events(df, spec, step_ns)
        events = _cooldown_merge(events, int(round(spec.cooldown_s * NS_PER_S)), spec.peak_mode)
        pre, post = int(round(spec.pre_roll_s * NS_PER_S)), int(round(spec.post_roll_s * NS_PER_S))
        for ev in events:
            if ev.end_ns < span[0] or ev.start_ns > span[1]:
                continue  # telemetry beyond the drive span (e.g. before the cameras started)
            ws = min(max(ev.start_ns - pre, span[0]), span[1])
            we = max(min(ev.end_ns + post, span[1]), span[0])
            rows.append(
                {
                    "vehicle_id": vehicle_id,
                    "drive_id": drive_id,
                    "trigger": spec.name,
                    "trigger_version": spec.version,
                    "priority": spec.priority,
                    "event_start_ns": ev.start_ns,
                    "event_end_ns": ev.end_ns,
                    "window_start_ns": ws,
                    "window_end_ns": we,
                    "peak_ns": ev.peak_ns,
                    "peak_value": ev.peak_value,
                }
            )
    rows.sort(key=lambda r: (r["window_start_ns"], r["window_end_ns"], r["trigger"], r["event_start_ns"]))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["trigger"]] = counts.get(r["trigger"], 0) + 1
    log.debug("%s/%s: %d trigger events %s", vehicle_id, drive_id, len(rows), counts)
    return TRIGGER_EVENTS.validate(TRIGGER_EVENTS.from_pylist(rows))


# --------------------------------------------------------------------------------------
# Clip windows
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipWindow:
    """A clip to cut: merged event windows of one drive and every trigger that fired in it."""

    start_ns: int
    end_ns: int
    triggers: tuple[str, ...]  # sorted, unique
    primary_trigger: str  # highest priority, ties broken by name
    priority: int
    events: tuple[int, ...]  # row indexes into the events table
    vehicle_id: str = ""
    drive_id: str = ""

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / NS_PER_S


def _primary(pairs: Sequence[tuple[str, int]]) -> tuple[str, int]:
    name, prio = min(pairs, key=lambda p: (-p[1], p[0]))
    return name, prio


def _make_clip(rows: list[dict[str, Any]], start: int, end: int) -> ClipWindow:
    name, prio = _primary([(r["trigger"], r["priority"]) for r in rows])
    return ClipWindow(
        start_ns=start,
        end_ns=end,
        triggers=tuple(sorted({r["trigger"] for r in rows})),
        primary_trigger=name,
        priority=prio,
        events=tuple(sorted(r["_row"] for r in rows)),
        vehicle_id=rows[0]["vehicle_id"],
        drive_id=rows[0]["drive_id"],
    )


def merge_windows(events: pa.Table, *, gap_ns: int = 0, max_clip_s: float | None = None) -> list[ClipWindow]:
    """Merge overlapping event windows (per vehicle and drive) into clip windows.

    Windows merge when they overlap or when the next starts at most ``gap_ns`` after the current
    merged window ends, across triggers. With ``max_clip_s``, a merged window longer than that is
    split into the fewest equal parts no longer than ``max_clip_s``; each part keeps only the
    events whose windows overlap it. Result sorted by (vehicle_id, drive_id, start_ns).
    """
    if gap_ns < 0:
        raise ValueError(f"gap_ns must be >= 0, got {gap_ns}")
    if max_clip_s is not None and not max_clip_s > 0:
        raise ValueError(f"max_clip_s must be > 0, got {max_clip_s}")
    rows = events.select(
        ["vehicle_id", "drive_id", "trigger", "priority", "window_start_ns", "window_end_ns"]
    ).to_pylist()
    for i, r in enumerate(rows):
        r["_row"] = i
    rows.sort(key=lambda r: (r["vehicle_id"], r["drive_id"], r["window_start_ns"], r["window_end_ns"], r["trigger"]))
    groups: list[tuple[list[dict[str, Any]], int, int]] = []
    for r in rows:
        if groups:
            g, gs, ge = groups[-1]
            same = g[0]["vehicle_id"] == r["vehicle_id"] and g[0]["drive_id"] == r["drive_id"]
            if same and r["window_start_ns"] <= ge + gap_ns:
                g.append(r)
                groups[-1] = (g, gs, max(ge, r["window_end_ns"]))
                continue
        groups.append(([r], r["window_start_ns"], r["window_end_ns"]))

    out: list[ClipWindow] = []
    max_ns = None if max_clip_s is None else int(round(max_clip_s * NS_PER_S))
    for g, gs, ge in groups:
        if max_ns is None or ge - gs <= max_ns:
            out.append(_make_clip(g, gs, ge))
            continue
        parts = math.ceil((ge - gs) / max_ns)
        bounds = [gs + (ge - gs) * i // parts for i in range(parts + 1)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            sub = [r for r in g if r["window_start_ns"] < b and r["window_end_ns"] > a]
            if not sub:  # only possible for zero-length windows sitting on a boundary
                sub = [r for r in g if r["window_start_ns"] <= b and r["window_end_ns"] >= a]
            if sub:
                out.append(_make_clip(sub, a, b))
    return out
