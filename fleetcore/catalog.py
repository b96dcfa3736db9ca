"""Read access to a clip store's catalog (see ``fleetcore.curate`` for the layout).

Tables are hive-partitioned Parquet (``date=YYYY-MM-DD``) scanned lazily with polars, so a query reads
only the columns and date partitions it needs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from fleetcore.errors import FleetError

TableName = Literal["clips", "labels", "index", "drives", "telemetry", "frames", "triggers"]

_PATHS: dict[str, tuple[str, ...]] = {
    "clips": ("catalog", "clips"),
    "labels": ("catalog", "labels"),
    "index": ("catalog", "index"),
    "drives": ("drives",),
    "telemetry": ("telemetry",),
    "frames": ("frames",),
    "triggers": ("triggers",),
}


class CatalogError(FleetError):
    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Catalog:
    """A clip store's catalog. ``Catalog(store_root).scan("clips")`` is a polars LazyFrame."""

    root: str

    def path(self, table: TableName) -> Path:
        if table not in _PATHS:
            raise CatalogError(self.root, f"unknown table {table!r}; expected one of {sorted(_PATHS)}")
        return Path(self.root, *_PATHS[table])

    def files(self, table: TableName) -> list[Path]:
        return sorted(self.path(table).glob("date=*/*.parquet"))

    def exists(self, table: TableName) -> bool:
        return bool(self.files(table))

    def scan(self, table: TableName) -> pl.LazyFrame:
        """Lazy scan with the ``date`` partition column (predicate pushdown prunes partitions)."""
        files = self.files(table)
        if not files:
            raise CatalogError(str(self.path(table)), f"no {table} partitions yet (has the curate job run on this store?)")
        base = self.path(table)
        lf = pl.scan_parquet(str(base / "date=*" / "*.parquet"), hive_partitioning=True)
        return lf

    def read(self, table: TableName) -> pl.DataFrame:
        return self.scan(table).collect()

    def snapshot_id(self) -> str:
        """A stable id of the catalog's current content: a hash over the names and sizes of the catalog
        and shard files and the store manifest. Same files, same id."""
        h = hashlib.sha256()
        for table in ("clips", "labels", "index"):
            for p in self.files(table):  # type: ignore[arg-type]
                h.update(f"{p.relative_to(self.root)}:{p.stat().st_size}\n".encode())
        man = Path(self.root, "clips", "manifest.json")
        if man.is_file():
            h.update(man.read_bytes())
        return "snap-" + h.hexdigest()[:16]

    def store_manifest(self) -> dict:
        p = Path(self.root, "clips", "manifest.json")
        if not p.is_file():
            raise CatalogError(str(p), "clip store manifest is missing")
        return json.loads(p.read_text())

    def shard_path(self, shard: str) -> Path:
        """The file of a catalog ``shard`` value (relative to ``clips/``)."""
        return Path(self.root, "clips", shard)
