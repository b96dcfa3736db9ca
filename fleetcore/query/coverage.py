"""Coverage of the clip catalog over label and trigger dimensions.

:func:`coverage_report` counts clips in every cell of the cross product of the chosen dimensions'
observed values (so combinations that never occur show up as empty cells) and flags cells below
``min_count`` as thin. A dimension is any column of the clip catalog, of ``clip_labels``
(labels pivoted wide, see :mod:`fleetcore.query.mining`) or of ``telemetry_summary``, plus:

* ``trigger`` — each clip counts once under every trigger in its ``triggers`` list;
* ``speed_band`` — the label of that name when the labels have it, else derived from the clip's
  mean speed: ``stopped`` (< 0.5 m/s), ``urban`` (< 50 km/h), ``suburban`` (< 80 km/h), ``highway``.

Missing values count under ``(none)``. :func:`render_heatmap` draws the first two dimensions as
rows x columns (further dimensions as one panel per value combination) with counts in the cells,
a log colour scale, empty cells crossed out and thin cells outlined (OpenCV only).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Sequence

import numpy as np
import polars as pl

from fleetcore.errors import FleetError
from fleetcore.query.mining import Filters, MiningSession

log = logging.getLogger(__name__)

NONE: Final = "(none)"
MAX_VALUES: Final = 64
SPEED_BANDS: Final = (("stopped", 0.5), ("urban", 50 / 3.6), ("suburban", 80 / 3.6))


class CoverageError(FleetError):
    """A coverage report cannot be made: ``where`` is the option or file, ``available`` the
    dimensions there are (named in the message)."""

    def __init__(self, where: str, problem: str, *, available: Sequence[str] = ()) -> None:
        self.available = list(available)
        super().__init__(where, problem + (f"; available dimensions: {', '.join(self.available)}" if self.available else ""))


@dataclass
class CoverageReport:
    """``table``: one row per cell (dims..., ``count``, ``status`` = empty | thin | ok)."""

    dims: list[str]
    min_count: int
    table: pl.DataFrame
    empty_cells: pl.DataFrame
    thin_cells: pl.DataFrame
    total_clips: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "dims": self.dims,
            "min_count": self.min_count,
            "total_clips": self.total_clips,
            "cells": self.table.height,
            "empty": self.empty_cells.height,
            "thin": self.thin_cells.height,
            "table": self.table.to_dicts(),
        }


def _speed_band() -> pl.Expr:
    s = pl.col("speed_mean_mps")
    expr = pl.when(s.is_null()).then(pl.lit(None, pl.String))
    for name, limit in SPEED_BANDS:
        expr = expr.when(s < limit).then(pl.lit(name))
    return expr.otherwise(pl.lit("highway")).alias("speed_band")


def clip_frame(session: MiningSession, dims: Sequence[str]) -> pl.LazyFrame:
    """Clips joined with their wide labels and telemetry summary, one row per clip. A dimension that
    is both a clips column and a label takes the clips value, else the label's (as a string)."""
    clips = session.table("clips")
    cols = set(clips.collect_schema().names())
    lf = clips
    labels = session.table("clip_labels")
    lab_cols = [c for c in labels.collect_schema().names() if c != "clip_id" and c in dims]
    if lab_cols:
        lf = lf.join(labels.select(["clip_id", *lab_cols]).rename({c: f"__lab_{c}" for c in lab_cols}), on="clip_id", how="left")
        merged = []
        for c in lab_cols:
            if c in cols:
                merged.append(pl.coalesce(pl.col(c).cast(pl.String), pl.col(f"__lab_{c}").cast(pl.String)).alias(c))
            else:
                merged.append(pl.col(f"__lab_{c}").alias(c))
        lf = lf.with_columns(merged).drop([f"__lab_{c}" for c in lab_cols])
        cols |= set(lab_cols)
    ts = session.table("telemetry_summary")
    extra = [c for c in ts.collect_schema().names() if c not in cols and c in dims]
    if extra:
        lf = lf.join(ts.select(["clip_id", *extra]), on="clip_id", how="left")
        cols |= set(extra)
    if "speed_band" in dims:
        derived = _speed_band()
        lf = lf.with_columns(pl.coalesce(pl.col("speed_band").cast(pl.String), derived).alias("speed_band") if "speed_band" in cols else derived)
    return lf


