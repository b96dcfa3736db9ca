"""The curate job's domain logic, one function per stage; the Beam job in ``pipelines.curate``
is a thin layer over these.

Store layout under the output root (``StoreLayout``)::

    drives/date=D/<vehicle>__<drive>.parquet      drive index row (DRIVE_INDEX), written when packed
    telemetry/date=D/<vehicle>__<drive>.parquet   canonical telemetry (CURATED_TELEMETRY)
    frames/date=D/<vehicle>__<drive>.parquet      per-camera frame index (FRAME_INDEX)
    triggers/date=D/<vehicle>__<drive>.parquet    trigger events (TRIGGER_EVENTS)
    quarantine/<vehicle>__<drive>.json            one QUARANTINE record per bad drive
    quarantine/clips/<clip_id>.json               one QUARANTINE record per bad clip
    staging/<clip_id>.tar + .json                 encoded clip sample + its catalog row (resumable)
    clips/date=D/clips-D-<hash>-NNNNNN.tar        WebDataset shards (immutable once written)
    catalog/clips/date=D/<hash>.parquet           catalog rows of those shards (CLIPS)
    catalog/index/date=D/<hash>.parquet           tar member offsets (SHARD_INDEX)
    catalog/labels/date=D/<hash>.parquet          label values (LABELS, long: clip x labeller x label)
    catalog/clip_labels/date=D/<hash>.parquet     the same labels pivoted wide, one row per clip
    state/<vehicle>__<drive>.json                 "curated with config X" marker, written last per drive
    clips/manifest.json                           every shard: samples, bytes, sha256 (written last)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import fleetcore
from fleetcore.configfile import check_int, check_names, check_number
from fleetcore.errors import ConfigError, DriveError, FleetError
from fleetcore.fsio import atomic_write_bytes, file_size, join, read_bytes, remove
from fleetcore.landing import dumps_json
from fleetcore.stage_options import NOT_IN_VERSION, LabelsOptions, PrivacyOptions, version_payload
from fleetcore.stages import run_stages_then
from fleetcore.validate import ValidatedDrive
from schemas import CLIPS, CURATED_TELEMETRY, DRIVE_INDEX, FRAME_INDEX, SHARD_INDEX, TRIGGER_EVENTS

if TYPE_CHECKING:  # the video stack (PyAV) is imported where clips are extracted
    from fleetcore.video.extract import ArenaPool

log = logging.getLogger(__name__)

#: Per-frame telemetry columns written beside each clip (float32, aligned to the sample times).
SAMPLE_TELEMETRY = (
    "speed_mps",
    "accel_lon_mps2",
    "accel_lat_mps2",
    "yaw_rate_radps",
    "steering_angle_rad",
    "brake",
    "throttle",
    "lat_deg",
    "lon_deg",
    "heading_rad",
    "shadow_steering_angle_rad",
)


CONFIG_WHERE = "<curate config>"


@dataclass(frozen=True, kw_only=True)
class CurateConfig:
    """The curate job's one run config: everything that changes the bytes of the clip store, and
    the worker knobs that do not (marked ``NOT_IN_VERSION``). Its hash is the config version.

    The CLI, Dagster, ``python -m pipelines.curate`` and the tests build it with this constructor,
    which checks every field (a bad value raises a one-line ConfigError; lists are stored as tuples)
    and computes what else the version covers: ``trigger_hash``, the content of the shipped trigger
    library and ``trigger_paths``, and ``stages_hash``, each stage's ``describe()`` with the stages
    built from ``privacy`` / ``labels``. Beam pickles the config to the workers (unpickling does not
    run the constructor), which build their stages from it (``build_stages``): neither a worker's
    environment nor a file read there decides the bytes.
    """

    rate_hz: float = 10.0
    max_side: int = 640
    jpeg_quality: int = 90
    shard_bytes: int = 256 * 2**20
    telemetry_rate_hz: float = 20.0
    max_clip_s: float = 30.0
    cameras: tuple[str, ...] | None = None  # None = every camera of the drive
    #: extra trigger files/folders beside the shipped library; where they lie is not in the
    #: version, their content is (trigger_hash)
    trigger_paths: tuple[str, ...] = field(default=(), metadata=NOT_IN_VERSION)
    stages: tuple[str, ...] = ("labels", "privacy")  # post-extraction stages, in order (labels see unblurred frames)
    #: options of the privacy and labels stages (in the version when the stage is in ``stages``)
    privacy: PrivacyOptions = field(default_factory=PrivacyOptions)
    labels: LabelsOptions = field(default_factory=LabelsOptions)
    #: clips post-processed (stages, JPEG encoding, staging) at once by worker threads while the
    #: calling thread decodes the next clip; 0 = all in the calling thread. Not in the version: the
    #: bytes written do not depend on it.
    post_workers: int = field(default=2, metadata=NOT_IN_VERSION)
    #: OpenCV's own worker threads in a curate worker process (see
    #: fleetcore.video.convert.set_opencv_threads); not in the version either
    opencv_threads: int = field(default=1, metadata=NOT_IN_VERSION)
    #: threads that JPEG-encode one clip's frames (fleetcore.sample.encode_sample); not in the version
    encode_threads: int = field(default=2, metadata=NOT_IN_VERSION)
    #: computed by the constructor (see above)
    trigger_hash: str = field(init=False)
    stages_hash: str = field(init=False)

    def __post_init__(self) -> None:
        from fleetcore.stages import stages_fingerprint
        from fleetcore.triggers import library_hash

        w = CONFIG_WHERE
        for name in ("rate_hz", "telemetry_rate_hz", "max_clip_s"):
            check_number(self, name, w, minimum=0.0, strict=True)
        check_int(self, "max_side", w, minimum=16)
        check_int(self, "jpeg_quality", w, minimum=1, maximum=100)
        check_int(self, "shard_bytes", w, minimum=1)
        check_int(self, "post_workers", w, minimum=0)
        check_int(self, "opencv_threads", w, minimum=1)
        check_int(self, "encode_threads", w, minimum=1)
        check_names(self, "cameras", w, allow_none=True)
        if self.cameras == ():
            raise ConfigError(w, "cameras", "expected None (every camera) or at least one camera name")
        check_names(self, "trigger_paths", w)
        check_names(self, "stages", w)
        twice = sorted({s for s in self.stages if self.stages.count(s) > 1})
        if twice:
            raise ConfigError(w, "stages", f"stage {twice[0]!r} listed twice")
        for name, cls in (("privacy", PrivacyOptions), ("labels", LabelsOptions)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(w, name, f"expected {cls.__name__}, got {type(getattr(self, name)).__name__}")
        object.__setattr__(self, "trigger_hash", library_hash(load_trigger_library(self)))
        object.__setattr__(self, "stages_hash", stages_fingerprint(self.stages, options=self.stage_options()))

    def stage_options(self) -> dict[str, Any]:
        """What ``fleetcore.stages.build_stages`` hands each stage's factory, by stage name."""
        return {"privacy": self.privacy, "labels": self.labels}

    def build_stages(self) -> list[Any]:
        """This run's stages, built from its options (once per worker: detectors, models)."""
        from fleetcore.stages import build_stages

        return build_stages(self.stages, options=self.stage_options())

    def version(self) -> str:
        from fleetcore.video.convert import CONVERT_VERSION  # lazy: imports OpenCV

        payload = version_payload(self)
        for stage in self.stage_options():
            if stage not in self.stages:
                payload.pop(stage)  # the options of a stage this run does not run
        payload["code"] = fleetcore.__version__
        payload["frame_conversion"] = CONVERT_VERSION  # the stored pixels of a source
        blob = json.dumps(payload, sort_keys=True).encode()
        return "cfg-" + hashlib.sha256(blob).hexdigest()[:12]


