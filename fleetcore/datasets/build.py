"""Building a dataset version: the per-sample and per-shard work the Beam job
(``pipelines/build_dataset.py``) distributes, plus planning and the manifest.

Layout of a built version (immutable)::

    <datasets_root>/<name>/<version>/
        manifest.json          # DATASET_MANIFEST fields + extras; written last
        index.arrow            # one row per tar member (webdataset) or per sample (arrow), with sha256
        train-000000.tar ...   # or .arrow; one series of shards per split
        val-000000.tar ...

The version is ``v-<sha12>`` of the spec's identity, the catalog snapshot id, the dataset format
version and ``fleetcore.__version__``: the same spec over the same catalog names the same version
(re-building is a no-op), anything else names a new one. A build writes into
``<name>/.tmp-<version>-<random>/`` and renames it into place when complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

import fleetcore
from fleetcore.datasets.selection import Selection, labels_by_clip, select
from fleetcore.datasets.spec import DatasetSpec
from fleetcore.errors import FleetError
from fleetcore.store.catalog import Catalog
from fleetcore.store.fs import sha256_file
from fleetcore.store.sample import decode_sample, dumps_deterministic, encode_sample
from fleetcore.store.tario import (
    iter_members,
    read_member,
    scan_tar,
    tar_bytes,
    write_tar,
)
from schemas import DATASET_MANIFEST
from schemas.v1 import TELEMETRY_SIGNALS

log = logging.getLogger(__name__)

DATASET_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.arrow"
ARROW_ROWS_PER_BATCH = 16
TELEMETRY_COLUMNS: tuple[str, ...] = tuple(TELEMETRY_SIGNALS)
SPLITS = ("train", "val")
FRAME_DIMS = ("camera", "frame", "height", "width", "channel")


class DatasetError(FleetError):
    """A dataset (or its build) is unusable: names the path and the problem."""

    def __init__(self, path: str, problem: str, *, code: str = "dataset_invalid") -> None:
        self.path = str(path)
        super().__init__(self.path, problem, code=code)


@dataclass(frozen=True)
class SampleTask:
    """One output sample: where its source clip lies in the clip store and its lineage."""

    order: int  # position in the shuffled order of its split
    key: str
    clip_id: str
    copy: int
    vehicle_id: str
    drive_id: str
    trigger: str
    split: str
    shard_path: str
    members: tuple[tuple[str, int, int], ...]  # (member, data_offset, size) in the clip store shard
    source_digests: tuple[tuple[str, str], ...]
    labels: str  # JSON of {labeller: {"version", "values"}}

    def lineage(self, shard: str) -> dict[str, Any]:
        return {
            "key": self.key,
            "shard": shard,
            "split": self.split,
            "clip_id": self.clip_id,
            "drive_id": self.drive_id,
            "vehicle_id": self.vehicle_id,
            "trigger": self.trigger,
            "source_digests": dict(self.source_digests),
            "copy": self.copy,
        }


@dataclass(frozen=True)
class Staged:
    """A rendered sample written to the staging folder: its bytes in a shard are ``size``."""

    order: int
    key: str
    split: str
    path: str
    size: int
    task: SampleTask


@dataclass(frozen=True)
class Plan:
    spec: DatasetSpec
    store: str
    version: str
    snapshot: str
    code_version: str
    selection: Selection
    tasks: tuple[SampleTask, ...]
    privacy: bool
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------
# versions
# ----------------------------------------------------------------------------------------
def code_version() -> str:
    """``fleetcore.__version__`` plus ``git describe`` of the source tree when git is available."""
    base = fleetcore.__version__
    repo = Path(fleetcore.__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty", "--tags"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("git describe unavailable: %s", exc)
        return base
    desc = out.stdout.strip()
    return f"{base}+git.{desc}" if out.returncode == 0 and desc else base


def dataset_version(spec: DatasetSpec, snapshot: str) -> str:
    doc = {"spec": spec.identity(), "snapshot": snapshot, "format": DATASET_FORMAT_VERSION, "code": fleetcore.__version__}
    return "v-" + hashlib.sha256(dumps_deterministic(doc)).hexdigest()[:12]


# ----------------------------------------------------------------------------------------
# planning (launcher side)
# ----------------------------------------------------------------------------------------
def plan_build(spec: DatasetSpec, store: str) -> Plan:
    """Select the samples and look up where each one's members lie (catalog index; no shard scans)."""
    catalog = Catalog(str(store))
    snapshot = catalog.snapshot_id()
    sel = select(catalog, spec)
    samples = sel.samples
    member_keys = samples["member_key"].unique().to_list()
    index = (
        catalog.scan("index")
        .filter(pl.col("key").is_in(member_keys))
        .select("shard", "key", "member", "data_offset", "size")
        .collect()
        .sort(["key", "data_offset"])
    )
    by_key: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    for shard, key, member, off, size in index.iter_rows():
        by_key.setdefault((shard, key), []).append((member, int(off), int(size)))
    labels = None
    if catalog.exists("labels"):
        labels = catalog.read("labels")
    lab = labels_by_clip(labels, samples["clip_id"].unique().to_list())
    tasks: list[SampleTask] = []
    order = dict.fromkeys(SPLITS, 0)
    for r in samples.iter_rows(named=True):
        members = by_key.get((r["shard"], r["member_key"]))
        if not members:
            raise DatasetError(str(catalog.path("index")), f"clip {r['clip_id']!r}: no index rows for key {r['member_key']!r} in shard {r['shard']!r}", code="index_missing")
        tasks.append(
            SampleTask(
                order=order[r["split"]],
                key=r["key"],
                clip_id=r["clip_id"],
                copy=int(r["copy"]),
                vehicle_id=r["vehicle_id"],
                drive_id=r["drive_id"],
                trigger=r["trigger"],
                split=r["split"],
                shard_path=str(catalog.shard_path(r["shard"])),
                members=tuple(members),
                source_digests=tuple(sorted(json.loads(r["source_digests"]).items())),
                labels=json.dumps(lab.get(r["clip_id"], {}), sort_keys=True),
            )
        )
        order[r["split"]] += 1
    clip_ids = set(samples["clip_id"].to_list())
    privacy = bool(clip_ids) and clip_ids <= sel.privacy_on
    return Plan(
        spec=spec,
        store=str(store),
        version=dataset_version(spec, snapshot),
        snapshot=snapshot,
        code_version=code_version(),
        selection=sel,
        tasks=tuple(tasks),
        privacy=privacy,
    )


