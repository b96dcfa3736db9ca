"""Small read-only queries over a clip store, shared by the assets and the checks (polars over the
catalog's hive-partitioned Parquet; JSON quarantine records). A store is a local path or a URI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from fleetcore.store.catalog import Catalog, CatalogError
from fleetcore.store.fs import glob, join, read_bytes
from fleetcore.store.layout import StoreLayout


def table(store: str | Path | Catalog, name: str, *, date: str | None = None) -> pl.DataFrame:
    """A catalog table (optionally one date partition); an empty frame when nothing was written yet.
    ``store`` is a local path, a URI (``s3://bucket/store``) or a Catalog (one manifest revision)."""
    cat = Catalog.of(store)
    if not cat.exists(name):  # type: ignore[arg-type]
        return pl.DataFrame()
    lf = cat.scan(name)  # type: ignore[arg-type]
    if date is not None:
        lf = lf.filter(pl.col("date").cast(pl.Utf8) == date)
    df = lf.collect()
    if "date" in df.columns:
        df = df.with_columns(pl.col("date").cast(pl.Utf8))
    return df


def _json_records(folder: str) -> list[dict[str, Any]]:
    out = []
    for p in glob(join(folder, "*.json")):
        try:
            out.append(json.loads(read_bytes(p)))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CatalogError(p, f"not a valid JSON quarantine record ({exc})") from exc
    return out


def quarantine_records(store: str | Path) -> list[dict[str, Any]]:
    """Drive-level quarantine records (``quarantine/*.json``; clip-level ones live in ``quarantine/clips/``)."""
    return _json_records(StoreLayout(str(store)).quarantine_dir)


def clip_quarantine_count(store: str | Path) -> int:
    return len(glob(join(StoreLayout(str(store)).clip_quarantine_dir, "*.json")))


def counts(df: pl.DataFrame, column: str, *, explode: bool = False) -> list[tuple[str, int]]:
    """(value, count) pairs sorted by count desc then value; empty for an empty frame."""
    if df.is_empty() or column not in df.columns:
        return []
    col = df.select(pl.col(column).explode() if explode else pl.col(column)).drop_nulls()
    g = col.group_by(column).len().sort(["len", column], descending=[True, False])
    return [(str(k), int(v)) for k, v in g.iter_rows()]


def categorical_labels(labels: pl.DataFrame) -> pl.DataFrame:
    """Clip-level categorical labels (``label``, ``value`` non-null, no per-camera ``cam.`` prefix, not
    the privacy labeller) with a ``tag`` column: ``label=value``, or just ``label`` for a true flag."""
    if labels.is_empty():
        return labels.with_columns(pl.lit("").alias("tag")) if "label" in labels.columns else pl.DataFrame({"clip_id": [], "tag": []}, schema={"clip_id": pl.Utf8, "tag": pl.Utf8})
    lab = labels.filter(
        (pl.col("labeller") != "privacy") & pl.col("value").is_not_null() & ~pl.col("label").str.contains(".", literal=True)
        & (pl.col("value") != "false") & (pl.col("value").str.len_chars() <= 24)
        & ~pl.col("value").str.starts_with("[") & ~pl.col("value").str.starts_with("{")
    )
    return lab.with_columns(
        pl.when(pl.col("value") == "true").then(pl.col("label")).otherwise(pl.col("label") + "=" + pl.col("value")).alias("tag")
    )


def label_counts(labels: pl.DataFrame) -> list[tuple[str, int]]:
    """(``label=value``, clips) pairs of the clip-level categorical labels."""
    tags = categorical_labels(labels)
    return counts(tags.select("clip_id", "tag").unique(), "tag") if not tags.is_empty() else []