def curate_stages(*, labels: bool = True, privacy: bool = True, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """``CurateConfig.stages`` from the launchers' switches (``--labels/--no-labels``,
    ``--privacy/--no-privacy``, ``--stage``): labels, then privacy, then the further stages."""
    return (*(("labels",) if labels else ()), *(("privacy",) if privacy else ()), *extra)


@dataclass(frozen=True)
class StoreLayout:
    """Paths of a clip store. ``root`` is a local path or an fsspec URI (``s3://bucket/store``)."""

    root: str

    def _p(self, *parts: str) -> str:
        out = os.fspath(self.root)
        for part in parts:
            out = join(out, part)
        return out

    @staticmethod
    def drive_name(vehicle_id: str, drive_id: str) -> str:
        return f"{vehicle_id}__{drive_id}"

    def table_path(self, kind: str, date: str, name: str) -> str:
        return self._p(kind, f"date={date}", f"{name}.parquet")

    def quarantine_path(self, vehicle_id: str, drive_id: str) -> str:
        return self._p("quarantine", f"{self.drive_name(vehicle_id, drive_id)}.json")

    def clip_quarantine_path(self, clip_id: str) -> str:
        return self._p("quarantine", "clips", f"{clip_id}.json")

    def state_path(self, vehicle_id: str, drive_id: str) -> str:
        return self._p("state", f"{self.drive_name(vehicle_id, drive_id)}.json")

    @property
    def staging(self) -> str:
        return self._p("staging")

    def staged(self, clip_id: str, ext: str) -> str:
        return self._p("staging", f"{clip_id}.{ext}")

    def shard_dir(self, date: str) -> str:
        return self._p("clips", f"date={date}")

    @property
    def clips_dir(self) -> str:
        return self._p("clips")

    def catalog_path(self, table: str, date: str, group: str) -> str:
        return self._p("catalog", table, f"date={date}", f"{group}.parquet")


# --------------------------------------------------------------------------------------
# Idempotence
# --------------------------------------------------------------------------------------
def already_curated(layout: StoreLayout, vehicle_id: str, drive_id: str, config_version: str) -> bool:
    p = layout.state_path(vehicle_id, drive_id)
    if file_size(p) is None:
        return False
    try:
        return json.loads(read_bytes(p))["config_version"] == config_version
    except (json.JSONDecodeError, KeyError, OSError) as exc:
        log.warning("%s: unreadable state marker (%s); curating again", p, exc)
        return False


def clip_id_for(drive_id: str, start_ns: int, end_ns: int, config_version: str) -> str:
    """Deterministic clip id: drive, window and config version. No dots (WebDataset keys)."""
    h = hashlib.sha256(f"{drive_id}|{start_ns}|{end_ns}|{config_version}".encode()).hexdigest()[:10]
    safe = drive_id.replace(".", "-")
    return f"{safe}_{start_ns // 1_000_000:d}_{h}"


# --------------------------------------------------------------------------------------
# Per-drive tables
# --------------------------------------------------------------------------------------
def write_parquet_atomic(table: pa.Table, path: str) -> int:
    """Write a Parquet file atomically (temp name, then rename) to a local path or URI; returns its size."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue().to_pybytes()
    atomic_write_bytes(path, data)
    return len(data)


def curated_telemetry(vd: ValidatedDrive) -> pa.Table | None:
    if vd.telemetry is None:
        return None
    n = vd.telemetry.num_rows
    t = vd.telemetry
    t = t.add_column(0, "drive_id", pa.array([vd.drive_id] * n, pa.string()))
    t = t.add_column(0, "vehicle_id", pa.array([vd.vehicle_id] * n, pa.string()))
    t = t.append_column("date", pa.array([vd.date] * n, pa.string()))
    return CURATED_TELEMETRY.validate(CURATED_TELEMETRY.conform(t))


def write_drive_tables(vd: ValidatedDrive, events: pa.Table, layout: StoreLayout) -> int:
    """Write the drive's telemetry, frame index and trigger events. Returns bytes written."""
    name = layout.drive_name(vd.vehicle_id, vd.drive_id)
    n = 0
    tel = curated_telemetry(vd)
    if tel is not None:
        n += write_parquet_atomic(tel, layout.table_path("telemetry", vd.date, name))
    n += write_parquet_atomic(FRAME_INDEX.validate(vd.frame_index), layout.table_path("frames", vd.date, name))
    n += write_parquet_atomic(TRIGGER_EVENTS.validate(events), layout.table_path("triggers", vd.date, name))
    return n


def load_trigger_library(cfg: CurateConfig) -> list[Any]:
    """The shipped trigger library plus the config's extra trigger files / folders."""
    from fleetcore.triggers import TRIGGERS_DIR, load_triggers

    return load_triggers([TRIGGERS_DIR, *cfg.trigger_paths])


def find_drive_events(vd: ValidatedDrive, specs: Sequence[Any], cfg: CurateConfig) -> pa.Table:
    from fleetcore.triggers import find_events

    return find_events(
        vd.telemetry,
        specs,
        vehicle_id=vd.vehicle_id,
        drive_id=vd.drive_id,
        rate_hz=cfg.telemetry_rate_hz,
        drive_span_ns=(vd.start_ns, vd.end_ns),
    )


@dataclass(frozen=True)
class ClipTask:
    clip_id: str
    start_ns: int
    end_ns: int
    triggers: tuple[str, ...]
    primary_trigger: str
    priority: int


def clip_tasks(vd: ValidatedDrive, events: pa.Table, cfg: CurateConfig) -> list[ClipTask]:
    """Merge trigger windows into clip windows; clamp to the span the cameras cover."""
    from fleetcore.triggers import merge_windows

    if not vd.cameras:
        return []
    cam_start = min(c.start_ns for c in vd.cameras)
    cam_end = max(c.end_ns for c in vd.cameras)
    version = cfg.version()
    out = []
    for w in merge_windows(events, max_clip_s=cfg.max_clip_s):
        s, e = max(w.start_ns, cam_start), min(w.end_ns, cam_end)
        if e - s < int(1e9 / cfg.rate_hz):
            continue
        out.append(ClipTask(clip_id_for(vd.drive_id, s, e, version), s, e, tuple(w.triggers), w.primary_trigger, int(w.priority)))
    return out


# --------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------
def sample_telemetry(vd: ValidatedDrive, times_ns: np.ndarray) -> dict[str, np.ndarray]:
    """Canonical signals interpolated at the sample times (float32; NaN where unknown)."""
    out: dict[str, np.ndarray] = {}
    if vd.telemetry is None:
        return {k: np.full(len(times_ns), np.nan, np.float32) for k in SAMPLE_TELEMETRY}
    t = vd.telemetry.column("t_ns").to_numpy().astype(np.float64)
    for k in SAMPLE_TELEMETRY:
        col = vd.telemetry.column(k)
        v = col.to_numpy(zero_copy_only=False).astype(np.float64) if col.null_count < len(col) else None
        if v is None:
            out[k] = np.full(len(times_ns), np.nan, np.float32)
            continue
        ok = ~np.isnan(v)
        if ok.sum() < 2:
            out[k] = np.full(len(times_ns), np.nan, np.float32)
            continue
        vals = np.interp(times_ns.astype(np.float64), t[ok], v[ok], left=np.nan, right=np.nan)
        out[k] = vals.astype(np.float32)
    return out


def telemetry_summary(vd: ValidatedDrive, start_ns: int, end_ns: int) -> dict[str, float | None]:
    keys = ("speed_min_mps", "speed_mean_mps", "speed_max_mps", "peak_decel_mps2", "peak_lat_accel_mps2",
            "lat_min", "lat_max", "lon_min", "lon_max")
    res: dict[str, float | None] = dict.fromkeys(keys)
    if vd.telemetry is None:
        return res
    t = vd.telemetry.column("t_ns")
    mask = pc.and_(pc.greater_equal(t, start_ns), pc.less_equal(t, end_ns))
    w = vd.telemetry.filter(mask)
    if w.num_rows == 0:
        return res

    def agg(fn: str, col: str) -> float | None:
        v = getattr(pc, fn)(w.column(col)).as_py()
        return None if v is None else float(v)

    res["speed_min_mps"] = agg("min", "speed_mps")
    res["speed_mean_mps"] = agg("mean", "speed_mps")
    res["speed_max_mps"] = agg("max", "speed_mps")
    lo = agg("min", "accel_lon_mps2")
    res["peak_decel_mps2"] = None if lo is None else max(0.0, -lo)
    lat = w.column("accel_lat_mps2")
    res["peak_lat_accel_mps2"] = None if lat.null_count == len(lat) else float(pc.max(pc.abs(lat)).as_py())
    for c, a, b in (("lat_deg", "lat_min", "lat_max"), ("lon_deg", "lon_min", "lon_max")):
        res[a], res[b] = agg("min", c), agg("max", c)
    return res


@dataclass
class ClipResult:
    """What the extraction of one clip leaves: a staged fragment and its catalog row."""

    clip_id: str
    date: str
    drive_key: str
    fragment: str
    fragment_bytes: int
    row: dict[str, Any]
    frames_decoded: int = 0
    labels: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ClipFailure:
    """A clip that could not be extracted or processed: quarantined, its drive goes on."""

    clip_id: str
    error: DriveError


def staged_result(layout: StoreLayout, clip_id: str) -> ClipResult | None:
    """A clip staged by an earlier (possibly killed) run, if complete."""
    frag = layout.staged(clip_id, "tar")
    meta = layout.staged(clip_id, "json")
    size = file_size(frag)
    if size is None or file_size(meta) is None:
        return None
    try:
        d = json.loads(read_bytes(meta))
    except (json.JSONDecodeError, OSError):
        return None
    if d.get("fragment_bytes") != size:
        return None
    return ClipResult(**d)


def extract_clips(
    vd: ValidatedDrive,
    tasks: Sequence[ClipTask],
    cfg: CurateConfig,
    layout: StoreLayout,
    *,
    stages: Sequence[Any] = (),
    arena_pool: ArenaPool | None = None,
) -> Iterator[ClipResult | ClipFailure]:
    """Extract, process (label / anonymise stages), encode and stage every clip of one drive.

    ``arena_pool``: a :class:`fleetcore.video.ArenaPool` kept by the caller across drives (the
    frame memory of one drive's clips is then reused for the next drive's); None: one per drive.

    Yields a ClipResult per clip, or a ClipFailure for a clip that failed (the caller quarantines it;
    the other clips go on): first the clips already staged by an earlier run (reused), then the
    others in task order.

    While ``cfg.post_workers`` worker threads run the stages, JPEG encoding and staging of the
    clips already decoded, this thread decodes the next one (OpenCV, libjpeg and the decoder release
    the GIL), so at most ``post_workers + 1`` clips are in memory. The output does not depend on
    this overlap: each clip is processed by one thread.
    """
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    from fleetcore.video.extract import ClipExtractor

    todo = []
    for task in tasks:
        prev = staged_result(layout, task.clip_id)
        if prev is not None:
            yield prev
        else:
            todo.append(task)
    if not todo:
        return
    cams = [c.name for c in vd.cameras if cfg.cameras is None or c.name in cfg.cameras]
    workers = max(0, int(cfg.post_workers))
    pending: deque[Future[ClipResult | ClipFailure]] = deque()
    with ClipExtractor(vd.path, vd.manifest, vd.frame_index, cameras=cams, max_side=cfg.max_side, arena_pool=arena_pool) as ex, \
            ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="clip-post") as post:
        for task in todo:
            try:
                clip = ex.extract(task.start_ns, task.end_ns, rate_hz=cfg.rate_hz)
            except FleetError as exc:
                failed: Future[ClipResult | ClipFailure] = Future()
                failed.set_result(ClipFailure(task.clip_id, DriveError("clip_extract_failed", f"clip {task.clip_id}: {exc}")))
                pending.append(failed)
            else:
                if workers:
                    pending.append(post.submit(finish_clip, vd, task, clip, cfg, layout, stages))
                else:
                    done: Future[ClipResult | ClipFailure] = Future()
                    done.set_result(finish_clip(vd, task, clip, cfg, layout, stages))
                    pending.append(done)
                del clip  # the worker holds it; its frame memory is reused once it is done
            while len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def finish_clip(vd: ValidatedDrive, task: ClipTask, clip: Any, cfg: CurateConfig, layout: StoreLayout,
                stages: Sequence[Any] = ()) -> ClipResult | ClipFailure:
    """Run the clip stages on one extracted clip, encode its sample and stage it (fragment + JSON)."""
    from fleetcore.clipstore import write_fragment
    from fleetcore.sample import EncodedImage, SampleError, encode_images, encode_sample

    version = cfg.version()
    # Extracted frames are views into the extractor's arenas, and two samples may share one source
    # frame: run_stages_then hands them to the stages read-only, and a stage that edits pixels (privacy
    # blurring) replaces the frames it changes with edited copies (copy on write).
    tel = sample_telemetry(vd, clip.sample_times_ns)
    labels: list[dict[str, Any]] = []
    start_utc_ns = task.start_ns + vd.manifest["utc_offset_ns"]
    # Stages read the clip's identity from here and add their own keys (labels, privacy...).
    extra: dict[str, Any] = {"clip_id": task.clip_id, "window_ns": [task.start_ns, task.end_ns], "start_utc_ns": start_utc_ns}
    threads = max(1, int(cfg.encode_threads))

    def encode_now() -> list[EncodedImage | SampleError] | None:
        # the frames are final (blurred) here while the labels may still be running: encode them now
        try:
            return encode_images(task.clip_id, clip.frames, jpeg_quality=cfg.jpeg_quality, threads=threads)
        except SampleError:  # bad options: encode_sample raises it below, among its own checks
            return None

    try:
        rows, images = run_stages_then(stages, encode_now, clip=clip, telemetry=tel, drive=vd, record=extra)
        labels.extend(rows)
    except FleetError as exc:
        return ClipFailure(task.clip_id, DriveError(getattr(exc, "code", None) or "clip_stage_failed", f"clip {task.clip_id}: {exc}"))
    n_missing = int(sum(sum(f is None for f in frames) for frames in clip.frames.values()))
    summary = telemetry_summary(vd, task.start_ns, task.end_ns)
    digests = {k: v for k, v in vd.source_digests.items()}
    record = {
        "clip_id": task.clip_id,
        "vehicle_id": vd.vehicle_id,
        "drive_id": vd.drive_id,
        "window_ns": [task.start_ns, task.end_ns],
        "start_utc_ns": start_utc_ns,
        "triggers": list(task.triggers),
        "primary_trigger": task.primary_trigger,
        "config_version": version,
        "sample_rate_hz": cfg.rate_hz,
        "source_digests": digests,
        "telemetry_summary": summary,
        **{k: v for k, v in extra.items() if k not in ("clip_id", "window_ns", "start_utc_ns")},
    }
    members = encode_sample(
        task.clip_id,
        frames=clip.frames,
        sample_times_ns=clip.sample_times_ns,
        pts_ns=clip.pts_ns,
        offset_ns=clip.offset_ns,
        telemetry=tel,
        record=record,
        jpeg_quality=cfg.jpeg_quality,
        threads=threads,
        images=images,
    )
    frag = write_fragment(layout.staging, task.clip_id, members)
    row = {
        "clip_id": task.clip_id,
        "vehicle_id": vd.vehicle_id,
        "drive_id": vd.drive_id,
        "date": vd.date,
        "start_ns": task.start_ns,
        "end_ns": task.end_ns,
        "start_utc_ns": start_utc_ns,
        "duration_s": (task.end_ns - task.start_ns) / 1e9,
        "triggers": list(task.triggers),
        "primary_trigger": task.primary_trigger,
        "priority": task.priority,
        "cameras": list(clip.cameras),
        "n_samples": int(len(clip.sample_times_ns)),
        "sample_rate_hz": cfg.rate_hz,
        "missing_frames": n_missing,
        **summary,
        "config_version": version,
        "source_digests": sorted(digests.items()),
    }
    res = ClipResult(
        clip_id=task.clip_id,
        date=vd.date,
        drive_key=layout.drive_name(vd.vehicle_id, vd.drive_id),
        fragment=str(frag.path),
        fragment_bytes=int(frag.bytes),
        row=row,
        frames_decoded=int(clip.frames_decoded),
        labels=labels,
    )
    atomic_write_bytes(layout.staged(task.clip_id, "json"), dumps_json(asdict(res)))
    return res


