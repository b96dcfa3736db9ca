"""Retention and erasure: collect superseded generations, erase a vehicle's or a drive's data.

Both commit the manifest change first (readers never meet a manifest that names a removed file),
then remove the files, then write an audit record under ``audit/``.

* :func:`collect` (``fleet store gc``) removes generations that are no longer current: all but the
  ``keep`` newest of each drive, and, with ``before``, every superseded one committed before that
  time. A drive's current generation is never collected.
* :func:`erase` (``fleet erase``) removes every generation of the matching drives and every other
  file that holds their data: shards, catalog files, telemetry, frame index, trigger events, drive
  rows, quarantine records, staged clips, earlier manifest revisions and their entries in the last
  run summary. A store's shards hold one drive each, so erasing a drive never rewrites another
  drive's shard. Built datasets are outside the store:
  :func:`fleetcore.datasets.manifest.datasets_holding` lists the versions whose samples came from
  the erased drives (``fleet erase --rebuild-datasets`` rebuilds them).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from fleetcore.store.fs import atomic_write_bytes, file_size, glob, is_dir, iter_files, read_bytes, remove
from fleetcore.store.layout import CATALOG_TABLES, StoreLayout, sha256_hex
from fleetcore.store.manifest import (
    Generation,
    StoreManifest,
    commit,
    prune_history,
    read_manifest,
)
from fleetcore.store.shards import StoreError

__all__ = ["CollectResult", "EraseResult", "collect", "erase"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectResult:
    removed_generations: list[dict[str, str]]
    files_removed: int
    bytes_removed: int
    revision: int
    audit_record: str | None


@dataclass(frozen=True)
class EraseResult:
    vehicle_id: str
    drive_id: str | None
    drives: list[str]
    clips: int
    files_removed: int
    bytes_removed: int
    revision: int
    audit_record: str
    datasets: list[dict[str, Any]] = field(default_factory=list)


def _stamp(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)


def _remove_files(paths: Iterable[str], keep: set[str]) -> tuple[int, int]:
    """Remove files (local paths or URIs) not in ``keep``; returns (files, bytes) removed."""
    n = b = 0
    for p in sorted(set(paths) - keep):
        size = file_size(p)
        if size is None:
            continue
        remove(p)
        n, b = n + 1, b + size
    return n, b


def _write_audit(layout: StoreLayout, what: str, record: dict[str, Any], when: dt.datetime) -> str:
    body = json.dumps(record, sort_keys=True, indent=1).encode()
    path = layout.path("audit", f"{when.strftime('%Y%m%dT%H%M%SZ')}-{what}-{sha256_hex(body)[:8]}.json")
    atomic_write_bytes(path, body + b"\n")
    return path


def _referenced(layout: StoreLayout, man: StoreManifest) -> set[str]:
    return {layout.resolve(rel) for g in man.all_generations() for rel in g.files()}


def collect(layout: StoreLayout, *, keep: int = 2, before: dt.datetime | None = None, now: dt.datetime | None = None,
            dry_run: bool = False) -> CollectResult:
    """Remove superseded generations: keep the ``keep`` newest generations of each drive (at least
    the current one), and drop superseded ones committed before ``before``."""
    if keep < 1:
        raise StoreError(layout.root, f"keep must be at least 1 (the current generation), got {keep}", code="bad_option")
    when = _stamp(now)
    man = read_manifest(layout)
    cutoff = None if before is None else before.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    drop: list[Generation] = []
    for gens in man.drives.values():
        old = list(gens[:-1])
        kept = old[len(old) - (keep - 1):] if keep > 1 else []
        for g in old:
            if g not in kept or (cutoff is not None and g.committed_utc < cutoff):
                drop.append(g)
    removed = [{"drive": g.drive, "config_version": g.config_version, "committed_utc": g.committed_utc} for g in drop]
    if dry_run or not drop:
        return CollectResult(removed, 0, 0, man.revision, None)
    new = commit(layout, drop=[(g.drive, g.config_version) for g in drop], now=when)
    n, b = _remove_files((layout.resolve(rel) for g in drop for rel in g.files()), _referenced(layout, new))
    audit = _write_audit(layout, "gc", {"action": "gc", "at": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "keep": keep, "before": cutoff,
                                        "revision": new.revision, "generations": removed, "files_removed": n, "bytes_removed": b}, when)
    log.info("%s: collected %d generations (%d files, %d bytes)", layout.root, len(drop), n, b)
    return CollectResult(removed, n, b, new.revision, audit)


def _drive_files(layout: StoreLayout, drive: str) -> list[str]:
    """Every table and shard file named after a drive, found by listing (so files that no
    generation names any more, e.g. from a killed run, are found too)."""
    found = []
    for t in CATALOG_TABLES:
        found += glob(layout.path("catalog", t, "date=*", f"{drive}.*parquet"))
    for t in ("triggers", "drives", "telemetry", "frames"):
        found += glob(layout.path(t, "date=*", f"{drive}.*parquet"))
    found += glob(layout.path("clips", "date=*", f"{drive}-*.tar"))
    found.append(layout.path("quarantine", f"{drive}.json"))
    return found


def _json_files(pattern: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for p in glob(pattern):
        try:
            out.append((p, json.loads(read_bytes(p))))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(p, f"not valid JSON ({exc}); cannot tell whether it holds erased data", code="unreadable") from exc
    return out


def _basename(p: str) -> str:
    return p.replace("\\", "/").rsplit("/", 1)[-1]


def erase(layout: StoreLayout, *, vehicle_id: str, drive_id: str | None = None, now: dt.datetime | None = None,
          datasets: Iterable[dict[str, Any]] = ()) -> EraseResult:
    """Erase a vehicle's data (or one of its drives) from the store and return what was removed.
    ``datasets``: the built dataset versions holding samples of it (``datasets_holding``), named in
    the audit record."""
    when = _stamp(now)
    man = read_manifest(layout)

    def match(v: str, d: str) -> bool:
        return v == vehicle_id and (drive_id is None or d == drive_id)

    gens = [g for g in man.all_generations() if match(g.vehicle_id, g.drive_id)]
    drives = sorted({g.drive for g in gens})
    new = commit(layout, drop=[(d, None) for d in drives], now=when) if drives else man
    prune_history(layout)  # earlier revisions name the erased generations
    paths = [layout.resolve(rel) for g in gens for rel in g.files()]
    # drives that no generation names (quarantined drives, killed runs) are found by their file names
    prefix = StoreLayout.drive_name(vehicle_id, drive_id or "")
    names = set(drives)
    for p in glob(layout.path("quarantine", f"{prefix}*.json")):
        names.add(_basename(p)[: -len(".json")])
    for p in glob(layout.path("*", "date=*", f"{prefix}*")) + glob(layout.path("catalog", "*", "date=*", f"{prefix}*.parquet")):
        names.add(_basename(p).split(".", 1)[0].split("-", 1)[0] if p.endswith(".tar") else _basename(p).split(".", 1)[0])
    for name in sorted(names):
        v, _, d = name.partition("__")
        if match(v, d):
            paths += _drive_files(layout, name)
    # clip quarantine records and staged clips name their drive inside
    for path, rec in _json_files(layout.path("quarantine", "clips", "*.json")) + _json_files(layout.path("staging", "*.json")):
        row = rec.get("row", rec)
        if match(str(row.get("vehicle_id")), str(row.get("drive_id"))):
            paths += [path] + ([str(rec["fragment"])] if rec.get("fragment") else [])
    # the similarity index holds vectors derived from the erased clips: it goes (rebuild it with `fleet index build`)
    vectors = bool(paths) and is_dir(layout.vectors_dir)
    if vectors:
        paths += list(iter_files(layout.vectors_dir))
    n, b = _remove_files(paths, _referenced(layout, new))
    _scrub_last_run(layout, match)
    held = [{"name": d["name"], "version": d["version"], "path": d["path"], "samples": d["samples_erased"]} for d in datasets]
    record = {"action": "erase", "at": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "vehicle_id": vehicle_id, "drive_id": drive_id,
              "drives": drives, "clips": sum(g.clips for g in gens), "revision": new.revision, "files_removed": n, "bytes_removed": b,
              "datasets_holding_data": held, "vector_index_removed": vectors}
    audit = _write_audit(layout, "erase", record, when)
    log.info("%s: erased %s (%d drives, %d files, %d bytes)", layout.root, prefix, len(drives), n, b)
    return EraseResult(vehicle_id, drive_id, drives, record["clips"], n, b, new.revision, audit, held)


def _scrub_last_run(layout: StoreLayout, match: Any) -> None:
    """Drop the erased drives' quarantine entries from ``runs/last.json``."""
    p = layout.last_run
    if file_size(p) is None:
        return
    doc = json.loads(read_bytes(p))
    q = doc.get("quarantined") or []
    keep = [r for r in q if not match(str(r.get("vehicle_id")), str(r.get("drive_id")))]
    if len(keep) != len(q):
        doc["quarantined"] = keep
        atomic_write_bytes(p, json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n")
