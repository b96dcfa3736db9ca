"""Labels pivoted wide: one row per clip, one column per label name (``<label>`` holds the value,
or the score for a label with scores only; ``<label>_score`` the score beside a value). The curate
job stores the pivot beside the long LABELS table (``clip_labels``); ``fleet mine`` pivots at query
time when a store has no stored pivot. Where several labellers give one label, the alphabetically
first labeller's value wins.

Types: a label with values is a String column; one with scores only is Float64, and so is a label
with neither (unknown on every clip), so that one store part where a numeric label is always
unknown (``sun_elevation_deg`` of a drive without GPS) pivots to the type of the others."""

from __future__ import annotations

import polars as pl

__all__ = ["clip_labels_frame"]


def _label_kinds(labels: pl.LazyFrame) -> list[tuple[str, bool, bool, int]]:
    """(label, has values, has scores, number of labellers) for every label name, sorted."""
    stats = (
        labels.group_by("label")
        .agg(pl.col("value").is_not_null().any().alias("v"), pl.col("score").is_not_null().any().alias("s"),
             pl.col("labeller").n_unique().alias("n"))
        .sort("label")
        .collect()
    )
    return [(str(n), bool(v), bool(s), int(k)) for n, v, s, k in stats.iter_rows()]


def clip_labels_frame(labels: pl.LazyFrame, *, kinds_from: pl.LazyFrame | None = None, only: set[str] | None = None) -> pl.LazyFrame:
    """Labels pivoted wide (see the module docstring). ``kinds_from`` (default ``labels``) decides the
    columns; ``only`` limits the pivot to the labels a query names (None: every label)."""
    src = kinds_from if kinds_from is not None else labels
    if only is not None:
        src = src.filter(pl.col("label").is_in(sorted(only)))
        labels = labels.filter(pl.col("label").is_in(sorted(only)))
    kinds = _label_kinds(src)
    if not kinds:
        return pl.LazyFrame(schema={"clip_id": pl.String})
    first = labels.select("clip_id", "label", "labeller", "value", "score")
    if any(k[3] > 1 for k in kinds):
        # group_by keeps the row order within each group, so after sorting by labeller the first row
        # of a (clip, label) is the alphabetically first labeller's
        first = first.sort("labeller", maintain_order=True)
    aggs: list[pl.Expr] = []
    taken = {"clip_id"}
    for name, has_v, has_s, _ in kinds:
        is_l = pl.col("label") == name
        if has_v:
            aggs.append(pl.col("value").filter(is_l).first().alias(name))
            if has_s and f"{name}_score" not in taken and (only is None or f"{name}_score" in only):
                aggs.append(pl.col("score").filter(is_l).first().alias(f"{name}_score"))
                taken.add(f"{name}_score")
        else:  # scores only, or no value at all (a numeric label unknown on every clip: NaN sun elevation without GPS)
            aggs.append(pl.col("score").filter(is_l).first().alias(name))
        taken.add(name)
    return first.group_by("clip_id").agg(aggs)
