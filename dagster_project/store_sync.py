"""What the clip store holds per drive date, read from its manifest, so a store written outside Dagster
(``fleet curate``, ``make demo``, a Dataflow or Dask job) shows in the UI.

``date_digests(store)`` gives, per UTC date, a digest of that date's current generations (drive,
config version, shards, tables, fingerprints: not the commit revision) and a few numbers. The curate
asset records the digest of its partition (``store_digest``); the ``store_sensor`` reports a runless
materialisation of the four curate assets for every date whose digest differs from the one Dagster last
recorded, adding the date's partition when it has none.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

from fleetcore.store.layout import StoreLayout
from fleetcore.store.manifest import Generation, StoreManifest, read_manifest

#: Metadata key of the partition's store digest on the curate assets.
DIGEST_KEY = "store_digest"


@dataclass(frozen=True)
class DateState:
    date: str
    digest: str
    drives: int
    clips: int
    shards: int
    bytes: int
    config_versions: tuple[str, ...]


def generations_digest(gens: Iterable[Generation]) -> str:
    docs = []
    for g in sorted(gens, key=lambda g: g.drive):
        d = g.to_json()
        d.pop("committed_revision", None)
        d.pop("committed_utc", None)
        docs.append(d)
    return hashlib.sha256(json.dumps(docs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def date_states(manifest: StoreManifest) -> dict[str, DateState]:
    by: dict[str, list[Generation]] = {}
    for g in manifest.current():
        by.setdefault(g.date, []).append(g)
    return {
        date: DateState(date, generations_digest(gens), len(gens), sum(g.clips for g in gens), sum(len(g.shards) for g in gens),
                        sum(int(s["bytes"]) for g in gens for s in g.shards), tuple(sorted({g.config_version for g in gens})))
        for date, gens in sorted(by.items())
    }


def store_date_states(store: str) -> tuple[int, dict[str, DateState]]:
    """(manifest revision, per-date states) of a store (path or URI); (0, {}) for an empty store."""
    manifest = read_manifest(StoreLayout(store))
    return manifest.revision, date_states(manifest)


def partition_digest(manifest: StoreManifest, date: str) -> str | None:
    st = date_states(manifest).get(date)
    return st.digest if st else None


def observed_metadata(state: DateState, revision: int, store: str) -> dict[str, Any]:
    return {
        DIGEST_KEY: state.digest,
        "drives": state.drives,
        "clips": state.clips,
        "store_shards": state.shards,
        "store_bytes": state.bytes,
        "store_revision": revision,
        "config_versions": ", ".join(state.config_versions),
        "source": "store manifest (written outside this Dagster deployment, e.g. fleet curate)",
        "store_root": store,
    }


CURSOR_VERSION = 1


def read_cursor(cursor: str | None) -> dict[str, str]:
    """``{"v": 1, "dates": {date: digest}}`` -> the dates' digests last seen."""
    if not cursor:
        return {}
    doc = json.loads(cursor)
    if not isinstance(doc, dict) or doc.get("v") != CURSOR_VERSION or not isinstance(doc.get("dates"), dict):
        raise ValueError(f"store sensor cursor: expected {{'v': {CURSOR_VERSION}, 'dates': {{...}}}}, found {cursor[:80]!r}")
    return {str(k): str(v) for k, v in doc["dates"].items()}


def write_cursor(dates: dict[str, str]) -> str:
    return json.dumps({"v": CURSOR_VERSION, "dates": dict(sorted(dates.items()))}, separators=(",", ":"))
