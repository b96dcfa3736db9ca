"""Disagreements out: model-vs-human metrics as trigger definitions and vehicle campaigns (docs/loop.md).

A **metric** (:data:`METRICS`) names a model signal of :mod:`fleetcore.triggers.model_signals`
(prediction vs human driving: steering, speed, acceleration, trajectory; prediction vs auto-label;
low confidence). :func:`disagreement_trigger` turns a model, a metric and a threshold into an
ordinary trigger definition (``model: NAME@VERSION``, ``where: "<signal> > <threshold>"``), which
``fleet triggers backtest`` prices over the store's history (clips, clip-hours, bytes), and
:func:`campaign` exports triggers as a campaign file for a vehicle-side logger
(``docs/campaigns.md``, JSON Schema ``docs/campaign.schema.json``).

:func:`match_events` scores fired events against known ones (precision / recall by overlap);
:func:`clips_for_windows` and :func:`dataset_spec` turn the windows a backtest would cut into the
stored clips they cover and a dataset spec that selects them (the next dataset version of the loop).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Mapping, Sequence

import polars as pl
import yaml

from fleetcore.errors import ConfigError
from fleetcore.loop import LoopError
from fleetcore.store.catalog import Catalog
from fleetcore.store.fs import atomic_write_bytes
from fleetcore.triggers.library import NAME_RE, TriggerSpec, load_trigger_file
from fleetcore.triggers.model_signals import DEFAULT_LABEL, MODEL_DOC, parse_model
from fleetcore.triggers.signals import DERIVED_DOC

CAMPAIGN_FORMAT: Final = "fleet-campaign"
CAMPAIGN_VERSION: Final = 1


@dataclass(frozen=True)
class Metric:
    signal: str  # the model signal column
    default_threshold: float
    unit: str
    description: str


METRICS: Final[dict[str, Metric]] = {
    "steering": Metric("steer_error", 0.2, "rad", "predicted vs logged steering-wheel angle (shadow mode)"),
    "speed": Metric("speed_error", 2.0, "m/s", "predicted vs logged speed"),
    "accel": Metric("accel_error", 2.0, "m/s^2", "predicted vs logged longitudinal acceleration"),
    "trajectory": Metric("trajectory_error", 1.5, "m", "predicted path vs the driven path (average displacement)"),
    "label": Metric("label_disagreement", 0.5, "", "predicted class differs from the clip's auto-label"),
    "low_confidence": Metric("low_confidence", 0.5, "", "1 - the model's confidence"),
}


def disagreement_trigger(
    model: str,
    metric: str,
    threshold: float | None = None,
    *,
    name: str | None = None,
    min_duration_s: float = 0.3,
    pre_roll_s: float = 3.0,
    post_roll_s: float = 3.0,
    cooldown_s: float = 5.0,
    priority: int = 80,
    label: str | None = None,
) -> dict[str, Any]:
    """A trigger definition (a mapping, as written to YAML) that fires where ``metric`` of ``model``
    exceeds ``threshold`` (default: the metric's) for ``min_duration_s``."""
    mname, mversion = parse_model(model, where="--model", field=None)
    if metric not in METRICS:
        raise LoopError(f"--metric {metric}", f"unknown metric; expected one of {sorted(METRICS)}")
    m = METRICS[metric]
    thr = m.default_threshold if threshold is None else float(threshold)
    if not math.isfinite(thr):
        raise LoopError(f"--threshold {threshold}", "must be a finite number")
    slug = "".join(ch if ch.isalnum() else "_" for ch in mname.lower())
    tname = name or f"disagree_{slug}_{metric}"
    if not NAME_RE.match(tname):
        raise LoopError(f"--name {tname}", "expected a trigger name matching [a-z0-9_]+")
    unit = f" {m.unit}" if m.unit else ""
    doc: dict[str, Any] = {
        "name": tname,
        "version": 1,
        "description": f"{mname}@{mversion} disagrees: {m.description} above {thr:g}{unit} for at least {min_duration_s:g} s.",
        "model": f"{mname}@{mversion}",
        "where": f"{m.signal} > {thr!r}",
        "min_duration_s": float(min_duration_s),
        "pre_roll_s": float(pre_roll_s),
        "post_roll_s": float(post_roll_s),
        "cooldown_s": float(cooldown_s),
        "priority": int(priority),
        "peak": m.signal,
        "peak_mode": "max",
    }
    if metric == "label":
        doc["model_label"] = label or DEFAULT_LABEL
    return doc


def write_trigger(doc: Mapping[str, Any], path: str | Path) -> TriggerSpec:
    """Write a trigger definition as YAML and read it back through the trigger loader (so what is
    written is a valid trigger file); returns the spec."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(str(p), yaml.safe_dump(dict(doc), sort_keys=False, width=100).encode())
    specs = load_trigger_file(p)
    return specs[0]


# --------------------------------------------------------------------------------------
# Campaign files
# --------------------------------------------------------------------------------------
def _signals_of(spec: TriggerSpec) -> list[str]:
    roots = set(pl.sql_expr(spec.where).meta.root_names()) if spec.where else set()
    if spec.peak:
        roots.add(spec.peak)
    return sorted(roots)


def campaign(specs: Sequence[TriggerSpec], *, name: str, description: str = "", backtest: Mapping[str, Any] | None = None,
             max_clips_per_day: int | None = None, max_bytes_per_day: int | None = None, expires_utc: str | None = None,
             now: dt.datetime | None = None) -> dict[str, Any]:
    """A campaign document (``docs/campaign.schema.json``) that tells a vehicle-side logger which
    triggers to evaluate, on which signals and models, and how much to upload."""
    if not specs:
        raise LoopError("campaign", "needs at least one trigger")
    if not NAME_RE.match(name):
        raise LoopError(f"campaign {name!r}", "expected a name matching [a-z0-9_]+")
    models: dict[str, dict[str, str]] = {}
    triggers = []
    used: set[str] = set()
    for s in specs:
        if s.kind != "predicate":
            raise LoopError(s.source or s.name, f"trigger {s.name!r} is a {s.kind} trigger; a campaign carries predicate triggers only")
        if s.model:
            mn, mv = parse_model(s.model)
            models[s.model] = {"name": mn, "version": mv}
        sig = _signals_of(s)
        used.update(sig)
        triggers.append({
            "name": s.name, "version": s.version, "description": s.description, "where": s.where, "signals": sig,
            "model": s.model, "model_label": s.model_label if s.model else None,
            "min_duration_s": s.min_duration_s, "pre_roll_s": s.pre_roll_s, "post_roll_s": s.post_roll_s,
            "cooldown_s": s.cooldown_s, "bridge_s": s.bridge_s, "priority": s.priority, "peak": s.peak_column, "peak_mode": s.peak_mode,
            "config_hash": s.config_hash(),
        })
    docs = {**DERIVED_DOC, **MODEL_DOC}
    when = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    bt = None
    if backtest is not None:
        bt = {k: backtest.get(k) for k in ("drives", "drive_hours", "firings", "clips", "clip_hours", "estimated_bytes")}
    return {
        "format": CAMPAIGN_FORMAT,
        "format_version": CAMPAIGN_VERSION,
        "name": name,
        "description": description,
        "created_utc": when,
        "expires_utc": expires_utc,
        "models": sorted(models.values(), key=lambda m: (m["name"], m["version"])),
        "signals": {c: docs.get(c, "canonical telemetry signal (docs/landing-format.md)") for c in sorted(used)},
        "triggers": triggers,
        "budget": {"max_clips_per_day": max_clips_per_day, "max_bytes_per_day": max_bytes_per_day},
        "backtest": bt,
    }


def write_campaign(doc: Mapping[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(str(p), (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode())
    return p


# --------------------------------------------------------------------------------------
# Evaluation, clips and datasets
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Match:
    precision: float
    recall: float
    true_positives: int  # fired events overlapping a known one
    fired: int
    found: int  # known events overlapped by a fired one
    known: int
    missed: list[dict[str, Any]]
    false_alarms: list[dict[str, Any]]


def _overlaps(a0: int, a1: int, b0: int, b1: int, slack_ns: int) -> bool:
    return a0 <= b1 + slack_ns and b0 <= a1 + slack_ns


def match_events(events: pl.DataFrame, known: pl.DataFrame, *, slack_s: float = 0.0) -> Match:
    """Fired ``events`` (TRIGGER_EVENTS columns: vehicle_id, drive_id, event_start_ns, event_end_ns) against
    ``known`` events (vehicle_id, drive_id, start_ns, end_ns): an event matches when the intervals
    overlap (within ``slack_s``). Precision: fired events that match / fired; recall: known events
    matched / known (1.0 for an empty side)."""
    slack = int(slack_s * 1e9)
    by_drive: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for k in known.iter_rows(named=True):
        by_drive.setdefault((k["vehicle_id"], k["drive_id"]), []).append(k)
    found: set[int] = set()
    tp = 0
    false_alarms = []
    index = {id(k): i for i, k in enumerate(r for rows in by_drive.values() for r in rows)}
    for e in events.iter_rows(named=True):
        hit = False
        for k in by_drive.get((e["vehicle_id"], e["drive_id"]), []):
            if _overlaps(int(e["event_start_ns"]), int(e["event_end_ns"]), int(k["start_ns"]), int(k["end_ns"]), slack):
                hit = True
                found.add(index[id(k)])
        if hit:
            tp += 1
        else:
            false_alarms.append({c: e[c] for c in ("vehicle_id", "drive_id", "event_start_ns", "event_end_ns")})
    missed = [{c: k[c] for c in ("vehicle_id", "drive_id", "start_ns", "end_ns")}
              for rows in by_drive.values() for k in rows if index[id(k)] not in found]
    fired, n_known = events.height, known.height
    return Match(precision=tp / fired if fired else 1.0, recall=len(found) / n_known if n_known else 1.0, true_positives=tp,
                 fired=fired, found=len(found), known=n_known, missed=missed, false_alarms=false_alarms)


def clips_for_windows(store: str | Path | Catalog, windows: pl.DataFrame) -> pl.DataFrame:
    """The stored clips overlapping the clip windows of a backtest (vehicle_id, drive_id, start_ns,
    end_ns): clip_id, vehicle_id, drive_id, start_ns, end_ns."""
    cat = Catalog.of(store)
    clips = cat.scan("clips", missing_ok=True).select("clip_id", "vehicle_id", "drive_id", "start_ns", "end_ns").collect()
    if windows.is_empty() or clips.is_empty():
        return clips.clear()
    w = windows.select("vehicle_id", "drive_id", pl.col("start_ns").alias("w0"), pl.col("end_ns").alias("w1"))
    j = clips.join(w, on=["vehicle_id", "drive_id"], how="inner").filter((pl.col("start_ns") <= pl.col("w1")) & (pl.col("w0") <= pl.col("end_ns")))
    return j.select("clip_id", "vehicle_id", "drive_id", "start_ns", "end_ns").unique("clip_id").sort("vehicle_id", "drive_id", "start_ns")


def dataset_spec(name: str, clip_ids: Sequence[str], *, store: str | None = None, description: str = "",
                 cameras: Sequence[str] = ("front",), frames_per_clip: int = 4, frame_rate_hz: float = 2.0,
                 resolution: tuple[int, int] = (224, 128), privacy_required: bool = True, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A dataset spec (docs/datasets.md) selecting exactly ``clip_ids``."""
    ids = sorted({str(c) for c in clip_ids})
    if not ids:
        raise LoopError(f"dataset {name}", "no clips to select")
    quoted = ",\n  ".join("'" + i.replace("'", "''") + "'" for i in ids)
    sql = f"SELECT * FROM clips WHERE clip_id IN (\n  {quoted}\n)"
    doc: dict[str, Any] = {"name": name, "description": description, "sql": sql, "cameras": list(cameras), "frames_per_clip": frames_per_clip,
                           "frame_rate_hz": frame_rate_hz, "resolution": list(resolution), "privacy_required": privacy_required}
    if store is not None:
        doc["store"] = store
    from fleetcore.datasets.spec import DATASET_LIMITS

    if len(sql) > DATASET_LIMITS.max_chars:
        doc["limits"] = {"max_chars": len(sql)}
    doc.update(dict(extra or {}))
    return doc


def write_dataset_spec(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Write a dataset spec and check it parses (raises ConfigError)."""
    from fleetcore.datasets.spec import load_spec

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(str(p), yaml.safe_dump(dict(doc), sort_keys=False, width=100).encode())
    try:
        load_spec(p)
    except ConfigError:
        p.unlink()
        raise
    return p


def next_dataset_spec(base: Mapping[str, Any], clip_ids: Sequence[str], *, store: str | None = None, name: str | None = None,
                      description: str = "") -> dict[str, Any]:
    """The next version of a built dataset (its manifest ``base``): the same spec options (cameras,
    frames, resolution, format, privacy), selecting its clips plus ``clip_ids``."""
    from fleetcore.datasets.spec import spec_from_json

    sp = spec_from_json(base["spec"])
    ids = sorted({s["clip_id"] for s in base["samples"]} | {str(c) for c in clip_ids})
    extra: dict[str, Any] = {"format": sp.format, "jpeg_quality": sp.jpeg_quality, "seed": sp.seed, "val_fraction": sp.val_fraction}
    return dataset_spec(name or sp.name, ids, store=store, cameras=sp.cameras, frames_per_clip=sp.frames_per_clip, frame_rate_hz=sp.frame_rate_hz,
                        resolution=sp.resolution, privacy_required=sp.privacy_required,
                        description=description or f"{base['name']}@{base['version']} plus {len(set(clip_ids))} clips", extra=extra)