# --------------------------------------------------------------------------------------
# Packing (one call per date)
# --------------------------------------------------------------------------------------
def pack_date(
    layout: StoreLayout,
    date: str,
    clips: Sequence[ClipResult],
    drives: Sequence[dict[str, Any]],
    cfg: CurateConfig,
) -> dict[str, Any]:
    """Pack the staged clips of one date into shards, then write catalog, index and drive rows,
    then the per-drive state markers (last). Returns a summary with the shards written."""
    from fleetcore.clipstore import pack_shards

    clips = sorted(clips, key=lambda c: c.clip_id)
    shards = []
    group = hashlib.sha256("|".join(c.clip_id for c in clips).encode()).hexdigest()[:10]
    if clips:
        shards = pack_shards([c.fragment for c in clips], layout.shard_dir(date), prefix=f"clips-{date}-{group}", max_bytes=cfg.shard_bytes)
        where = {}
        index_rows = []
        for s in shards:
            for r in s.index:
                index_rows.append(r)
                where.setdefault(r["key"], s.name)
        from fleetcore.dedup import mark_near_duplicates

        privacy = "privacy" in cfg.stages
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
            row["shard"] = f"date={date}/{where[c.clip_id]}"
            row["member_key"] = c.clip_id
            rows.append(row)
        catalog = CLIPS.validate(_clips_table(rows))
        write_parquet_atomic(catalog, layout.catalog_path("clips", date, group))
        index_rows = [{**r, "shard": f"date={date}/{r['shard']}"} for r in index_rows]
        write_parquet_atomic(SHARD_INDEX.from_pylist(index_rows), layout.catalog_path("index", date, group))
        labels = [lab for c in clips for lab in c.labels]
        if labels:
            from schemas import LABELS

            table = LABELS.validate(LABELS.from_pylist(labels))
            write_parquet_atomic(table, layout.catalog_path("labels", date, group))
            write_parquet_atomic(clip_labels_table(table), layout.catalog_path("clip_labels", date, group))
    version = cfg.version()
    for d in sorted(drives, key=lambda r: (r["vehicle_id"], r["drive_id"])):
        name = layout.drive_name(d["vehicle_id"], d["drive_id"])
        write_parquet_atomic(DRIVE_INDEX.from_pylist([d]), layout.table_path("drives", date, name))
    for d in drives:
        atomic_write_bytes(
            layout.state_path(d["vehicle_id"], d["drive_id"]),
            dumps_json({"config_version": version, "date": date, "clips": sum(1 for c in clips if c.row["drive_id"] == d["drive_id"] and c.row["vehicle_id"] == d["vehicle_id"])}),
        )
    for c in clips:  # staged fragments are now in shards
        for p in (c.fragment, layout.staged(c.clip_id, "json")):
            if file_size(p) is not None:
                remove(p)
    return {
        "date": date,
        "clips": len(clips),
        "drives": len(drives),
        "shards": [{**s.manifest_entry(), "name": f"date={date}/{s.name}"} for s in shards],
        "bytes": sum(s.bytes for s in shards),
    }


