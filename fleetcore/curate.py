"""The curate job's domain logic, one function per stage; the Beam job in ``pipelines.curate``
is a thin layer over these.

The store's layout, manifest and generations are owned by :mod:`fleetcore.store`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import fleetcore
from fleetcore.configfile import check_int, check_names, check_number
from fleetcore.errors import ConfigError, DriveError, FleetError
from fleetcore.landing import dumps_json
from fleetcore.stage_options import NOT_IN_VERSION, LabelsOptions, PrivacyOptions, version_payload
from fleetcore.store.fs import atomic_write_bytes, file_size, read_bytes, remove, write_parquet
from fleetcore.store.layout import StoreLayout, generation_id, sha256_hex
from fleetcore.store.manifest import Generation, StoreManifest
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


# --------------------------------------------------------------------------------------
# Idempotence
# --------------------------------------------------------------------------------------
def already_curated(manifest: StoreManifest, vehicle_id: str, drive_id: str, config_version: str) -> bool:
    """True when the drive's current generation was curated under ``config_version``."""
    g = manifest.generation(vehicle_id, drive_id)
    return g is not None and g.config_version == config_version


def clip_id_for(drive_id: str, start_ns: int, end_ns: int, config_version: str) -> str:
    """Deterministic clip id: drive, window and config version. No dots (WebDataset keys)."""
    h = sha256_hex(f"{drive_id}|{start_ns}|{end_ns}|{config_version}")[:10]
    safe = drive_id.replace(".", "-")
    return f"{safe}_{start_ns // 1_000_000:d}_{h}"


