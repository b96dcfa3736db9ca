"""Writing a drive's generation: its tables, shards and catalog files (one call per drive)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa

from fleetcore.clips.config import CurateConfig
from fleetcore.clips.extract import ClipResult
from fleetcore.ingest.validate import ValidatedDrive
from fleetcore.landing.drives import dumps_json
from fleetcore.store.fs import atomic_write_bytes, file_size, remove, write_parquet
from fleetcore.store.layout import StoreLayout, generation_id
from fleetcore.store.manifest import Generation, StoreManifest
from schemas import (
    CLIPS,
    CURATED_TELEMETRY,
    DRIVE_INDEX,
    FRAME_INDEX,
    SHARD_INDEX,
    TRIGGER_EVENTS,
)


def already_curated(manifest: StoreManifest, vehicle_id: str, drive_id: str, config_version: str) -> bool:
    """True when the drive's current generation was curated under ``config_version``."""
    g = manifest.generation(vehicle_id, drive_id)
    return g is not None and g.config_version == config_version


def curated_telemetry(vd: ValidatedDrive) -> pa.Table | None:
    if vd.telemetry is None:
        return None
    n = vd.telemetry.num_rows
    t = vd.telemetry
    t = t.add_column(0, "drive_id", pa.array([vd.drive_id] * n, pa.string()))
    t = t.add_column(0, "vehicle_id", pa.array([vd.vehicle_id] * n, pa.string()))
    t = t.append_column("date", pa.array([vd.date] * n, pa.string()))
    return CURATED_TELEMETRY.validate(CURATED_TELEMETRY.conform(t))


def write_drive_tables(vd: ValidatedDrive, events: pa.Table, layout: StoreLayout, cfg: CurateConfig) -> int:
    """Write the drive's telemetry and frame index (one file per drive) and its trigger events (one
    file per generation). Returns bytes written."""
    name = layout.drive_name(vd.vehicle_id, vd.drive_id)
    n = 0
    tel = curated_telemetry(vd)
    if tel is not None:
        n += write_parquet(tel, layout.drive_table_path("telemetry", vd.date, name))
    n += write_parquet(FRAME_INDEX.validate(vd.frame_index), layout.drive_table_path("frames", vd.date, name))
    gen = generation_id(cfg.version())
    n += write_parquet(TRIGGER_EVENTS.validate(events), layout.resolve(layout.table_relpath("triggers", vd.date, name, gen)))
    return n


def pack_drive(layout: StoreLayout, drive: dict[str, Any], clips: Sequence[ClipResult], cfg: CurateConfig, *,
               fingerprints: Mapping[str, str] | None = None) -> Generation:
    """Pack one drive's staged clips into the shards of a new generation, write its catalog files
    (clips, index, labels, clip_labels) and drive row, and return the Generation to commit.

    Every file is named by the generation (``<drive>.<gen>``), so this never touches the files of
    the drive's earlier generations, and packing the same clips again gives the same files."""
    from fleetcore.store.shards import pack_shards

    version = cfg.version()
    gen = generation_id(version)
    date, vehicle_id, drive_id = drive["date"], drive["vehicle_id"], drive["drive_id"]
    name = layout.drive_name(vehicle_id, drive_id)
    clips = sorted(clips, key=lambda c: c.clip_id)
    tables: dict[str, str] = {}

    def put(table: str, data: pa.Table) -> None:
        rel = layout.table_relpath(table, date, name, gen)
        write_parquet(data, layout.resolve(rel))
        tables[table] = rel

    shards = []
    if clips:
        shards = pack_shards([c.fragment for c in clips], layout.shard_dir(date), prefix=f"{name}-{gen}", max_bytes=cfg.shard_bytes)
        where = {}
        index_rows = []
        for s in shards:
            for r in s.index:
                index_rows.append({**r, "shard": f"date={date}/{r['shard']}"})
                where.setdefault(r["key"], s.name)
        put("clips", CLIPS.validate(CLIPS.from_pylist(catalog_rows(clips, where, date, privacy="privacy" in cfg.stages))))
        put("index", SHARD_INDEX.from_pylist(index_rows))
        labels = [lab for c in clips for lab in c.labels]
        if labels:
            from schemas import LABELS

            table = LABELS.validate(LABELS.from_pylist(labels))
            put("labels", table)
            put("clip_labels", clip_labels_table(table))
    put("drives", DRIVE_INDEX.from_pylist([drive]))
    triggers = layout.table_relpath("triggers", date, name, gen)
    for table, rel in (("triggers", triggers), ("telemetry", layout.table_relpath("telemetry", date, name)),
                       ("frames", layout.table_relpath("frames", date, name))):
        if file_size(layout.resolve(rel)) is not None:
            tables[table] = rel
    return Generation(
        vehicle_id=vehicle_id, drive_id=drive_id, date=date, config_version=version, clips=len(clips),
        shards=tuple({**s.manifest_entry(), "name": f"date={date}/{s.name}"} for s in shards),
        tables=tuple(sorted(tables.items())),
        fingerprints=tuple(sorted((fingerprints or {}).items())),
    )