# ----------------------------------------------------------------------------------------
# rendering one sample (worker side)
# ----------------------------------------------------------------------------------------
@dataclass
class Rendered:
    frames: np.ndarray  # (cameras, frames, H, W, 3) uint8
    valid: np.ndarray  # (cameras, frames) bool: False where no source frame existed (zeros)
    telemetry: np.ndarray  # (frames, len(TELEMETRY_COLUMNS)) float32, NaN = unknown
    times_ns: np.ndarray  # (frames,) int64 target times on the vehicle clock
    pts_ns: np.ndarray  # (cameras, frames) int64 pts of the source frame used (-1 if none)
    record: dict[str, Any]


def target_times(times: np.ndarray, frames: int, rate_hz: float) -> np.ndarray:
    """``frames`` times ``1/rate_hz`` apart, centred on the clip (starting at its first sample
    when the clip is shorter than the window)."""
    step = 1e9 / rate_hz
    span = (frames - 1) * step
    t_first, t_last = int(times[0]), int(times[-1])
    mid = (t_first + t_last) / 2.0
    t0 = max(float(t_first), mid - span / 2.0)
    return (np.int64(round(t0)) + np.round(np.arange(frames) * step).astype(np.int64)).astype(np.int64)


def _nearest(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    j = np.clip(np.searchsorted(times, targets), 1, max(len(times) - 1, 1))
    if len(times) == 1:
        return np.zeros(len(targets), dtype=np.int64)
    left = times[j - 1]
    right = times[j]
    return np.where(np.abs(targets - left) <= np.abs(right - targets), j - 1, j).astype(np.int64)


def render_sample(task: SampleTask, spec: DatasetSpec) -> Rendered:
    """Read the clip's members by offset, resample to ``frames_per_clip`` at ``frame_rate_hz``
    (nearest source sample; a missing frame takes the nearest present frame of its camera) and
    resize to ``resolution`` with INTER_AREA."""
    import cv2

    members = {m: read_member(task.shard_path, off, size) for m, off, size in task.members}
    try:
        ds = decode_sample(members)
    except (KeyError, TypeError, ValueError) as exc:  # metadata JSON that parses but lacks what a sample holds
        raise DatasetError(task.shard_path, f"clip {task.clip_id!r}: sample metadata is incomplete ({exc!r})", code="clip_undecodable") from exc
    times = ds.sample_times_ns.astype(np.int64)
    if times.size == 0:
        raise DatasetError(task.shard_path, f"clip {task.clip_id!r} has no samples", code="empty_clip")
    tt = target_times(times, spec.frames_per_clip, spec.frame_rate_hz)
    src = _nearest(times, tt)
    W, H = spec.resolution
    C, F = len(spec.cameras), spec.frames_per_clip
    frames = np.zeros((C, F, H, W, 3), dtype=np.uint8)
    valid = np.zeros((C, F), dtype=bool)
    pts = np.full((C, F), -1, dtype=np.int64)
    for ci, cam in enumerate(spec.cameras):
        if cam not in ds.frames:
            raise DatasetError(task.shard_path, f"clip {task.clip_id!r} has no camera {cam!r}", code="camera_missing")
        cam_frames = ds.frames[cam]
        present = np.array([i for i, f in enumerate(cam_frames) if f is not None], dtype=np.int64)
        if present.size == 0:
            continue
        cache: dict[int, np.ndarray] = {}
        for fi, j in enumerate(src):
            k = int(present[np.argmin(np.abs(times[present] - times[j]))]) if cam_frames[j] is None else int(j)
            if k not in cache:
                img = cam_frames[k]
                assert img is not None
                cache[k] = img if img.shape[:2] == (H, W) else cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
            frames[ci, fi] = cache[k]
            valid[ci, fi] = True
            p = ds.pts_ns[cam][k]
            pts[ci, fi] = -1 if p is None else int(p)
    tel = np.full((F, len(TELEMETRY_COLUMNS)), np.nan, dtype=np.float32)
    for ti, col in enumerate(TELEMETRY_COLUMNS):
        if col in ds.telemetry:
            tel[:, ti] = ds.telemetry[col][src]
    rec = ds.record
    record = {
        "clip_id": task.clip_id,
        "vehicle_id": task.vehicle_id,
        "drive_id": task.drive_id,
        "trigger": task.trigger,
        "triggers": rec.get("triggers", [task.trigger]),
        "split": task.split,
        "copy": task.copy,
        "source_digests": dict(task.source_digests),
        "labels": json.loads(task.labels),
        "privacy": rec.get("privacy"),
        "clip_window_ns": rec.get("window_ns"),
        "start_utc_ns": rec.get("start_utc_ns"),
    }
    return Rendered(frames=frames, valid=valid, telemetry=tel, times_ns=tt, pts_ns=pts, record=record)


def wds_members(task: SampleTask, r: Rendered, spec: DatasetSpec) -> list[tuple[str, bytes]]:
    """The sample as WebDataset members (``fleetcore.store.sample`` layout: json, jpg frames, telemetry.npy)."""
    frames = {cam: [r.frames[ci, fi] if r.valid[ci, fi] else None for fi in range(spec.frames_per_clip)] for ci, cam in enumerate(spec.cameras)}
    pts = {cam: np.where(r.pts_ns[ci] >= 0, r.pts_ns[ci], 0) for ci, cam in enumerate(spec.cameras)}
    off = {cam: pts[cam] - r.times_ns for cam in spec.cameras}
    return encode_sample(
        task.key,
        frames=frames,
        sample_times_ns=r.times_ns,
        pts_ns=pts,
        offset_ns=off,
        telemetry={c: r.telemetry[:, i] for i, c in enumerate(TELEMETRY_COLUMNS)},
        record=r.record,
        jpeg_quality=spec.jpeg_quality,
    )


def arrow_schema(spec: DatasetSpec) -> pa.Schema:
    W, H = spec.resolution
    C, F = len(spec.cameras), spec.frames_per_clip
    meta = {
        b"fleet.dataset": spec.name.encode(),
        b"fleet.cameras": json.dumps(list(spec.cameras)).encode(),
        b"fleet.telemetry_columns": json.dumps(list(TELEMETRY_COLUMNS)).encode(),
        b"fleet.frame_rate_hz": repr(spec.frame_rate_hz).encode(),
    }
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("vehicle_id", pa.string(), nullable=False),
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("trigger", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("frames", pa.fixed_shape_tensor(pa.uint8(), [C, F, H, W, 3], dim_names=list(FRAME_DIMS)), nullable=False),
            pa.field("valid", pa.fixed_shape_tensor(pa.uint8(), [C, F]), nullable=False),
            pa.field("telemetry", pa.fixed_shape_tensor(pa.float32(), [F, len(TELEMETRY_COLUMNS)]), nullable=False),
            pa.field("times_ns", pa.fixed_shape_tensor(pa.int64(), [F]), nullable=False),
            pa.field("record", pa.string(), nullable=False),  # the sample JSON (labels, lineage, privacy)
        ],
        metadata=meta,
    )