def available_dims(session: MiningSession) -> list[str]:
    names = set(session.table("clips").collect_schema().names())
    names |= set(session.table("clip_labels").collect_schema().names())
    names |= set(session.table("telemetry_summary").collect_schema().names())
    names |= {"trigger", "speed_band"}
    return sorted(names - {"clip_id"})


def coverage_report(store: str | Path, dims: Sequence[str], *, min_count: int = 5, filters: Filters | None = None) -> CoverageReport:
    """Clip counts over the cross product of ``dims`` (see the module docstring)."""
    dims = [d.strip() for d in dims if d.strip()]
    if not dims:
        raise CoverageError("dims", "give at least one dimension")
    if len(set(dims)) != len(dims):
        raise CoverageError("dims", f"dimensions repeat: {dims}")
    if min_count < 0:
        raise CoverageError("min_count", f"expected >= 0, got {min_count}")
    session = MiningSession.open(store, filters)
    avail = available_dims(session)
    unknown = [d for d in dims if d not in avail]
    if unknown:
        raise CoverageError("dims", f"unknown dimension(s) {unknown}", available=avail)
    lf = clip_frame(session, dims)
    plain = [d for d in dims if d != "trigger"]
    sel = ["clip_id", *plain] + (["triggers"] if "trigger" in dims else [])
    df = lf.select(sel).collect()
    total = df.height
    if "trigger" in dims:
        df = df.with_columns(pl.col("triggers").alias("trigger")).explode("trigger")
    for d in dims:
        dtype = df.schema[d]
        if dtype.is_float():
            raise CoverageError("dims", f"dimension {d!r} is a float column ({dtype}); use a categorical label or a band such as speed_band")
        if isinstance(dtype, (pl.List, pl.Struct, pl.Array)):
            raise CoverageError("dims", f"dimension {d!r} is a nested column ({dtype}); only 'trigger' explodes a list")
    df = df.with_columns([pl.col(d).cast(pl.String).fill_null(NONE) for d in dims])
    values: list[list[str]] = []
    for d in dims:
        vals = sorted(df[d].unique().to_list())
        if len(vals) > MAX_VALUES:
            raise CoverageError("dims", f"dimension {d!r} has {len(vals)} distinct values (at most {MAX_VALUES}); choose a coarser dimension")
        values.append(vals)
    counts = df.unique(["clip_id", *dims]).group_by(dims).agg(pl.len().cast(pl.Int64).alias("count"))
    grid = pl.DataFrame([list(c) for c in itertools.product(*values)], schema={d: pl.String for d in dims}, orient="row") \
        if all(values) else pl.DataFrame(schema={d: pl.String for d in dims})
    table = grid.join(counts, on=dims, how="left").with_columns(pl.col("count").fill_null(0))
    table = table.with_columns(
        pl.when(pl.col("count") == 0).then(pl.lit("empty")).when(pl.col("count") < min_count).then(pl.lit("thin")).otherwise(pl.lit("ok")).alias("status")
    ).sort(dims)
    return CoverageReport(
        dims=list(dims), min_count=int(min_count), table=table,
        empty_cells=table.filter(pl.col("status") == "empty"), thin_cells=table.filter(pl.col("status") == "thin"), total_clips=total,
    )


# --------------------------------------------------------------------------------------
# Heatmap
# --------------------------------------------------------------------------------------
def _colour(counts: np.ndarray, vmax: int) -> np.ndarray:
    import cv2

    norm = np.log1p(counts.astype(np.float64)) / math.log1p(max(vmax, 1))
    lut = cv2.applyColorMap(np.clip(norm * 255, 0, 255).astype(np.uint8).reshape(-1, 1), cv2.COLORMAP_VIRIDIS)
    return lut.reshape(*counts.shape, 3)


