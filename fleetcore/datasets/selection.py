"""Selecting, sampling, balancing and splitting the clips of a dataset (polars over the catalog).

Steps, all deterministic for a given catalog and spec (``seed``):

1. the clips table (which carries key labels as typed columns: ``time_of_day``, ``manoeuvre``,
   ``privacy``, ``near_duplicate_of`` ...), plus one column per label name from the labels table
   (if it exists): the label's ``value`` (a string), or its ``score`` (a float) for a label that
   only has scores. Where two labellers give the same label name, the alphabetically first
   labeller wins. A label whose name is already a clips column is named ``label_<name>`` (the
   typed clips column stays authoritative).
2. ``where`` (a Polars SQL predicate over that table) or ``sql`` (a full SELECT over table ``clips``),
   checked read-only and bounded by the spec's ``limits`` (:mod:`fleetcore.queryguard`: refused
   before it runs, collected within ``max_rows`` and ``time_limit_s``);
3. privacy: with ``privacy_required`` a clip whose record says privacy is *off* is refused
   (column ``privacy`` / ``privacy_enabled`` false, or label ``privacy_enabled`` = false); a clip
   with no privacy information is kept (it is only refused when recorded off);
4. ``drop_near_duplicates``: a clip that near-duplicates an earlier selected clip of its vehicle
   (keyframe hashes, across drives, dates and runs: ``fleetcore.labels.dedup.near_duplicates_frame``),
   or has a non-empty ``duplicate_of`` column or ``near_duplicate_of`` label, is dropped;
5. a clip that lacks one of the spec's cameras is dropped;
6. rank = sha256(seed, clip_id); ``cap_per_trigger`` keeps the first N clips of each
   ``primary_trigger`` in rank order, then ``cap_per_vehicle`` the first N of each vehicle;
7. ``class_weights`` (default 1 per trigger): weight w gives floor(w) copies of a clip plus one
   more with probability frac(w) (a hash of seed and clip_id decides), so 0.25 keeps a quarter and
   2.0 doubles a class. Copy k > 0 has the sample key ``<clip_id>_r<k>``;
8. split by drive: ``sha256(seed, drive_id)`` mapped to [0, 1) below ``val_fraction`` puts the
   whole drive in ``val`` (so one drive never lands on both sides), else ``train``;
9. shuffle: samples are ordered by sha256(seed, key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from fleetcore.datasets.spec import DatasetSpec, check_spec_query, spec_hint
from fleetcore.errors import ConfigError
from fleetcore.queryguard import QueryRefused, collect_bounded
from fleetcore.store.catalog import Catalog

log = logging.getLogger(__name__)

_OFF = {"false", "off", "0", "no", "disabled"}


def hash_unit(*parts: Any) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def hash_key(*parts: Any) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()


@dataclass
class Selection:
    """Selected samples (one row per output sample, in shuffled order) and what was dropped."""

    samples: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    labellers: dict[str, str] = field(default_factory=dict)
    privacy_on: set[str] = field(default_factory=set)  # clip_ids whose record says privacy is on


def clips_with_labels(catalog: Catalog) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The clips table with labels pivoted wide (see module docstring), and the raw labels table."""
    clips = catalog.read("clips")
    if not catalog.exists("labels"):
        return clips, None
    labels = catalog.read("labels")
    if labels.is_empty():
        return clips, labels
    first = labels.sort(["clip_id", "label", "labeller"]).unique(["clip_id", "label"], keep="first", maintain_order=True)
    wide = clips.select("clip_id")
    for name in sorted(first["label"].unique().to_list()):
        rows = first.filter(pl.col("label") == name)
        col = name if name not in clips.columns else f"label_{name}"
        if rows["value"].null_count() == rows.height and rows["score"].null_count() < rows.height:
            vals = rows.select("clip_id", pl.col("score").alias(col))
        else:
            vals = rows.select("clip_id", pl.col("value").alias(col))
        wide = wide.join(vals, on="clip_id", how="left")
    return clips.join(wide, on="clip_id", how="left"), labels