# --------------------------------------------------------------------------------------
# Per-drive tables
# --------------------------------------------------------------------------------------
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
    #: the frames came from the drive's stored generation (no video decoded)
    reused: bool = False


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
    stored: Mapping[tuple[int, int], StoredClip] | None = None,
) -> Iterator[ClipResult | ClipFailure]:
    """Extract, process (label / anonymise stages), encode and stage every clip of one drive.

    ``arena_pool``: a :class:`fleetcore.video.ArenaPool` kept by the caller across drives (the
    frame memory of one drive's clips is then reused for the next drive's); None: one per drive.

    Yields a ClipResult per clip, or a ClipFailure for a clip that failed (the caller quarantines it;
    the other clips go on): first the clips already staged by an earlier run and those re-keyed from
    ``stored`` (the drive's stored clips by window, see :func:`stored_clips`: no decoding), then the
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
        elif stored and (task.start_ns, task.end_ns) in stored:
            yield reuse_clip(vd, task, stored[(task.start_ns, task.end_ns)], cfg, layout)
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
    from fleetcore.store.shards import write_fragment
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
    row = clip_row(_drive_facts(vd), task, cameras=list(clip.cameras), n_samples=int(len(clip.sample_times_ns)), n_missing=n_missing,
                   summary=summary, digests=digests, rate_hz=cfg.rate_hz, config_version=version)
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


def _drive_facts(vd: ValidatedDrive) -> dict[str, Any]:
    return {"vehicle_id": vd.vehicle_id, "drive_id": vd.drive_id, "date": vd.date, "utc_offset_ns": vd.manifest["utc_offset_ns"]}


def clip_row(drive: Mapping[str, Any], task: ClipTask, *, cameras: list[str], n_samples: int, n_missing: int, summary: dict[str, Any],
             digests: dict[str, str], rate_hz: float, config_version: str) -> dict[str, Any]:
    """A clip's staged catalog row (CLIPS without the label columns, shard and near-duplicate mark).
    ``drive``: vehicle_id, drive_id, date and utc_offset_ns of its drive."""
    return {
        "clip_id": task.clip_id,
        "vehicle_id": drive["vehicle_id"],
        "drive_id": drive["drive_id"],
        "date": drive["date"],
        "start_ns": task.start_ns,
        "end_ns": task.end_ns,
        "start_utc_ns": task.start_ns + drive["utc_offset_ns"],
        "duration_s": (task.end_ns - task.start_ns) / 1e9,
        "triggers": list(task.triggers),
        "primary_trigger": task.primary_trigger,
        "priority": task.priority,
        "cameras": cameras,
        "n_samples": n_samples,
        "sample_rate_hz": rate_hz,
        "missing_frames": n_missing,
        **summary,
        "config_version": config_version,
        "source_digests": sorted(digests.items()),
    }


# --------------------------------------------------------------------------------------
# Re-curation from stored frames
# --------------------------------------------------------------------------------------
def curate_fingerprints(cfg: CurateConfig) -> dict[str, str]:
    """What each part of a drive's generation depends on, so re-curation redoes only what changed:

    * ``extract``: the stored frames and telemetry (sampling, frame size, JPEG quality, cameras,
      frame conversion, code, and every stage but labels: privacy blurring edits the pixels);
    * ``labels``: the labels stage (its labellers and their versions);
    * ``windows``: the trigger library and the window rules.

    A window the drive's current generation holds under the same ``extract`` and ``labels``
    fingerprints is re-keyed from the stored sample instead of decoded (:func:`reuse_clip`)."""
    from fleetcore.stages import stages_fingerprint
    from fleetcore.video.convert import CONVERT_VERSION

    def h(obj: Any) -> str:
        return sha256_hex(json.dumps(obj, sort_keys=True, default=str))[:12]

    options = cfg.stage_options()
    pixel_stages = [[s, stages_fingerprint([s], options=options)] for s in cfg.stages if s != "labels"]
    return {
        "extract": h({"rate_hz": cfg.rate_hz, "max_side": cfg.max_side, "jpeg_quality": cfg.jpeg_quality, "cameras": cfg.cameras,
                      "code": fleetcore.__version__, "frame_conversion": CONVERT_VERSION, "stages": pixel_stages}),
        "labels": h(stages_fingerprint(["labels"], options=options) if "labels" in cfg.stages else None),
        "windows": h({"triggers": cfg.trigger_hash, "max_clip_s": cfg.max_clip_s, "telemetry_rate_hz": cfg.telemetry_rate_hz}),
    }


@dataclass(frozen=True)
class StoredClip:
    """A clip of a stored generation: where its members lie and its label rows."""

    clip_id: str
    shard_path: str
    members: tuple[tuple[str, int, int, int], ...]  # (member, header_offset, data_offset, size), archive order
    labels: tuple[dict[str, Any], ...] = ()
    task: ClipTask | None = None  # the stored window: clip id, times, triggers, priority

    def read(self) -> list[tuple[str, bytes]]:
        """The sample's members, fetched with one range read (a sample's members are contiguous)."""
        from fleetcore.store.tario import read_member

        start = self.members[0][1]
        end = max(off + size for _, _, off, size in self.members)
        buf = read_member(self.shard_path, start, end - start)
        return [(name, buf[off - start: off - start + size]) for name, _, off, size in self.members]


def stored_clips(layout: StoreLayout, gen: Generation) -> dict[tuple[int, int], StoredClip]:
    """The clips of a stored generation by window ``(start_ns, end_ns)``: three catalog files read,
    no shard touched."""
    from fleetcore.store.fs import read_parquet

    if gen.table("clips") is None or gen.table("index") is None:
        return {}
    cols = ["clip_id", "start_ns", "end_ns", "shard", "member_key", "triggers", "primary_trigger", "priority"]
    clips = read_parquet(layout.resolve(gen.table("clips")), columns=cols).to_pylist()
    index: dict[str, list[tuple[str, int, int, int]]] = {}
    for r in read_parquet(layout.resolve(gen.table("index")), columns=["key", "member", "header_offset", "data_offset", "size"]).to_pylist():
        index.setdefault(r["key"], []).append((r["member"], r["header_offset"], r["data_offset"], r["size"]))
    labels: dict[str, list[dict[str, Any]]] = {}
    if gen.table("labels") is not None:
        for r in read_parquet(layout.resolve(gen.table("labels"))).to_pylist():
            labels.setdefault(r["clip_id"], []).append(r)
    return {
        (c["start_ns"], c["end_ns"]): StoredClip(c["clip_id"], layout.shard_path(c["shard"]), tuple(sorted(index[c["member_key"]], key=lambda m: m[1])),
                                                 tuple(labels.get(c["clip_id"], ())),
                                                 ClipTask(c["clip_id"], c["start_ns"], c["end_ns"], tuple(c["triggers"]), c["primary_trigger"], int(c["priority"])))
        for c in clips if c["member_key"] in index
    }


def reuse_clip(vd: ValidatedDrive, task: ClipTask, src: StoredClip, cfg: CurateConfig, layout: StoreLayout) -> ClipResult:
    """Stage a clip from a stored sample of the same window (same frames, telemetry and labels):
    the sample is re-keyed with this run's clip id, triggers and config version, nothing decoded."""
    from fleetcore.sample import rekey_sample
    from fleetcore.store.shards import write_fragment

    version = cfg.version()
    members = src.read()
    meta = json.loads(members[0][1])
    update = {"clip_id": task.clip_id, "triggers": list(task.triggers), "primary_trigger": task.primary_trigger, "config_version": version}
    frag = write_fragment(layout.staging, task.clip_id, rekey_sample(members, task.clip_id, update))
    record = {**meta["record"], **update}
    row = clip_row(_drive_facts(vd), task, cameras=list(meta["cameras"]), n_samples=int(meta["n_samples"]),
                   n_missing=sum(len(v) for v in meta["missing_frames"].values()), summary=record["telemetry_summary"],
                   digests=dict(record["source_digests"]), rate_hz=cfg.rate_hz, config_version=version)
    res = ClipResult(clip_id=task.clip_id, date=vd.date, drive_key=layout.drive_name(vd.vehicle_id, vd.drive_id), fragment=str(frag.path),
                     fragment_bytes=int(frag.bytes), row=row, frames_decoded=0, labels=[{**r, "clip_id": task.clip_id} for r in src.labels],
                     reused=True)
    atomic_write_bytes(layout.staged(task.clip_id, "json"), dumps_json(asdict(res)))
    return res


