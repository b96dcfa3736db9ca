"""Model predictions in: ``fleet predictions import PARQUET --model NAME@VERSION`` (docs/loop.md).

A predictions file holds one row per clip or per frame. Its rows are joined to the store's clips
by one of (the first the file's columns allow):

1. ``clip_id`` (optionally with ``t_ns`` on the vehicle clock: a per-frame row);
2. ``vehicle_id`` + ``drive_id`` + ``t_ns``: the clip of that drive whose span holds ``t_ns``;
3. ``vehicle_id`` + ``utc_ns`` (int64 ns) or ``timestamp`` (a datetime, UTC when naive): the clip of
   that vehicle whose UTC span holds it; ``t_ns`` is derived from the clip's clock offset.

Value columns (all optional): ``score`` (or ``confidence``), ``class_label`` (or ``class``),
``classes`` + ``scores`` (lists), ``steering_angle_rad``, ``speed_mps``, ``accel_lon_mps2``,
``traj_x_m`` + ``traj_y_m`` (lists, ego frame) with ``traj_dt_s``. Other columns are ignored (and
listed in the result). Rows matching no clip are dropped and counted.

The rows go into the store's ``predictions`` table (``schemas.PREDICTIONS``), one file per drive
generation listed in the store manifest like its labels (:mod:`fleetcore.store.layout`); importing
the same ``NAME@VERSION`` again replaces its rows. A re-curation or relabel of a drive starts a new
generation without predictions: import them again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import polars as pl
import pyarrow as pa

from fleetcore.loop import LoopError
from fleetcore.store.catalog import Catalog
from fleetcore.store.fs import read_parquet, write_parquet
from fleetcore.store.layout import generation_id
from fleetcore.store.manifest import commit
from fleetcore.triggers.model_signals import parse_model
from schemas import PREDICTIONS

log = logging.getLogger(__name__)

ALIASES: Final = {"class": "class_label", "confidence": "score"}
VALUE_COLUMNS: Final = ("score", "class_label", "classes", "scores", "steering_angle_rad", "speed_mps", "accel_lon_mps2",
                        "traj_x_m", "traj_y_m", "traj_dt_s")
KEY_COLUMNS: Final = ("clip_id", "vehicle_id", "drive_id", "t_ns", "utc_ns", "timestamp")


@dataclass
class ImportResult:
    model: str
    rows: int  # rows stored
    unmatched: int  # rows matching no clip (dropped)
    clips: int  # clips with predictions
    drives: int
    join: str  # clip_id | vehicle_drive_time | vehicle_utc
    ignored_columns: list[str] = field(default_factory=list)
    revision: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _read(path: str | Path) -> pl.DataFrame:
    try:
        df = pl.from_arrow(read_parquet(str(path)))
    except (OSError, pa.ArrowInvalid) as exc:
        raise LoopError(str(path), f"cannot read predictions Parquet ({exc})") from exc
    assert isinstance(df, pl.DataFrame)
    return df


def _aliased(df: pl.DataFrame) -> pl.DataFrame:
    return df.rename({a: b for a, b in ALIASES.items() if a in df.columns and b not in df.columns})


def _values(df: pl.DataFrame, path: str) -> pl.DataFrame:
    """The value columns cast to their contract types (absent ones null)."""
    types = {f.name: f.type for f in PREDICTIONS.schema}
    out = []
    for c in VALUE_COLUMNS:
        dtype = pl.from_arrow(pa.schema([pa.field(c, types[c])]).empty_table()).schema[c]  # type: ignore[union-attr]
        if c in df.columns:
            try:
                out.append(df.get_column(c).cast(dtype, strict=True).alias(c))
            except pl.exceptions.PolarsError as exc:
                raise LoopError(path, f"column {c!r} cannot be read as {dtype} ({exc})") from exc
        else:
            out.append(pl.lit(None, dtype=dtype).alias(c))
    return df.with_row_index("_r").select("_r", *out).drop("_r")  # "_r" keeps the height when every column is a literal


def join_to_clips(df: pl.DataFrame, clips: pl.DataFrame, *, path: str = "<predictions>") -> tuple[pl.DataFrame, str, int]:
    """(rows with clip_id, vehicle_id, drive_id, date, t_ns + the value columns; the join used; rows dropped)."""
    df = _aliased(df)
    cols = set(df.columns)
    if not ("clip_id" in cols or {"vehicle_id", "drive_id", "t_ns"} <= cols or ("vehicle_id" in cols and cols & {"utc_ns", "timestamp"})):
        raise LoopError(path, "cannot join the rows to clips: give clip_id, or vehicle_id + drive_id + t_ns, "
                              "or vehicle_id + utc_ns / timestamp")
    vals = _values(df, path)
    keyed = pl.concat([df.with_row_index("_row").select(["_row", *[c for c in KEY_COLUMNS if c in cols]]), vals], how="horizontal")
    c = clips.select("clip_id", "vehicle_id", "drive_id", "date", "start_ns", "end_ns",
                     pl.col("start_utc").dt.epoch("ns").alias("start_utc_ns"))
    if "clip_id" in df.columns:
        how = "clip_id"
        t = pl.col("t_ns").cast(pl.Int64) if "t_ns" in df.columns else pl.lit(None, dtype=pl.Int64)
        j = keyed.with_columns(t.alias("t_ns"), pl.col("clip_id").cast(pl.String)).select(
            "_row", "clip_id", "t_ns", *VALUE_COLUMNS).join(c, on="clip_id", how="inner")
        j = j.filter(pl.col("t_ns").is_null() | ((pl.col("t_ns") >= pl.col("start_ns")) & (pl.col("t_ns") <= pl.col("end_ns"))))
    elif {"vehicle_id", "drive_id", "t_ns"} <= set(df.columns):
        how = "vehicle_drive_time"
        k = keyed.with_columns(pl.col("t_ns").cast(pl.Int64), pl.col("vehicle_id").cast(pl.String), pl.col("drive_id").cast(pl.String))
        j = (k.sort("t_ns").join_asof(c.sort("start_ns"), left_on="t_ns", right_on="start_ns", by=["vehicle_id", "drive_id"],
                                      strategy="backward", check_sortedness=False)
             .filter(pl.col("clip_id").is_not_null() & (pl.col("t_ns") <= pl.col("end_ns"))))
    elif "vehicle_id" in df.columns and ("utc_ns" in df.columns or "timestamp" in df.columns):
        how = "vehicle_utc"
        if "utc_ns" in df.columns:
            utc = pl.col("utc_ns").cast(pl.Int64)
        else:
            ts = df.get_column("timestamp")
            if not isinstance(ts.dtype, pl.Datetime):
                raise LoopError(path, f"column 'timestamp' must be a datetime, got {ts.dtype}")
            utc = (pl.col("timestamp").dt.replace_time_zone("UTC") if ts.dtype.time_zone is None else pl.col("timestamp")).dt.epoch("ns")
        k = keyed.with_columns(utc.alias("_utc"), pl.col("vehicle_id").cast(pl.String)).drop([x for x in ("t_ns", "drive_id") if x in keyed.columns])
        cc = c.with_columns((pl.col("start_utc_ns") + (pl.col("end_ns") - pl.col("start_ns"))).alias("end_utc_ns"))
        j = (k.sort("_utc").join_asof(cc.sort("start_utc_ns"), left_on="_utc", right_on="start_utc_ns", by="vehicle_id", strategy="backward",
                                                check_sortedness=False)
             .filter(pl.col("clip_id").is_not_null() & (pl.col("_utc") <= pl.col("end_utc_ns")))
             .with_columns((pl.col("_utc") - pl.col("start_utc_ns") + pl.col("start_ns")).alias("t_ns")))
    else:  # pragma: no cover - refused above
        raise LoopError(path, "cannot join the rows to clips")
    j = j.sort("_row")
    dropped = df.height - j.height
    return j.select("clip_id", "vehicle_id", "drive_id", "date", "t_ns", *VALUE_COLUMNS), how, dropped


def import_predictions(store: str | Path, path: str | Path, model: str) -> ImportResult:
    """Join a predictions Parquet file to the store's clips and store the rows under ``model``
    (``NAME@VERSION``), replacing that model version's earlier rows."""
    name, version = parse_model(model, where="--model", field=None)
    cat = Catalog(str(store))
    if cat.manifest.revision == 0:
        raise LoopError(str(store), "the store has no committed clips yet (has the curate job run on it?)")
    raw = _read(path)
    ignored = sorted(set(_aliased(raw).columns) - set(KEY_COLUMNS) - set(VALUE_COLUMNS))
    clips = cat.scan("clips").collect()
    rows, how, dropped = join_to_clips(raw, clips, path=str(path))
    if rows.is_empty():
        raise LoopError(str(path), f"none of its {raw.height} rows matches a clip of {store} (joined by {how})")
    rows = rows.with_columns(pl.lit(name).alias("model"), pl.lit(version).alias("model_version"))
    layout = cat.layout
    gens = []
    for g in cat.generations():
        mine = rows.filter((pl.col("vehicle_id") == g.vehicle_id) & (pl.col("drive_id") == g.drive_id))
        rel = g.table("predictions")
        if mine.is_empty() and rel is None:
            continue
        old = None
        if rel is not None:
            old_t = read_parquet(layout.resolve(rel), columns=PREDICTIONS.column_names)
            old_df = pl.from_arrow(old_t)
            assert isinstance(old_df, pl.DataFrame)
            old = old_df.filter(~((pl.col("model") == name) & (pl.col("model_version") == version)))
            if mine.is_empty() and old.height == old_df.height:
                continue
        new = mine.select(PREDICTIONS.column_names)
        table = new.to_arrow() if old is None else pl.concat([old.select(PREDICTIONS.column_names), new], how="vertical_relaxed").to_arrow()
        table = PREDICTIONS.validate(PREDICTIONS.conform(table))
        rel = rel or layout.table_relpath("predictions", g.date, g.drive, generation_id(g.config_version))
        write_parquet(table, layout.resolve(rel))
        tables = dict(g.tables) | {"predictions": rel}
        gens.append(replace(g, tables=tuple(sorted(tables.items()))))
    man = commit(layout, add=gens)
    res = ImportResult(model=f"{name}@{version}", rows=rows.height, unmatched=dropped, clips=rows["clip_id"].n_unique(),
                       drives=rows.select("vehicle_id", "drive_id").unique().height, join=how, ignored_columns=ignored,
                       revision=man.revision)
    log.info("predictions %s: %d rows of %d clips in %d drives (%d unmatched, joined by %s)", res.model, res.rows, res.clips,
             res.drives, res.unmatched, how)
    return res


def predictions(store: str | Path, model: str | None = None) -> pl.DataFrame:
    """The store's predictions (of one ``NAME@VERSION``, or all), with ``date``."""
    lf = Catalog(str(store)).scan("predictions", missing_ok=True)
    if model is not None:
        name, version = parse_model(model, where="--model", field=None)
        lf = lf.filter((pl.col("model") == name) & (pl.col("model_version") == version))
    return lf.collect()
