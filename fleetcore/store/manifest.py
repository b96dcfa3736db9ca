"""The store manifest: which drive generations a clip store holds, and safe concurrent commits.

Each drive of a store has one or more **generations**: the shards and catalog files written by
curating it under one config version. The newest committed generation of a drive is its
*current* one: catalog reads, queries, coverage and dataset builds see only current generations,
so one window never has two rows. Earlier generations stay readable by config version
(``Catalog(store, config_version=...)``) until ``fleet store gc`` collects them.

The manifest is a JSON document with one file per revision, ``_commits/<revision>.json``. A commit
reads the newest revision N, applies its change and *creates* revision N+1 exclusively (a local
hard link, or a conditional ``If-None-Match`` put on object storage). Of two runs committing at
once exactly one creates N+1; the other re-reads, re-applies its change on top and tries N+2. No
commit is lost and no revision is ever overwritten. After each commit ``clips/manifest.json`` is
refreshed as a copy of the newest revision, for tools that read a WebDataset store manifest; the
revisions are the source of truth.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

from fleetcore.store.fs import (
    AlreadyExists,
    atomic_write_bytes,
    create_exclusive,
    file_size,
    list_dir,
    read_bytes,
    remove,
)
from fleetcore.store.layout import StoreLayout
from fleetcore.store.shards import STORE_FORMAT, STORE_FORMAT_VERSION, StoreError

__all__ = ["Generation", "StoreManifest", "read_manifest", "commit", "manifest_bytes", "prune_history", "KEEP_REVISIONS"]

log = logging.getLogger(__name__)

#: revisions kept in ``_commits/`` after a commit (older ones are removed; only the newest is read)
KEEP_REVISIONS = 16


@dataclass(frozen=True)
class Generation:
    """One drive curated under one config version: its shards (store manifest entries, names
    relative to ``clips/``) and its table files (paths relative to the store root)."""

    vehicle_id: str
    drive_id: str
    date: str
    config_version: str
    clips: int
    shards: tuple[dict[str, Any], ...] = ()
    tables: tuple[tuple[str, str], ...] = ()  # (table, relpath), sorted
    #: what its parts depend on (fleetcore.clips.curate_fingerprints): extract, labels, windows
    fingerprints: tuple[tuple[str, str], ...] = ()
    committed_revision: int = 0
    committed_utc: str = ""

    @property
    def drive(self) -> str:
        return StoreLayout.drive_name(self.vehicle_id, self.drive_id)

    def table(self, name: str) -> str | None:
        return dict(self.tables).get(name)

    def fingerprint(self, part: str) -> str | None:
        return dict(self.fingerprints).get(part)

    def files(self) -> list[str]:
        """Every file of this generation, relative to the store root."""
        return [rel for _, rel in self.tables] + ["clips/" + s["name"] for s in self.shards]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shards"] = [dict(s) for s in self.shards]
        d["tables"] = dict(self.tables)
        d["fingerprints"] = dict(self.fingerprints)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Generation":
        return cls(
            vehicle_id=str(d["vehicle_id"]), drive_id=str(d["drive_id"]), date=str(d["date"]), config_version=str(d["config_version"]),
            clips=int(d["clips"]), shards=tuple(dict(s) for s in d.get("shards", ())), tables=tuple(sorted(dict(d.get("tables", {})).items())),
            fingerprints=tuple(sorted(dict(d.get("fingerprints", {})).items())),
            committed_revision=int(d.get("committed_revision", 0)), committed_utc=str(d.get("committed_utc", "")),
        )


@dataclass(frozen=True)
class StoreManifest:
    """A revision of the store manifest. ``drives[drive]`` lists its generations oldest first (the
    last one is current)."""

    revision: int = 0
    drives: Mapping[str, tuple[Generation, ...]] = field(default_factory=dict)

    def current(self) -> list[Generation]:
        return [gens[-1] for _, gens in sorted(self.drives.items()) if gens]

    def generations(self, *, config_version: str | None = None) -> list[Generation]:
        """Current generations (default), or each drive's generation under ``config_version``."""
        if config_version is None:
            return self.current()
        return [g for _, gens in sorted(self.drives.items()) for g in gens if g.config_version == config_version]

    def all_generations(self) -> list[Generation]:
        return [g for _, gens in sorted(self.drives.items()) for g in gens]

    def generation(self, vehicle_id: str, drive_id: str) -> Generation | None:
        gens = self.drives.get(StoreLayout.drive_name(vehicle_id, drive_id))
        return gens[-1] if gens else None

    def shards(self) -> list[dict[str, Any]]:
        """Every shard of every generation (current and earlier), sorted by name."""
        by = {s["name"]: s for g in self.all_generations() for s in g.shards}
        return [by[k] for k in sorted(by)]

    def config_versions(self) -> list[str]:
        return sorted({g.config_version for g in self.all_generations()})

    def to_json(self) -> dict[str, Any]:
        shards = self.shards()
        current = self.current()
        return {
            "format": STORE_FORMAT,
            "format_version": STORE_FORMAT_VERSION,
            "revision": self.revision,
            "extra": {"config_versions": self.config_versions()},
            "n_shards": len(shards),
            "n_samples": sum(s["samples"] for s in shards),
            "total_bytes": sum(s["bytes"] for s in shards),
            "current": {"drives": len(current), "clips": sum(g.clips for g in current),
                        "shards": sum(len(g.shards) for g in current), "bytes": sum(s["bytes"] for g in current for s in g.shards)},
            "shards": shards,
            "drives": {k: [g.to_json() for g in gens] for k, gens in sorted(self.drives.items())},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], *, path: str) -> "StoreManifest":
        if doc.get("format") != STORE_FORMAT or doc.get("format_version") != STORE_FORMAT_VERSION:
            raise StoreError(path, f"expected a {STORE_FORMAT} manifest of format_version {STORE_FORMAT_VERSION}, found "
                                   f"{doc.get('format')!r} version {doc.get('format_version')!r}", code="manifest_invalid")
        try:
            drives = {str(k): tuple(Generation.from_json(g) for g in v) for k, v in dict(doc.get("drives") or {}).items()}
            return cls(revision=int(doc["revision"]), drives=drives)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(path, f"malformed generation record ({exc!r})", code="manifest_invalid") from exc