def relabel_clip(drive: Mapping[str, Any], src: StoredClip, labels_stage: Any, cfg: CurateConfig, layout: StoreLayout) -> ClipResult:
    """Stage a stored clip with its labels made again by ``labels_stage`` from its stored frames
    (JPEG-decoded: no video is decoded; the frames are the stored, privacy-blurred ones). Its frames
    and telemetry members are kept byte for byte; the JSON and the label rows are new."""
    from fleetcore.sample import decode_sample, rekey_sample
    from fleetcore.store.shards import write_fragment
    from fleetcore.video.extract import ClipFrames

    assert src.task is not None
    version = cfg.version()
    old = src.task
    task = ClipTask(clip_id_for(drive["drive_id"], old.start_ns, old.end_ns, version), old.start_ns, old.end_ns, old.triggers,
                    old.primary_trigger, old.priority)
    members = src.read()
    sample = decode_sample(dict(members))
    clip = ClipFrames(sample_times_ns=sample.sample_times_ns, cameras=list(sample.cameras), frames=sample.frames,
                      pts_ns={c: np.asarray([-1 if v is None else v for v in sample.pts_ns[c]], np.int64) for c in sample.cameras},
                      offset_ns={c: np.asarray([0 if v is None else v for v in sample.offset_ns[c]], np.int64) for c in sample.cameras})
    record = {"clip_id": task.clip_id, "window_ns": [task.start_ns, task.end_ns], "start_utc_ns": sample.record["start_utc_ns"]}
    try:
        rows = labels_stage(clip=clip, telemetry=dict(sample.telemetry), drive=None, record=record) or []
    except FleetError as exc:
        raise DriveError(getattr(exc, "code", None) or "clip_stage_failed", f"clip {src.clip_id}: {exc}") from exc
    update = {"clip_id": task.clip_id, "config_version": version, "labels": record.get("labels")}
    frag = write_fragment(layout.staging, task.clip_id, rekey_sample(members, task.clip_id, update))
    rec = {**sample.record, **update}
    row = clip_row(drive, task, cameras=list(sample.cameras), n_samples=sample.n_samples,
                   n_missing=sum(len(v) for v in sample.meta["missing_frames"].values()), summary=rec["telemetry_summary"],
                   digests=dict(rec["source_digests"]), rate_hz=cfg.rate_hz, config_version=version)
    res = ClipResult(clip_id=task.clip_id, date=drive["date"], drive_key=layout.drive_name(drive["vehicle_id"], drive["drive_id"]),
                     fragment=str(frag.path), fragment_bytes=int(frag.bytes), row=row, frames_decoded=0, labels=list(rows), reused=True)
    atomic_write_bytes(layout.staged(task.clip_id, "json"), dumps_json(asdict(res)))
    return res


# --------------------------------------------------------------------------------------
# Packing (one call per drive)
# --------------------------------------------------------------------------------------
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
    from fleetcore.dedup import mark_near_duplicates

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

    from fleetcore.mining import clip_labels_frame

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


def write_quarantine(layout: StoreLayout, record: dict[str, Any]) -> str:
    if record.get("clip_id"):
        p = layout.clip_quarantine_path(record["clip_id"])
    else:
        p = layout.quarantine_path(record.get("vehicle_id") or "unknown", record.get("drive_id") or Path(record["path"]).name)
    atomic_write_bytes(p, dumps_json(record))
    return p