def catalog_rows(clips: Sequence[ClipResult], shard_of: dict[str, str], date: str, *, privacy: bool) -> list[dict[str, Any]]:
    """CLIPS rows of packed clips: the staged row plus label columns, near-duplicate mark and shard."""
    from fleetcore.labels.dedup import mark_near_duplicates

    extra = {c.clip_id: label_columns(c.labels, privacy=privacy) for c in clips}
    dups = mark_near_duplicates(
        (c.clip_id, c.row["vehicle_id"], c.row["start_ns"], (extra[c.clip_id]["phash"] or "").split(",") if extra[c.clip_id]["phash"] else [])
        for c in clips
    )
    rows = []
    for c in clips:
        row = dict(c.row)
        row.update(extra[c.clip_id])
        row["near_duplicate_of"] = dups.get(c.clip_id)
        row["start_utc"] = row.pop("start_utc_ns")
        row["source_digests"] = [tuple(kv) for kv in row["source_digests"]]  # JSON-staged rows hold lists
        row["shard"] = f"date={date}/{shard_of[c.clip_id]}"
        row["member_key"] = c.clip_id
        rows.append(row)
    return rows


def remove_staged(layout: StoreLayout, clip_id: str, fragment: str) -> None:
    """Remove a staged clip (fragment and row) once its shard is committed."""
    for p in (fragment, layout.staged(clip_id, "json")):
        if file_size(p) is not None:
            remove(p)


def clip_labels_table(labels: pa.Table) -> pa.Table:
    """LABELS rows pivoted wide (one row per clip, one column per label), as ``fleet mine`` shows them:
    stored beside the long table so queries over ``clip_labels`` do not pivot every time."""
    import polars as pl

    from fleetcore.labels.pivot import clip_labels_frame

    wide = clip_labels_frame(pl.from_arrow(labels).lazy()).collect().sort("clip_id")  # type: ignore[union-attr]
    return wide.to_arrow()


def label_columns(labels: Sequence[dict[str, Any]], *, privacy: bool) -> dict[str, Any]:
    """The catalog's typed key-label columns of one clip, from its LABELS rows."""
    by = {(r["labeller"], r["label"]): r for r in labels}

    def val(labeller: str, label: str) -> Any:
        r = by.get((labeller, label))
        return None if r is None else r["value"]

    def score(labeller: str, label: str) -> float | None:
        r = by.get((labeller, label))
        return None if r is None else r["score"]

    def any_camera(label: str) -> bool | None:
        vals = [r["value"] for (lab, name), r in by.items() if lab == "vision" and name.endswith("." + label)]
        return None if not vals else any(v == "true" for v in vals)

    phash = val("phash", "phash")
    count = score("pedestrians", "pedestrian_count")
    ped = val("pedestrians", "pedestrians")
    tod = val("telemetry", "time_of_day")
    if tod in (None, "unknown"):
        # No GPS fix, so no solar elevation: the vision labeller's reading of the frames decides
        # (its time_of_day_source label says which source did).
        tod = val("vision", "time_of_day") or tod
    blurred = score("privacy", "regions_blurred")
    return {
        "time_of_day": tod,
        "manoeuvre": val("telemetry", "manoeuvre"),
        "speed_band": val("telemetry", "speed_band"),
        "road_type": val("telemetry", "road_type"),
        "scene_light": val("vision", "scene_light"),
        "light_conflict": val("vision", "light_conflict"),
        "pedestrians": None if ped is None else ped == "true",
        "pedestrian_count": None if count is None else int(count),
        "camera_blocked": any_camera("blocked"),
        "camera_blurry": any_camera("blurry"),
        "labellers": sorted({(r["labeller"], r["labeller_version"]) for r in labels}) or None,
        "privacy": privacy,
        "regions_blurred": None if blurred is None else int(blurred),
        "phash": ",".join(json.loads(phash)) if phash else None,
    }


def write_quarantine(layout: StoreLayout, record: dict[str, Any]) -> str:
    if record.get("clip_id"):
        p = layout.clip_quarantine_path(record["clip_id"])
    else:
        p = layout.quarantine_path(record.get("vehicle_id") or "unknown", record.get("drive_id") or Path(record["path"]).name)
    atomic_write_bytes(p, dumps_json(record))
    return p