def _tensor(typ: pa.DataType, arr: np.ndarray) -> pa.ExtensionArray:
    flat = pa.array(np.ascontiguousarray(arr).reshape(arr.shape[0], -1).ravel())
    storage = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(arr.shape[1:])))
    return pa.ExtensionArray.from_storage(typ, storage)


def arrow_table(items: Sequence[tuple[SampleTask, Rendered]], spec: DatasetSpec) -> pa.Table:
    schema = arrow_schema(spec)
    cols: dict[str, Any] = {
        "key": pa.array([t.key for t, _ in items], pa.string()),
        "clip_id": pa.array([t.clip_id for t, _ in items], pa.string()),
        "vehicle_id": pa.array([t.vehicle_id for t, _ in items], pa.string()),
        "drive_id": pa.array([t.drive_id for t, _ in items], pa.string()),
        "trigger": pa.array([t.trigger for t, _ in items], pa.string()),
        "split": pa.array([t.split for t, _ in items], pa.string()),
        "frames": _tensor(schema.field("frames").type, np.stack([r.frames for _, r in items])),
        "valid": _tensor(schema.field("valid").type, np.stack([r.valid.astype(np.uint8) for _, r in items])),
        "telemetry": _tensor(schema.field("telemetry").type, np.stack([r.telemetry for _, r in items])),
        "times_ns": _tensor(schema.field("times_ns").type, np.stack([r.times_ns for _, r in items])),
        "record": pa.array([dumps_deterministic(r.record).decode() for _, r in items], pa.string()),
    }
    return pa.Table.from_arrays(list(cols.values()), schema=schema)


