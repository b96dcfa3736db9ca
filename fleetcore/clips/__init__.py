"""The curate job's domain logic (the Beam job in ``pipelines.curate`` is a thin layer over it):
the run config (``config``), clip extraction (``extract``) and packing a drive's generation (``pack``).
The store's layout, manifest and generations are owned by :mod:`fleetcore.store`."""

from fleetcore.clips.config import (
    CONFIG_WHERE,
    CurateConfig,
    curate_fingerprints,
    curate_stages,
    load_trigger_library,
)
from fleetcore.clips.extract import (
    SAMPLE_TELEMETRY,
    ClipFailure,
    ClipResult,
    ClipTask,
    StoredClip,
    clip_id_for,
    clip_row,
    clip_tasks,
    extract_clips,
    find_drive_events,
    finish_clip,
    log,
    no_clips_reason,
    relabel_clip,
    reuse_clip,
    sample_telemetry,
    staged_result,
    stored_clips,
    telemetry_only_clip,
    telemetry_summary,
)
from fleetcore.clips.pack import (
    already_curated,
    catalog_rows,
    clip_labels_table,
    curated_telemetry,
    label_columns,
    pack_drive,
    remove_staged,
    write_drive_tables,
    write_quarantine,
)

__all__ = ["CONFIG_WHERE", "CurateConfig", "curate_stages", "load_trigger_library", "curate_fingerprints", "log", "SAMPLE_TELEMETRY", "clip_id_for", "find_drive_events", "ClipTask", "clip_tasks", "no_clips_reason", "telemetry_only_clip", "sample_telemetry", "telemetry_summary", "ClipResult", "ClipFailure", "staged_result", "extract_clips", "finish_clip", "clip_row", "StoredClip", "stored_clips", "reuse_clip", "relabel_clip", "already_curated", "curated_telemetry", "write_drive_tables", "pack_drive", "catalog_rows", "remove_staged", "clip_labels_table", "label_columns", "write_quarantine"]