def _query_frames(df: pl.DataFrame) -> dict[str, pl.LazyFrame]:
    """The tables a spec's query sees."""
    return {"clips": df.lazy()}


def _apply_query(df: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    q = spec.query
    if q is None:
        return df
    query, fld = q
    limits = spec.query_limits
    check_spec_query(spec.path, fld, query, limits)
    ctx = pl.SQLContext(frames=_query_frames(df), register_globals=False)
    try:
        out = collect_bounded(ctx.execute(query, eager=False), limits, hint=spec_hint, what="dataset query")
    except QueryRefused as exc:
        raise ConfigError(spec.path, exc.problem, field=fld) from exc
    except (pl.exceptions.PolarsError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split("; valid columns")[0]
        raise ConfigError(spec.path, f"the query does not run over the clips table: {' '.join(first.split())[:300]}", field=fld) from exc
    if "clip_id" not in out.columns:
        raise ConfigError(spec.path, "the SELECT must return the clip_id column", field="sql")
    # keep the catalog's columns for the selected clips (a SELECT may project or reorder)
    ids = out.select("clip_id").unique()
    return df.join(ids, on="clip_id", how="semi")


def _privacy(df: pl.DataFrame, labels: pl.DataFrame | None) -> tuple[set[str], set[str]]:
    """(clip_ids recorded on, clip_ids recorded off)."""
    on: set[str] = set()
    off: set[str] = set()
    for col in ("privacy", "privacy_enabled"):
        if col in df.columns and df.schema[col] in (pl.Boolean, pl.String):
            for cid, v in df.select("clip_id", col).iter_rows():
                if v is None:
                    continue
                (off if str(v).lower() in _OFF else on).add(cid)
    if labels is not None and not labels.is_empty():
        on |= set(labels.filter(pl.col("labeller") == "privacy")["clip_id"].to_list())
        flagged = labels.filter(pl.col("label").is_in(["privacy_enabled", "privacy"]))
        for cid, v, s in flagged.select("clip_id", "value", "score").iter_rows():
            if (v is not None and str(v).lower() in _OFF) or (v is None and s == 0.0):
                off.add(cid)
    return on - off, off


def _drop_near_duplicates(df: pl.DataFrame) -> pl.DataFrame:
    """Step 4: drop clips marked as duplicates, and those that near-duplicate an earlier selected
    clip of their vehicle (keyframe hashes, across drives, dates and runs)."""
    for col in ("duplicate_of", "label_near_duplicate_of"):
        if col in df.columns:
            c = pl.col(col).cast(pl.String)
            df = df.filter(c.is_null() | (c == "") | (c == "null"))
    if "phash" in df.columns:
        from fleetcore.labels.dedup import near_duplicates_frame

        dups = near_duplicates_frame(df).filter(pl.col("near_duplicate_of").is_not_null())
        df = df.join(dups.select("clip_id"), on="clip_id", how="anti")
    return df


def select(catalog: Catalog, spec: DatasetSpec) -> Selection:
    """Run steps 1-9 of the module docstring. Raises ConfigError for a query that does not run."""
    df, labels = clips_with_labels(catalog)
    counts: dict[str, int] = {"catalog_clips": df.height}
    df = _apply_query(df, spec)
    counts["matched_query"] = df.height

    on, off = _privacy(df, labels)
    if spec.privacy_required and off:
        df = df.filter(~pl.col("clip_id").is_in(sorted(off)))
    counts["refused_privacy_off"] = counts["matched_query"] - df.height

    n = df.height
    if spec.drop_near_duplicates:
        df = _drop_near_duplicates(df)
    counts["dropped_near_duplicates"] = n - df.height

    n = df.height
    want = list(spec.cameras)
    df = df.filter(pl.col("cameras").list.eval(pl.element().is_in(want)).list.sum() == len(want))
    counts["dropped_missing_camera"] = n - df.height

    rank = [hash_key(spec.seed, "rank", c) for c in df["clip_id"].to_list()]
    df = df.with_columns(pl.Series("_rank", rank)).sort("_rank")
    if spec.cap_per_trigger is not None:
        df = df.filter(pl.int_range(pl.len()).over("primary_trigger") < spec.cap_per_trigger)
    if spec.cap_per_vehicle is not None:
        df = df.filter(pl.int_range(pl.len()).over("vehicle_id") < spec.cap_per_vehicle)
    counts["after_caps"] = df.height

    rows: list[dict[str, Any]] = []
    for r in df.iter_rows(named=True):
        w = spec.class_weights.get(r["primary_trigger"], 1.0)
        copies = int(math.floor(w)) + (1 if hash_unit(spec.seed, "weight", r["clip_id"]) < w - math.floor(w) else 0)
        split = "val" if hash_unit(spec.seed, "split", r["drive_id"]) < spec.val_fraction else "train"
        for k in range(copies):
            key = r["clip_id"] if k == 0 else f"{r['clip_id']}_r{k}"
            rows.append(
                {
                    "key": key,
                    "copy": k,
                    "clip_id": r["clip_id"],
                    "vehicle_id": r["vehicle_id"],
                    "drive_id": r["drive_id"],
                    "trigger": r["primary_trigger"],
                    "split": split,
                    "shard": r["shard"],
                    "member_key": r["member_key"],
                    "source_digests": json.dumps(_digests(r["source_digests"]), sort_keys=True),
                    "_order": hash_key(spec.seed, "order", key),
                }
            )
    schema = {k: pl.String for k in ("key", "clip_id", "vehicle_id", "drive_id", "trigger", "split", "shard", "member_key", "source_digests", "_order")}
    schema["copy"] = pl.Int64
    samples = pl.DataFrame(rows, schema=schema).sort("_order").drop("_order")
    counts["samples"] = samples.height
    counts["train"] = int((samples["split"] == "train").sum())
    counts["val"] = int((samples["split"] == "val").sum())

    labellers: dict[str, str] = {}
    if (labels is None or labels.is_empty()) and "labellers" in df.columns:  # the catalog's own name -> version map
        chosen = set(samples["clip_id"].to_list())
        found: dict[str, set[str]] = {}
        for cid, m in df.select("clip_id", "labellers").iter_rows():
            if cid in chosen and m:
                for name, ver in _digests(m).items():
                    found.setdefault(name, set()).add(ver)
        labellers = {k: ",".join(sorted(v)) for k, v in found.items()}
    if labels is not None and not labels.is_empty():
        used = labels.filter(pl.col("clip_id").is_in(samples["clip_id"].unique().to_list()))
        for name, versions in used.group_by("labeller").agg(pl.col("labeller_version").unique().sort()).iter_rows():
            labellers[name] = ",".join(versions)
    log.info("dataset %s: selection %s", spec.name, counts)
    return Selection(samples=samples, counts=counts, labellers=dict(sorted(labellers.items())), privacy_on=on)


def _digests(v: Any) -> dict[str, str]:
    """A catalog map column as a dict (polars gives a list of {key, value} structs)."""
    if v is None:
        return {}
    if isinstance(v, dict):
        return {str(k): str(x) for k, x in v.items()}
    return {str(e["key"]): str(e["value"]) for e in v}


def labels_by_clip(labels: pl.DataFrame | None, clip_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``{clip_id: {labeller: {"version": v, "values": {label: value or score}}}}`` for the sample JSON."""
    out: dict[str, dict[str, Any]] = {}
    if labels is None or labels.is_empty():
        return out
    sub = labels.filter(pl.col("clip_id").is_in(clip_ids)).sort(["clip_id", "labeller", "label"])
    for cid, lab, ver, name, val, score in sub.select("clip_id", "labeller", "labeller_version", "label", "value", "score").iter_rows():
        entry = out.setdefault(cid, {}).setdefault(lab, {"version": ver, "values": {}})
        entry["values"][name] = val if val is not None else (None if score is None or not math.isfinite(score) else score)
    return out