def clip_labels_table(labels: pa.Table) -> pa.Table:
    """LABELS rows pivoted wide (one row per clip, one column per label), as ``fleet mine`` shows them:
    stored beside the long table so queries over ``clip_labels`` do not pivot every time."""
    import polars as pl

    from fleetcore.mining import clip_labels_frame

    wide = clip_labels_frame(pl.from_arrow(labels).lazy()).collect().sort("clip_id")  # type: ignore[union-attr]
    return wide.to_arrow()


def _clips_table(rows: list[dict[str, Any]]) -> pa.Table:
    return CLIPS.from_pylist(rows)


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
        # No GPS fix, so no solar elevation: fall back to what the camera sees.
        tod = {"bright": "day", "dim": "dusk_dawn", "dark": "night"}.get(val("vision", "scene_light") or "", tod)
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


def update_store_manifest(layout: StoreLayout, new_shards: Sequence[dict[str, Any]], *, config_version: str) -> dict[str, Any]:
    """Merge new shard entries into ``clips/manifest.json`` (written last, atomically).

    The document has the clip store's manifest format (``fleetcore.clipstore``), with shard names
    relative to ``clips/`` (``date=D/<shard>.tar``), so ``verify_store(<store>/clips)`` checks it.
    """
    from fleetcore.clipstore import MANIFEST_NAME, STORE_FORMAT, STORE_FORMAT_VERSION, read_store_manifest

    clips_dir = layout.clips_dir
    cur: dict[str, Any] = {"shards": [], "extra": {}}
    if file_size(join(clips_dir, MANIFEST_NAME)) is not None:
        cur = read_store_manifest(clips_dir)
    by_name = {s["name"]: s for s in cur.get("shards", [])}
    for s in new_shards:
        by_name[s["name"]] = s
    entries = [by_name[k] for k in sorted(by_name)]
    extra = dict(cur.get("extra") or {})
    extra["config_versions"] = sorted(set(extra.get("config_versions", [])) | {config_version})
    man = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "extra": extra,
        "n_shards": len(entries),
        "n_samples": sum(e["samples"] for e in entries),
        "total_bytes": sum(e["bytes"] for e in entries),
        "shards": entries,
    }
    atomic_write_bytes(join(clips_dir, MANIFEST_NAME), (json.dumps(man, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii"))
    return man


def write_quarantine(layout: StoreLayout, record: dict[str, Any]) -> str:
    if record.get("clip_id"):
        p = layout.clip_quarantine_path(record["clip_id"])
    else:
        p = layout.quarantine_path(record.get("vehicle_id") or "unknown", record.get("drive_id") or Path(record["path"]).name)
    atomic_write_bytes(p, dumps_json(record))
    return p
