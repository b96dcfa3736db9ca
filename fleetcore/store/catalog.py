"""Read access to a clip store's tables, on a local disk or object storage.

``Catalog(store).scan("clips")`` is a polars LazyFrame over the *current* generation of every
drive (see :mod:`fleetcore.store.manifest`); ``Catalog(store, config_version="cfg-...")`` reads
the generations written under that config version instead. The files come from the manifest, so
no folder is listed (one LIST of ``_commits/`` finds the newest revision). Every frame has a String
``date`` column (the hive partition of the file).

Local stores are scanned by polars directly; remote ones (``s3://``, ``gs://``, ...) through a
pyarrow dataset over the fsspec filesystem, so a query still reads only the columns it needs.
Shard members are read by byte range (:meth:`Catalog.read_member`): one ranged GET, never the
whole shard.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from fleetcore.errors import FleetError
from fleetcore.store.fs import file_size, is_dir, is_local, read_bytes, resolve
from fleetcore.store.layout import TABLES, StoreLayout
from fleetcore.store.manifest import Generation, StoreManifest, read_manifest

__all__ = ["Catalog", "CatalogError", "TableName"]

TableName = Literal["clips", "labels", "clip_labels", "index", "drives", "telemetry", "frames", "triggers"]


class CatalogError(FleetError):
    """A store table cannot be read: names the path and what is wrong."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _with_date(schema: pa.Schema) -> pa.Schema:
    return schema if "date" in schema.names else schema.append(pa.field("date", pa.string()))


def _contract_schema(table: str) -> pa.Schema | None:
    """The Arrow schema a store table is read with (its contract, plus the ``date`` partition)."""
    from schemas import CLIPS, CURATED_TELEMETRY, DRIVE_INDEX, FRAME_INDEX, LABELS, SHARD_INDEX, TRIGGER_EVENTS

    contracts = {"clips": CLIPS, "labels": LABELS, "index": SHARD_INDEX, "drives": DRIVE_INDEX, "telemetry": CURATED_TELEMETRY,
                 "frames": FRAME_INDEX, "triggers": TRIGGER_EVENTS}
    c = contracts.get(table)
    return None if c is None else _with_date(c.schema)


@dataclass(frozen=True)
class Catalog:
    """A clip store's tables. ``root`` is a local path or a URI."""

    root: str
    config_version: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def layout(self) -> StoreLayout:
        return StoreLayout(self.root)

    @cached_property
    def manifest(self) -> StoreManifest:
        return read_manifest(self.layout)

    def generations(self) -> list[Generation]:
        return self.manifest.generations(config_version=self.config_version)

    def exists_store(self) -> bool:
        return is_dir(self.root)

    def path(self, table: TableName) -> str:
        """The folder of a table (for messages)."""
        return self.layout.table_dir(table)

    def files(self, table: TableName) -> list[str]:
        """The table's files of the generations read (sorted; local paths or URIs)."""
        if table not in TABLES:
            raise CatalogError(self.root, f"unknown table {table!r}; expected one of {sorted(TABLES)}")
        rels = sorted(rel for g in self.generations() if (rel := g.table(table)) is not None)
        return [self.layout.resolve(r) for r in rels]

    def exists(self, table: TableName) -> bool:
        return bool(self.files(table))

    def scan(self, table: TableName, *, missing_ok: bool = False) -> pl.LazyFrame:
        """Lazy scan with a String ``date`` column (filters on it prune files).

        Contract tables scan with the contract's columns, so files written before a contract grew a
        column still scan (the column reads as null). With ``missing_ok`` a table with no files is an
        empty frame with the contract's columns; otherwise it is a CatalogError."""
        schema = _contract_schema(table)
        files = self.files(table)
        if not files:
            if missing_ok and schema is not None:
                return pl.from_arrow(schema.empty_table()).lazy()  # type: ignore[union-attr]
            raise CatalogError(self.path(table), f"no {table} files yet (has the curate job run on this store?)")
        if schema is None:  # clip_labels: one column per label, files may differ
            schema = self._union_schema(files)
        if is_local(self.root):
            want = pl.from_arrow(schema.empty_table()).schema  # type: ignore[union-attr]
            return pl.scan_parquet(files, hive_partitioning=True, hive_schema={"date": pl.String}, schema=want,
                                   missing_columns="insert", extra_columns="ignore")
        return pl.scan_pyarrow_dataset(self._dataset(table, files, schema))

    def read(self, table: TableName) -> pl.DataFrame:
        return self.scan(table).collect()

    def _filesystem(self) -> Any:
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs, _ = resolve(self.root)
        return PyFileSystem(FSSpecHandler(fs))

    def _dataset(self, table: str, files: list[str], schema: pa.Schema) -> Any:
        import pyarrow.dataset as ds

        paths = [resolve(f)[1] for f in files]
        part = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
        return ds.dataset(paths, schema=schema, format="parquet", filesystem=self._filesystem(), partitioning=part,
                          partition_base_dir=resolve(self.layout.table_dir(table))[1])

    def _union_schema(self, files: list[str]) -> pa.Schema:
        """The union of the files' columns (Parquet footers only), with the ``date`` partition."""
        import pyarrow.parquet as pq

        fields: dict[str, pa.Field] = {}
        fs = None if is_local(self.root) else self._filesystem()
        for f in files:
            for fld in pq.read_schema(resolve(f)[1] if fs is not None else f, filesystem=fs):
                fields.setdefault(fld.name, fld)
        fields.pop("date", None)
        return _with_date(pa.schema(list(fields.values())))

    def snapshot_id(self) -> str:
        """A stable id of the content read: a hash of the generations' shards and table files. The
        same generations give the same id, whatever else was committed in between."""
        h = hashlib.sha256()
        for g in self.generations():
            h.update(f"{g.drive}|{g.config_version}|{sorted(g.tables)}|{[(s['name'], s['sha256']) for s in g.shards]}\n".encode())
        return "snap-" + h.hexdigest()[:16]

    def store_manifest(self) -> dict[str, Any]:
        """The newest manifest revision as its JSON document."""
        if self.manifest.revision == 0:
            raise CatalogError(self.layout.commits_dir, "the store has no committed manifest yet (has the curate job run on it?)")
        return self.manifest.to_json()

    def shard_path(self, shard: str) -> str:
        """The file of a catalog ``shard`` value (relative to ``clips/``)."""
        return self.layout.shard_path(shard)

    def read_member(self, shard: str, data_offset: int, size: int) -> bytes:
        """One shard member's bytes by range (the offsets come from the ``index`` table)."""
        from fleetcore.store.tario import read_member

        return read_member(self.shard_path(shard), data_offset, size)

    def read_json(self, relpath: str) -> Any | None:
        """A JSON file of the store (e.g. ``runs/last.json``), None when absent."""
        import json

        p = self.layout.resolve(relpath)
        if file_size(p) is None:
            return None
        return json.loads(read_bytes(p))