def _write_ipc(path: str, table: pa.Table, rows_per_batch: int) -> None:
    with pa.OSFile(path, "wb") as f:
        with pa.ipc.new_file(f, table.schema, options=pa.ipc.IpcWriteOptions(compression=None)) as w:
            w.write_table(table, max_chunksize=rows_per_batch)


def stage_sample(task: SampleTask, spec: DatasetSpec, staging: str) -> Staged:
    """Render one sample and write it to the staging folder (a one-sample tar or one-row Arrow file)."""
    r = render_sample(task, spec)
    os.makedirs(staging, exist_ok=True)
    if spec.format == "webdataset":
        data = tar_bytes(wds_members(task, r, spec))
        path = os.path.join(staging, f"{task.split}-{task.order:09d}.tar")
        size = scan_tar(io.BytesIO(data)).records_end
        with open(path, "wb") as f:
            f.write(data)
    else:
        table = arrow_table([(task, r)], spec)
        path = os.path.join(staging, f"{task.split}-{task.order:09d}.arrow")
        _write_ipc(path, table, 1)
        size = int(r.frames.nbytes + r.telemetry.nbytes + r.times_ns.nbytes + r.valid.size + 1024)
    return Staged(order=task.order, key=task.key, split=task.split, path=path, size=size, task=task)