def render_heatmap(report: CoverageReport, path: str | Path, *, cell: tuple[int, int] = (96, 40)) -> Path:
    """Write the report as a PNG heatmap (see the module docstring). Returns the path."""
    import cv2

    dims = report.dims
    t = report.table
    rdim = dims[0]
    cdim = dims[1] if len(dims) > 1 else None
    facets = dims[2:]
    rvals = sorted(t[rdim].unique().to_list())
    cvals = sorted(t[cdim].unique().to_list()) if cdim else ["count"]
    fvals = sorted(set(t.select(facets).iter_rows())) if facets else [()]
    vmax = int(t["count"].max() or 0) if t.height else 0
    cw, ch = cell
    font, fs = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    label_w = max(90, 7 * max((len(v) for v in rvals), default=4) + 12)
    head_h = 22 + 14 * (max((len(v) for v in cvals), default=4) > cw // 7)
    panel_w = label_w + cw * len(cvals) + 10
    panel_h = 24 + head_h + ch * len(rvals) + 10
    legend_w = 90
    lx, ly, lh = panel_w + 15, 40, 160  # the colour bar beside the panels
    # at least as tall as the colour bar: a store with one value per dimension draws one small cell
    img = np.full((max(panel_h * len(fvals) + 30, ly + lh + 10), panel_w + legend_w, 3), 255, np.uint8)
    cv2.putText(img, f"clips by {' x '.join(dims)}  (min {report.min_count}; empty X, thin outlined)", (8, 18), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for fi, fv in enumerate(fvals):
        y0 = 30 + fi * panel_h
        sub = t
        for d, v in zip(facets, fv):
            sub = sub.filter(pl.col(d) == v)
        title = ", ".join(f"{d}={v}" for d, v in zip(facets, fv)) or f"{rdim} x {cdim or 'count'}"
        cv2.putText(img, title[:80], (8, y0 + 14), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
        grid = np.zeros((len(rvals), len(cvals)), np.int64)
        status = np.full((len(rvals), len(cvals)), "ok", dtype=object)
        ri = {v: i for i, v in enumerate(rvals)}
        ci = {v: i for i, v in enumerate(cvals)}
        for row in sub.iter_rows(named=True):
            i, j = ri[row[rdim]], ci[row[cdim]] if cdim else 0
            grid[i, j] = row["count"]
            status[i, j] = row["status"]
        colours = _colour(grid, vmax)
        gy = y0 + 24 + head_h
        for j, v in enumerate(cvals):
            x = label_w + j * cw
            cv2.putText(img, v[: cw // 7], (x + 3, gy - 6 - (12 if (j % 2 and len(v) > cw // 7) else 0)), font, fs, (0, 0, 0), 1, cv2.LINE_AA)
        for i, rv in enumerate(rvals):
            y = gy + i * ch
            cv2.putText(img, rv[: label_w // 7], (6, y + ch // 2 + 5), font, fs, (0, 0, 0), 1, cv2.LINE_AA)
            for j in range(len(cvals)):
                x = label_w + j * cw
                c = tuple(int(k) for k in colours[i, j])
                st = status[i, j]
                if st == "empty":
                    c = (225, 225, 235)
                cv2.rectangle(img, (x, y), (x + cw - 2, y + ch - 2), c, -1)
                if st == "empty":
                    cv2.line(img, (x + 4, y + 4), (x + cw - 6, y + ch - 6), (60, 60, 200), 1, cv2.LINE_AA)
                    cv2.line(img, (x + 4, y + ch - 6), (x + cw - 6, y + 4), (60, 60, 200), 1, cv2.LINE_AA)
                elif st == "thin":
                    cv2.rectangle(img, (x + 1, y + 1), (x + cw - 3, y + ch - 3), (0, 140, 255), 2)
                lum = 0.114 * c[0] + 0.587 * c[1] + 0.299 * c[2]
                txt = (0, 0, 0) if lum > 128 else (255, 255, 255)
                cv2.putText(img, str(int(grid[i, j])), (x + 6, y + ch // 2 + 5), font, 0.5, txt, 1, cv2.LINE_AA)
    # colour bar
    ramp = np.linspace(vmax, 0, lh).round().astype(np.int64).reshape(-1, 1)
    bar = _colour(ramp, vmax)
    img[ly:ly + lh, lx:lx + 18] = np.repeat(bar, 18, axis=1)
    cv2.putText(img, str(vmax), (lx + 22, ly + 10), font, fs, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "0", (lx + 22, ly + lh), font, fs, (0, 0, 0), 1, cv2.LINE_AA)
    from fleetcore.query.images import write_png

    return write_png(path, img)
