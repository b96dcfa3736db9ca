"""Where everything lies in a clip store: the one module that knows the store's layout.

``root`` is a local path or an fsspec URI (``s3://bucket/store``, ``gs://...``, ``memory://...``)::

    _commits/<revision>.json                          the store manifest, one file per revision
                                                      (created exclusively: the commit point)
    clips/manifest.json                               a copy of the newest revision (for tools)
    clips/date=D/<drive>-<gen>-<token>-NNNNNN.tar     WebDataset shards of one drive generation
    catalog/<table>/date=D/<drive>.<gen>.parquet      catalog rows of one drive generation:
                                                      clips (CLIPS), index (SHARD_INDEX),
                                                      labels (LABELS), clip_labels (wide labels),
                                                      predictions (PREDICTIONS, every imported model)
    triggers/date=D/<drive>.<gen>.parquet             trigger events (TRIGGER_EVENTS) of a generation
    drives/date=D/<drive>.<gen>.parquet               drive index row (DRIVE_INDEX) of a generation
    telemetry/date=D/<drive>.parquet                  canonical telemetry (CURATED_TELEMETRY)
    frames/date=D/<drive>.parquet                     per-camera frame index (FRAME_INDEX)
    quarantine/<drive>.json                           one QUARANTINE record per bad drive
    quarantine/clips/<clip_id>.json                   one QUARANTINE record per bad clip
    staging/<clip_id>.tar + .json                     encoded clip sample + its catalog row (resumable)
    runs/last.json                                    the last run's summary
    reports/                                          pictures of the control plane (Dagster metadata)
    vectors/                                          the similarity index (LanceDB tables, fleetcore.loop)
    audit/<time>-<what>.json                          erasure and collection records

``<drive>`` is ``<vehicle>__<drive_id>``; ``<gen>`` is the generation id (a hash of the config
version). Every file of a generation is named by it, so a re-curation under a new config writes
new files beside the old ones and the commit switches the drive over in one step.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from fleetcore.store.fs import join

__all__ = ["StoreLayout", "CATALOG_TABLES", "GENERATION_TABLES", "DRIVE_TABLES", "TABLES", "generation_id", "sha256_hex"]

#: tables written per drive generation under ``catalog/``
CATALOG_TABLES = ("clips", "index", "labels", "clip_labels", "predictions")
#: every table written per drive generation (catalog tables plus triggers and the drive row)
GENERATION_TABLES = (*CATALOG_TABLES, "triggers", "drives")
#: tables written once per drive (they do not depend on the config version)
DRIVE_TABLES = ("telemetry", "frames")
TABLES = (*GENERATION_TABLES, *DRIVE_TABLES)


def sha256_hex(data: bytes | str) -> str:
    """The store's one hashing helper: sha256 hex digest of bytes (or UTF-8 text)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def generation_id(config_version: str) -> str:
    """The short id that names a drive generation's files (8 hex digits of its config version)."""
    return sha256_hex(config_version)[:8]


@dataclass(frozen=True)
class StoreLayout:
    """Paths of a clip store (see the module docstring). Methods return local paths or URIs."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", os.fspath(self.root))

    def path(self, *parts: str) -> str:
        out = self.root
        for part in parts:
            out = join(out, part)
        return out

    @staticmethod
    def drive_name(vehicle_id: str, drive_id: str) -> str:
        return f"{vehicle_id}__{drive_id}"

    # tables --------------------------------------------------------------------------
    def table_dir(self, table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown store table {table!r}; expected one of {list(TABLES)}")
        return self.path("catalog", table) if table in CATALOG_TABLES else self.path(table)

    def table_relpath(self, table: str, date: str, drive: str, gen: str | None = None) -> str:
        """A table file's path relative to the root (as the manifest records it)."""
        base = ("catalog", table) if table in CATALOG_TABLES else (table,)
        name = f"{drive}.parquet" if gen is None else f"{drive}.{gen}.parquet"
        return "/".join((*base, f"date={date}", name))

    def drive_table_path(self, table: str, date: str, drive: str) -> str:
        """telemetry / frames file of a drive (not versioned)."""
        if table not in DRIVE_TABLES:
            raise ValueError(f"{table!r} is versioned per generation; expected one of {list(DRIVE_TABLES)}")
        return self.resolve(self.table_relpath(table, date, drive))

    def resolve(self, relpath: str) -> str:
        """A path the manifest records (relative to the root) as a local path or URI."""
        return self.path(*relpath.split("/"))

    # shards ---------------------------------------------------------------------------
    @property
    def clips_dir(self) -> str:
        return self.path("clips")

    def shard_dir(self, date: str) -> str:
        return self.path("clips", f"date={date}")

    def shard_path(self, shard: str) -> str:
        """The file of a catalog ``shard`` value (``date=D/<name>.tar``, relative to ``clips/``)."""
        return self.path("clips", *shard.split("/"))

    # manifest -------------------------------------------------------------------------
    @property
    def commits_dir(self) -> str:
        return self.path("_commits")

    def commit_path(self, revision: int) -> str:
        return self.path("_commits", f"{revision:010d}.json")

    @property
    def manifest_copy(self) -> str:
        return self.path("clips", "manifest.json")

    # the rest ---------------------------------------------------------------------------
    @property
    def quarantine_dir(self) -> str:
        """Drive quarantine records (``<drive>.json``); clip records are in :attr:`clip_quarantine_dir`."""
        return self.path("quarantine")

    @property
    def clip_quarantine_dir(self) -> str:
        return self.path("quarantine", "clips")

    def quarantine_path(self, vehicle_id: str, drive_id: str) -> str:
        return self.path("quarantine", f"{self.drive_name(vehicle_id, drive_id)}.json")

    def clip_quarantine_path(self, clip_id: str) -> str:
        return self.path("quarantine", "clips", f"{clip_id}.json")

    @property
    def staging(self) -> str:
        return self.path("staging")

    def staged(self, clip_id: str, ext: str) -> str:
        return self.path("staging", f"{clip_id}.{ext}")

    @property
    def runs_dir(self) -> str:
        return self.path("runs")

    @property
    def last_run(self) -> str:
        return self.path("runs", "last.json")

    @property
    def reports_dir(self) -> str:
        return self.path("reports")

    @property
    def vectors_dir(self) -> str:
        """The similarity index: a LanceDB database (``fleetcore.loop.index``)."""
        return self.path("vectors")

    @property
    def audit_dir(self) -> str:
        return self.path("audit")