# ----------------------------------------------------------------------------------------
# shards
# ----------------------------------------------------------------------------------------
def assign_shards(staged: Iterable[Staged], shard_bytes: int, *, ext: str) -> list[tuple[str, list[Staged]]]:
    """Consecutive samples (per split, in shuffled order) into shards of at most ``shard_bytes``
    (a sample is never split; one larger than the limit gets a shard of its own)."""
    out: list[tuple[str, list[Staged]]] = []
    for split in SPLITS:
        items = sorted((s for s in staged if s.split == split), key=lambda s: s.order)
        cur: list[Staged] = []
        size = 0
        for s in items:
            if cur and size + s.size > shard_bytes:
                out.append((f"{split}-{len([o for o in out if o[0].startswith(split)]):06d}.{ext}", cur))
                cur, size = [], 0
            cur.append(s)
            size += s.size
        if cur:
            out.append((f"{split}-{len([o for o in out if o[0].startswith(split)]):06d}.{ext}", cur))
    return out


def write_shard(out_dir: str, name: str, items: Sequence[Staged], spec: DatasetSpec) -> dict[str, Any]:
    """Write one shard from staged samples; returns its manifest entry plus index rows and lineage."""
    path = os.path.join(out_dir, name)
    index: list[dict[str, Any]] = []
    if spec.format == "webdataset":
        members = [(m.name, m.data) for s in items for m in iter_members(s.path)]
        write_tar(path, members)
        digests = {n: hashlib.sha256(d).hexdigest() for n, d in members}
        with open(path, "rb") as f:
            for e in scan_tar(path).members:
                key = e.name.split(".", 1)[0]
                f.seek(e.header_offset)
                record = hashlib.sha256(f.read(e.end_offset - e.header_offset)).hexdigest()  # header(s) + data + padding
                index.append({"shard": name, "key": key, "member": e.name, "header_offset": e.header_offset, "data_offset": e.data_offset,
                              "size": e.size, "sha256": digests[e.name], "record_sha256": record, "batch": -1, "row": -1})
    else:
        tables = [pa.ipc.open_file(pa.memory_map(s.path, "r")).read_all() for s in items]
        table = pa.concat_tables(tables).combine_chunks()
        _write_ipc(path, table, ARROW_ROWS_PER_BATCH)
        index = arrow_row_index(path, name)
    return {
        "name": name,
        "split": items[0].split,
        "samples": len(items),
        "bytes": os.path.getsize(path),
        "sha256": sha256_file(path),
        "keys": [s.key for s in items],
        "lineage": [s.task.lineage(name) for s in items],
        "index": index,
    }


def arrow_row_index(path: str, name: str) -> list[dict[str, Any]]:
    """One index row per sample of an Arrow shard: the byte range of its frames tensor in the file,
    the sha256 of its frames + telemetry values, its record batch and row."""
    size = os.path.getsize(path)
    mm = pa.memory_map(path, "r")
    whole = mm.read_buffer(size)
    reader = pa.ipc.open_file(pa.BufferReader(whole))
    rows: list[dict[str, Any]] = []
    for b in range(reader.num_record_batches):
        batch = reader.get_batch(b)
        frames = batch.column("frames").to_numpy_ndarray()
        tel = batch.column("telemetry").to_numpy_ndarray()
        keys = batch.column("key").to_pylist()
        base = frames.ctypes.data - whole.address
        per = int(np.prod(frames.shape[1:]))
        for i, key in enumerate(keys):
            h = hashlib.sha256(frames[i].tobytes())
            h.update(np.ascontiguousarray(tel[i]).tobytes())
            rows.append({"shard": name, "key": key, "member": "frames", "header_offset": b, "data_offset": base + i * per,
                         "size": per, "sha256": h.hexdigest(), "record_sha256": h.hexdigest(), "batch": b, "row": i})
    return rows


