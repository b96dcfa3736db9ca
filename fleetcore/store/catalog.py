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
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from fleetcore.errors import FleetError
from fleetcore.store.fs import (
    file_size,
    is_dir,
    is_local,
    read_bytes,
    read_parquet,
    resolve,
)
from fleetcore.store.layout import TABLES, StoreLayout
from fleetcore.store.manifest import Generation, StoreManifest, read_manifest

__all__ = ["Catalog", "CatalogError", "TableName"]

TableName = Literal["clips", "labels", "clip_labels", "index", "drives", "telemetry", "frames", "triggers", "predictions"]


class CatalogError(FleetError):
    """A store table cannot be read: names the path and what is wrong."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = str(path)
        super().__init__(self.path, problem)


def _with_date(schema: pa.Schema) -> pa.Schema:
    return schema if "date" in schema.names else schema.append(pa.field("date", pa.string()))


def _polars_type(t: pa.DataType) -> pl.DataType | None:
    """The Polars type of an Arrow type, for the types store tables use (None: not mapped here)."""
    simple = {pa.bool_(): pl.Boolean(), pa.int8(): pl.Int8(), pa.int16(): pl.Int16(), pa.int32(): pl.Int32(), pa.int64(): pl.Int64(),
              pa.float32(): pl.Float32(), pa.float64(): pl.Float64(), pa.string(): pl.String(), pa.large_string(): pl.String()}
    if t in simple:
        return simple[t]
    if pa.types.is_timestamp(t):
        return pl.Datetime(t.unit, t.tz)  # type: ignore[arg-type]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _polars_type(t.value_type)
        return None if inner is None else pl.List(inner)
    if pa.types.is_map(t):
        k, v = _polars_type(t.key_type), _polars_type(t.item_type)
        if k is None or v is None:
            return None
        return pl.Map(k, v) if hasattr(pl, "Map") else pl.List(pl.Struct({"key": k, "value": v}))
    return None


def polars_schema(schema: pa.Schema) -> pl.Schema:
    """``schema`` as a Polars schema, without building a frame (``pl.from_arrow`` imports pandas, a
    0.4 s start-up cost of every ``fleet mine``); types not mapped here go through ``pl.from_arrow``."""
    out = {}
    for f in schema:
        t = _polars_type(f.type)
        out[f.name] = t if t is not None else pl.from_arrow(pa.schema([f]).empty_table()).schema[f.name]  # type: ignore[union-attr]
    return pl.Schema(out)


def _contract_schema(table: str) -> pa.Schema | None:
    """The Arrow schema a store table is read with (its contract, plus the ``date`` partition)."""
    from schemas import (
        CLIPS,
        CURATED_TELEMETRY,
        DRIVE_INDEX,
        FRAME_INDEX,
        LABELS,
        PREDICTIONS,
        SHARD_INDEX,
        TRIGGER_EVENTS,
    )

    contracts = {"clips": CLIPS, "labels": LABELS, "index": SHARD_INDEX, "drives": DRIVE_INDEX, "telemetry": CURATED_TELEMETRY,
                 "frames": FRAME_INDEX, "triggers": TRIGGER_EVENTS, "predictions": PREDICTIONS}
    c = contracts.get(table)
    return None if c is None else _with_date(c.schema)


def _holds_values(md: Any, field: pa.Field) -> bool:
    """Whether a file's column may hold a non-null value (from its row groups' statistics; True
    when they do not say, and for nested columns)."""
    if pa.types.is_null(field.type) or md.num_rows == 0:
        return False
    if pa.types.is_nested(field.type):
        return True
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        col = next((rg.column(k) for k in range(rg.num_columns) if rg.column(k).path_in_schema == field.name), None)
        st = None if col is None else col.statistics
        if st is None or st.null_count is None or st.null_count < rg.num_rows:
            return True
    return False


def _common_type(seen: list[tuple[pa.DataType, bool]]) -> pa.DataType:
    """The one type of a column whose files give ``seen`` (type, holds a value); see Catalog._union_schema."""
    distinct = {t for t, _ in seen}
    if len(distinct) == 1:
        return seen[0][0]
    deciding = {t for t, has in seen if has and not pa.types.is_null(t)} or {t for t, _ in seen if not pa.types.is_null(t)}
    if len(deciding) == 1:
        return deciding.pop()
    if deciding and all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in deciding):
        return pa.float64()
    return pa.string()


@dataclass(frozen=True)
class Catalog:
    """A clip store's tables. ``root`` is a local path or a URI."""

    root: str
    config_version: str | None = None

    @classmethod
    def of(cls, store: str | os.PathLike[str] | Catalog) -> Catalog:
        """The catalog of a store root (local path or URI); a Catalog is returned as it is (so a
        caller's one manifest revision is read throughout)."""
        return store if isinstance(store, Catalog) else cls(os.fspath(store))

    @property
    def layout(self) -> StoreLayout:
        return StoreLayout(self.root)

    @cached_property
    def manifest(self) -> StoreManifest:
        return read_manifest(self.layout)

    def generations(self) -> list[Generation]:
        return self.manifest.generations(config_version=self.config_version)

    def generation(self, vehicle_id: str, drive_id: str) -> Generation | None:
        """The drive's generation read (current, or the one under ``config_version``), None if none."""
        name = StoreLayout.drive_name(vehicle_id, drive_id)
        return next((g for g in self.generations() if g.drive == name), None)

    def read_drive_table(self, table: TableName, vehicle_id: str, drive_id: str, *,
                         columns: list[str] | None = None) -> pa.Table | None:
        """One drive's file of a table (e.g. its ``telemetry`` or ``frames``) as listed by its
        generation; None when the drive or that file is not in the manifest."""
        g = self.generation(vehicle_id, drive_id)
        rel = None if g is None else g.table(table)
        if rel is None:
            return None
        return read_parquet(self.layout.resolve(rel), columns=columns)

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
        mixed: list[str] = []
        if schema is None:  # clip_labels: one column per label, files may differ
            schema, mixed = self._union_schema(files)
        if is_local(self.root):
            want = polars_schema(schema)
            if mixed:  # a column's type differs between files: each file is read as it is, then cast
                return pl.concat([self._scan_cast(f, want) for f in files], how="vertical")
            return pl.scan_parquet(files, hive_partitioning=True, hive_schema={"date": pl.String}, schema=want,
                                   missing_columns="insert", extra_columns="ignore")
        return pl.scan_pyarrow_dataset(self._dataset(table, files, schema))  # the dataset casts each file to the schema

    @staticmethod
    def _scan_cast(file: str, want: pl.Schema) -> pl.LazyFrame:
        """One local file in the columns and types of ``want`` (absent columns null)."""
        lf = pl.scan_parquet(file, hive_partitioning=True, hive_schema={"date": pl.String})
        have = lf.collect_schema()
        return lf.select([(pl.col(c).cast(t) if c in have else pl.lit(None, t)).alias(c) for c, t in want.items()])

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

    def _union_schema(self, files: list[str]) -> tuple[pa.Schema, list[str]]:
        """The union of the files' columns (Parquet footers only), with the ``date`` partition, and
        the columns whose type differs between files.

        A column has one type: the files' type where they agree; else the type of the files where the
        column holds a value (a column null throughout a file does not decide: an older pivot wrote
        an always-unknown numeric label as String); numeric types that still differ read as Float64,
        anything else as String."""
        import pyarrow.parquet as pq

        types: dict[str, list[tuple[pa.DataType, bool]]] = {}  # column -> (type, holds a value) per file
        fs = None if is_local(self.root) else self._filesystem()
        for f in files:
            md = pq.read_metadata(resolve(f)[1] if fs is not None else f, filesystem=fs)
            for fld in md.schema.to_arrow_schema():
                types.setdefault(fld.name, []).append((fld.type, _holds_values(md, fld)))
        types.pop("date", None)
        fields, mixed = [], []
        for name, seen in types.items():
            distinct = {t for t, _ in seen}
            if len(distinct) > 1:
                mixed.append(name)
            fields.append(pa.field(name, _common_type(seen)))
        return _with_date(pa.schema(fields)), mixed

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
        return self._json(self.layout.resolve(relpath))

    def last_run(self) -> dict[str, Any] | None:
        """The last curate run's summary (``runs/last.json``), None when no run wrote one."""
        return self._json(self.layout.last_run)

    @staticmethod
    def _json(p: str) -> Any | None:
        import json

        if file_size(p) is None:
            return None
        try:
            return json.loads(read_bytes(p))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CatalogError(p, f"not valid JSON ({exc})") from exc
