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
import pyarrow as pa

from fleetcore.errors import FleetError

TableName = Literal["clips", "labels", "clip_labels", "index", "drives", "telemetry", "frames", "triggers"]

_PATHS: dict[str, tuple[str, ...]] = {
    "clips": ("catalog", "clips"),
    "labels": ("catalog", "labels"),
    "clip_labels": ("catalog", "clip_labels"),  # labels pivoted wide per clip, written with them
    "index": ("catalog", "index"),
    "drives": ("drives",),
    "telemetry": ("telemetry",),
    "frames": ("frames",),
    "triggers": ("triggers",),
}


def _with_date(schema: pa.Schema) -> pa.Schema:
    return schema if "date" in schema.names else schema.append(pa.field("date", pa.string()))


def _contract_schema(table: str) -> pa.Schema | None:
    """The Arrow schema a store table is read with (its contract, plus the ``date`` partition)."""
    from schemas import CLIPS, CURATED_TELEMETRY, DRIVE_INDEX, FRAME_INDEX, LABELS, SHARD_INDEX, TRIGGER_EVENTS

    contracts = {"clips": CLIPS, "labels": LABELS, "index": SHARD_INDEX, "drives": DRIVE_INDEX, "telemetry": CURATED_TELEMETRY,
                 "frames": FRAME_INDEX, "triggers": TRIGGER_EVENTS}
    c = contracts.get(table)
    return None if c is None else _with_date(c.schema)


def _union_schema(files: list[Path]) -> pa.Schema:
    """The union of the files' columns (Parquet footers only), with the ``date`` partition."""
    import pyarrow.parquet as pq

    fields: dict[str, pa.Field] = {}
    for f in files:
        for fld in pq.read_schema(f):
            fields.setdefault(fld.name, fld)
    return _with_date(pa.schema(list(fields.values())))


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

    def scan(self, table: TableName, *, missing_ok: bool = False) -> pl.LazyFrame:
        """Lazy scan with a String ``date`` partition column (predicate pushdown prunes partitions).

        Contract tables scan with the contract's columns, so partitions written before a contract grew
        a column still scan (the column reads as null). With ``missing_ok`` a table with no partitions
        yet is an empty frame with the contract's columns; otherwise it is a CatalogError."""
        schema = _contract_schema(table)
        if not self.files(table):
            if missing_ok and schema is not None:
                return pl.from_arrow(schema.empty_table()).lazy()  # type: ignore[union-attr]
            raise CatalogError(str(self.path(table)), f"no {table} partitions yet (has the curate job run on this store?)")
        src = str(self.path(table) / "date=*" / "*.parquet")
        if schema is None and table == "clip_labels":
            schema = _union_schema(self.files(table))  # one column per label: files of other dates may lack some
        if schema is None:
            return pl.scan_parquet(src, hive_partitioning=True, hive_schema={"date": pl.String})
        want = pl.from_arrow(schema.empty_table()).schema  # type: ignore[union-attr]
        return pl.scan_parquet(src, hive_partitioning=True, hive_schema={"date": pl.String}, schema=want,
                               missing_columns="insert", extra_columns="ignore")

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