INDEX_SCHEMA = pa.schema(
    [
        pa.field("shard", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("member", pa.string(), nullable=False),
        pa.field("header_offset", pa.int64(), nullable=False),
        pa.field("data_offset", pa.int64(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),  # of the member's data (arrow: of the sample's tensors)
        pa.field("record_sha256", pa.string(), nullable=False),  # tar: header(s) + data + padding of the member
        pa.field("batch", pa.int32(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
    ]
)


# ----------------------------------------------------------------------------------------
# manifest
# ----------------------------------------------------------------------------------------
def skipped_entries(skipped: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The manifest's ``skipped`` list: one ``{clip_id, reason}`` per clip left out (a clip selected
    several times is listed once), sorted by clip id."""
    by: dict[str, str] = {}
    for s in skipped:
        by.setdefault(s["clip_id"], s["reason"])
        by[s["clip_id"]] = min(by[s["clip_id"]], s["reason"])  # the same reason whatever order the workers finish in
    return [{"clip_id": c, "reason": by[c]} for c in sorted(by)]


def manifest_doc(plan: Plan, shards: Sequence[dict[str, Any]], index_sha256: str,
                 skipped: Iterable[dict[str, str]] = ()) -> dict[str, Any]:
    spec = plan.spec
    entries = sorted(shards, key=lambda s: (SPLITS.index(s["split"]), s["name"]))
    samples = [lin for s in entries for lin in s["lineage"]]
    doc: dict[str, Any] = {
        "name": spec.name,
        "version": plan.version,
        "format": spec.format,
        "spec": spec.to_json(),
        "catalog_snapshot": plan.snapshot,
        "code_version": plan.code_version,
        "labellers": plan.selection.labellers,
        "privacy": plan.privacy,
        "shards": [{k: s[k] for k in ("name", "split", "samples", "bytes", "sha256", "keys")} for s in entries],
        "samples": samples,
        "dataset_format_version": DATASET_FORMAT_VERSION,
        "description": spec.description,
        "privacy_required": spec.privacy_required,
        "selection_counts": plan.selection.counts,
        "splits": {sp: sum(s["samples"] for s in entries if s["split"] == sp) for sp in SPLITS},
        "geometry": {
            "cameras": list(spec.cameras),
            "frames_per_clip": spec.frames_per_clip,
            "frame_rate_hz": spec.frame_rate_hz,
            "resolution": list(spec.resolution),
            "channels": 3,
            "frames_shape": [len(spec.cameras), spec.frames_per_clip, spec.resolution[1], spec.resolution[0], 3],
        },
        "telemetry_columns": list(TELEMETRY_COLUMNS),
        "index": {"name": INDEX_NAME, "sha256": index_sha256},
        "n_samples": len(samples),
        "total_bytes": sum(s["bytes"] for s in entries),
        "skipped": skipped_entries(skipped),
    }
    validate_manifest(doc, path="<manifest>")
    return doc


def validate_manifest(doc: dict[str, Any], *, path: str) -> None:
    """Check ``doc`` against the DATASET_MANIFEST contract (raises SchemaValidationError)."""
    if not isinstance(doc, dict):
        raise DatasetError(path, "expected a JSON object", code="manifest_invalid")
    DATASET_MANIFEST.validate(DATASET_MANIFEST.from_pylist([doc]))


def manifest_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def write_index(out_dir: str, shards: Sequence[dict[str, Any]]) -> str:
    rows = [r for s in sorted(shards, key=lambda s: (SPLITS.index(s["split"]), s["name"])) for r in s["index"]]
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    path = os.path.join(out_dir, INDEX_NAME)
    _write_ipc(path, table, 1 << 20)
    return sha256_file(path)


def finish_build(plan: Plan, tmp_dir: str, shards: Sequence[dict[str, Any]], skipped: Iterable[dict[str, str]] = ()) -> dict[str, Any]:
    """Write index and manifest (last) into the temp folder; remove staging. ``skipped``: the clips
    left out because they did not render (``{clip_id, reason}``), listed in the manifest."""
    import shutil

    idx_sha = write_index(tmp_dir, shards)
    doc = manifest_doc(plan, shards, idx_sha, skipped)
    staging = os.path.join(tmp_dir, "_staging")
    if os.path.isdir(staging):
        shutil.rmtree(staging)
    tmp = os.path.join(tmp_dir, f".{MANIFEST_NAME}.tmp")
    with open(tmp, "wb") as f:
        f.write(manifest_bytes(doc))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(tmp_dir, MANIFEST_NAME))
    return {"samples": doc["n_samples"], "shards": len(doc["shards"])}