def manifest_bytes(man: StoreManifest) -> bytes:
    return (json.dumps(man.to_json(), sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def _revisions(layout: StoreLayout) -> list[int]:
    if file_size(layout.commits_dir) is not None:
        raise StoreError(layout.commits_dir, "expected a folder of manifest revisions, found a file", code="manifest_invalid")
    try:
        names = list_dir(layout.commits_dir)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def read_manifest(layout: StoreLayout) -> StoreManifest:
    """The newest manifest revision; an empty manifest (revision 0) for a store with no commit yet.

    A store written by an older format (``clips/manifest.json`` without revisions) raises a
    StoreError that says so."""
    revs = _revisions(layout)
    if not revs:
        if file_size(layout.manifest_copy) is not None:
            raise StoreError(layout.manifest_copy, f"a store manifest without revisions (an older store format); expected "
                                                   f"{layout.commits_dir}/: curate into a new store", code="manifest_old_format")
        return StoreManifest()
    path = layout.commit_path(revs[-1])
    try:
        doc = json.loads(read_bytes(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(path, f"not valid JSON ({exc})", code="manifest_invalid") from exc
    return StoreManifest.from_json(doc, path=path)


def _apply(man: StoreManifest, add: Sequence[Generation], drop: Iterable[tuple[str, str | None]], revision: int, now: str) -> StoreManifest:
    drives = {k: list(v) for k, v in man.drives.items()}
    for drive, version in drop:
        if version is None:
            drives.pop(drive, None)
        else:
            drives[drive] = [g for g in drives.get(drive, []) if g.config_version != version]
    for g in add:
        gens = [x for x in drives.get(g.drive, []) if x.config_version != g.config_version]
        gens.append(replace(g, committed_revision=revision, committed_utc=now))
        drives[g.drive] = gens
    return StoreManifest(revision=revision, drives={k: tuple(v) for k, v in sorted(drives.items()) if v})


def commit(layout: StoreLayout, *, add: Sequence[Generation] = (), drop: Iterable[tuple[str, str | None]] = (),
           attempts: int = 200, now: dt.datetime | None = None) -> StoreManifest:
    """Commit a change to the store manifest and return the new revision.

    ``add``: generations that become their drives' current ones (a generation of the same drive and
    config version is replaced: committing the same run twice is idempotent). ``drop``:
    ``(drive, config_version)`` pairs to remove (``None`` as version removes the drive).

    Optimistic: read the newest revision, apply, create the next revision exclusively; on a lost
    race re-read and apply again (up to ``attempts`` times, with a short random back-off)."""
    drop = list(drop)
    for attempt in range(attempts):
        cur = read_manifest(layout)
        stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
        new = _apply(cur, add, drop, cur.revision + 1, stamp)
        data = manifest_bytes(new)
        try:
            create_exclusive(layout.commit_path(new.revision), data)
        except AlreadyExists:
            log.info("%s: revision %d was committed by another run; retrying (attempt %d)", layout.root, new.revision, attempt + 1)
            time.sleep(random.uniform(0.005, 0.05) * min(attempt + 1, 10))
            continue
        _refresh_copy(layout, new.revision)
        _prune(layout, new.revision)
        return new
    raise StoreError(layout.commits_dir, f"could not commit after {attempts} attempts (other runs kept committing first)", code="commit_conflict")


def _refresh_copy(layout: StoreLayout, revision: int) -> None:
    """Write ``clips/manifest.json`` from the newest revision (re-checked, so a slower writer does
    not leave an older copy behind)."""
    for _ in range(5):
        newest = _revisions(layout)[-1]
        atomic_write_bytes(layout.manifest_copy, read_bytes(layout.commit_path(newest)))
        if _revisions(layout)[-1] == newest:
            return


def _prune(layout: StoreLayout, revision: int, keep: int = KEEP_REVISIONS) -> None:
    for r in _revisions(layout):
        if r <= revision - keep:
            try:
                remove(layout.commit_path(r))
            except FileNotFoundError:
                continue  # another committer pruned it


def prune_history(layout: StoreLayout) -> int:
    """Remove every manifest revision but the newest (erasure: no earlier revision may still name
    erased data). Returns how many were removed."""
    revs = _revisions(layout)
    for r in revs[:-1]:
        try:
            remove(layout.commit_path(r))
        except FileNotFoundError:
            continue
    return max(0, len(revs) - 1)
