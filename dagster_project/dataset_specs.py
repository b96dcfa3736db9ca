"""Dataset spec files (``datasets/*.yaml``) as seen by the control plane: discovery at definitions load
time (one asset per file) and the pre-build gate.

The gate asks the builder's own planner (``fleetcore.datasets.build.plan_build``: catalog only, no
shard reads) what a build would select, and refuses an empty selection or any selected clip whose
record does not say privacy was on. The build itself is ``pipelines.build_dataset.run_build_dataset``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from fleetcore.store.catalog import Catalog

NAME_RE = re.compile(r"[^A-Za-z0-9_]")


def spec_files(specs_dir: str | Path) -> list[Path]:
    d = Path(specs_dir)
    return sorted(p for p in d.glob("*.yaml") if p.is_file() and not p.name.startswith((".", "_"))) if d.is_dir() else []


def asset_name(spec_path: str | Path) -> str:
    """``datasets/braking_front.yaml`` -> ``dataset_braking_front`` (a valid Dagster name)."""
    return "dataset_" + NAME_RE.sub("_", Path(spec_path).stem)


def describe(spec_path: str | Path) -> str:
    """One line for the asset description. Never raises: a broken spec still gets an asset, which
    then fails loudly with the builder's ConfigError when materialised."""
    try:
        doc = yaml.safe_load(Path(spec_path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return f"Dataset from {Path(spec_path).name} (spec unreadable: {exc})"
    if not isinstance(doc, dict):
        return f"Dataset from {Path(spec_path).name} (spec is not a mapping)"
    text = doc.get("description") or doc.get("where") or doc.get("sql") or ""
    return f"Dataset built from {Path(spec_path).name}: {' '.join(str(text).split())[:200]}"


@dataclass
class Preflight:
    """What a build would select, and why it must not start (``problems`` non-empty)."""

    selected: pl.DataFrame  # one row per selected clip: clip_id (+ the builder's sample columns)
    counts: dict[str, int] = field(default_factory=dict)
    without_privacy: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    version: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def preflight(spec_path: str | Path, store: str | Path) -> Preflight:
    """The blocking gate. Raises ConfigError (bad spec / query): that is the spec's fault, not a gate result."""
    from fleetcore.datasets.build import plan_build
    from fleetcore.datasets.spec import load_spec

    spec = load_spec(spec_path)
    if not Catalog(str(store)).exists("clips"):
        return Preflight(pl.DataFrame({"clip_id": []}, schema={"clip_id": pl.Utf8}),
                         problems=[f"the selection is empty: {store} has no clip catalog yet (run the curate job)"])
    plan = plan_build(spec, str(store))
    samples = plan.selection.samples
    selected = samples.unique("clip_id", keep="first", maintain_order=True)
    pf = Preflight(selected, counts=dict(plan.selection.counts), version=plan.version)
    if selected.is_empty():
        refused = int(pf.counts.get("refused_privacy_off", 0))
        why = f": all {refused} matching clips were curated with privacy off" if refused and refused == pf.counts.get("matched_query") else ""
        pf.problems.append(f"the selection is empty{why} ({plan.selection.counts})")
        return pf
    ids = selected["clip_id"].to_list()
    pf.without_privacy = sorted(c for c in ids if c not in plan.selection.privacy_on)
    if pf.without_privacy:
        pf.problems.append(
            f"{len(pf.without_privacy)} of {len(ids)} selected clips were curated with privacy off "
            f"(no privacy record), e.g. {pf.without_privacy[0]}; curate with the privacy stage first"
        )
    return pf


def mined_spec(name: str, query: str, *, cameras: list[str], frames_per_clip: int, frame_rate_hz: float,
               resolution: list[int], description: str = "") -> dict[str, Any]:
    """A spec document for an ad hoc query (``sql:`` is a full SELECT over table ``clips``, or
    ``where:`` when the query is only a predicate)."""
    q = query.strip()
    sel = {"sql": q} if q.lower().startswith("select") else {"where": q}
    return {
        "name": name,
        "description": description or f"mined from the Launchpad: {' '.join(q.split())[:160]}",
        **sel,
        "cameras": list(cameras),
        "frames_per_clip": frames_per_clip,
        "frame_rate_hz": frame_rate_hz,
        "resolution": list(resolution),
        "format": "webdataset",
        "privacy_required": True,
    }
