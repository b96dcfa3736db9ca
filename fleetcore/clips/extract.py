"""Clips: windows from trigger events, extraction from the source video (or re-keying / relabelling from a stored sample), stages, encoding, staging."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fleetcore.errors import DriveError, FleetError
from fleetcore.ingest.validate import ValidatedDrive
from fleetcore.landing.drives import dumps_json
from fleetcore.stages.registry import run_stages_then
from fleetcore.store.fs import atomic_write_bytes, file_size, read_bytes
from fleetcore.store.layout import StoreLayout, sha256_hex
from fleetcore.store.manifest import Generation
from fleetcore.timing import stage_time

if TYPE_CHECKING:  # the video stack (PyAV) is imported where clips are extracted
    from fleetcore.video.extract import ArenaPool
from fleetcore.clips.config import CurateConfig

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


def clip_id_for(vehicle_id: str, drive_id: str, start_ns: int, end_ns: int, config_version: str) -> str:
    """Deterministic clip id: vehicle, drive, window and config version, so the same drive id under
    two vehicles gives two ids. No dots (WebDataset keys): ``<vehicle>__<drive>_<start ms>_<hash>``,
    dots in the ids written as ``-`` and that prefix cut to 160 characters (the hash is over the ids
    as they are)."""
    h = sha256_hex(f"{vehicle_id}|{drive_id}|{start_ns}|{end_ns}|{config_version}")[:10]
    prefix = f"{vehicle_id}__{drive_id}".replace(".", "-")[:160]  # keys stay within 200 characters
    return f"{prefix}_{start_ns // 1_000_000:d}_{h}"


def find_drive_events(vd: ValidatedDrive, specs: Sequence[Any], cfg: CurateConfig) -> pa.Table:
    from fleetcore.triggers.library import find_events

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
    """Merge trigger windows into clip windows; clamp to the span the cameras cover (a drive without
    cameras: the drive's span, its clips hold telemetry only)."""
    from fleetcore.triggers.library import merge_windows

    if vd.cameras:
        cam_start = min(c.start_ns for c in vd.cameras)
        cam_end = max(c.end_ns for c in vd.cameras)
    else:  # telemetry only: video-less clips (catalog cameras [], shards with the JSON and telemetry members)
        cam_start, cam_end = vd.start_ns, vd.end_ns
    version = cfg.version()
    out = []
    for w in merge_windows(events, max_clip_s=cfg.max_clip_s):
        s, e = max(w.start_ns, cam_start), min(w.end_ns, cam_end)
        if e - s < int(1e9 / cfg.rate_hz):
            continue
        out.append(ClipTask(clip_id_for(vd.vehicle_id, vd.drive_id, s, e, version), s, e, tuple(w.triggers), w.primary_trigger, int(w.priority)))
    return out


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


def staged_result(layout: StoreLayout, clip_id: str, drive_key: str | None = None) -> ClipResult | None:
    """A clip staged by an earlier (possibly killed) run, if complete (and, given ``drive_key``,
    staged for that drive: a staged clip of another drive is never taken for this one's)."""
    frag = layout.staged(clip_id, "tar")
    meta = layout.staged(clip_id, "json")
    size = file_size(frag)
    if size is None or file_size(meta) is None:
        return None
    try:
        d = json.loads(read_bytes(meta))
    except (json.JSONDecodeError, OSError):
        return None
    if d.get("fragment_bytes") != size or (drive_key is not None and d.get("drive_key") != drive_key):
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
    drive_key = layout.drive_name(vd.vehicle_id, vd.drive_id)
    for task in tasks:
        prev = staged_result(layout, task.clip_id, drive_key)
        if prev is not None:
            yield prev
        elif stored and (task.start_ns, task.end_ns) in stored:
            yield reuse_clip(vd, task, stored[(task.start_ns, task.end_ns)], cfg, layout)
        else:
            todo.append(task)
    if not todo:
        return
    if not vd.cameras:  # telemetry only: each clip is its sample times, no video opened
        for task in todo:
            yield finish_clip(vd, task, telemetry_only_clip(task, cfg.rate_hz), cfg, layout, stages)
        return
    cams = [c.name for c in vd.cameras if cfg.cameras is None or c.name in cfg.cameras]
    workers = max(0, int(cfg.post_workers))
    pending: deque[Future[ClipResult | ClipFailure]] = deque()
    with ClipExtractor(vd.path, vd.manifest, vd.frame_index, cameras=cams, max_side=cfg.max_side, arena_pool=arena_pool) as ex, \
            ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="clip-post") as post:
        for task in todo:
            try:
                with stage_time("decode"):
                    clip = ex.extract(task.start_ns, task.end_ns, rate_hz=cfg.rate_hz)
            except FleetError as exc:
                failed: Future[ClipResult | ClipFailure] = Future()
                failed.set_result(ClipFailure(task.clip_id, DriveError(None, f"clip {task.clip_id}: {exc}", code="clip_extract_failed")))
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


def telemetry_only_clip(task: ClipTask, rate_hz: float) -> Any:
    """The clip of a drive without cameras: its sample times at ``rate_hz``, no camera, no frame."""
    from fleetcore.video.extract import ClipFrames, sample_times

    return ClipFrames(sample_times_ns=sample_times(task.start_ns, task.end_ns, rate_hz), cameras=[], frames={}, pts_ns={}, offset_ns={})


def no_clips_reason(vd: ValidatedDrive, events: pa.Table, tasks: Sequence[ClipTask]) -> str | None:
    """Why a drive gets no clip (the run summary's ``drives_without_clips``), None when it gets some."""
    if tasks:
        return None
    kind = "" if vd.cameras else "telemetry only: "
    if events.num_rows == 0:
        return f"{kind}no trigger fired" + (" (the drive has no telemetry)" if vd.telemetry is None else "")
    where = "the cameras' coverage" if vd.cameras else "the drive"
    return f"{kind}{events.num_rows} trigger event(s), but no window of at least one sample period inside {where}"


def finish_clip(vd: ValidatedDrive, task: ClipTask, clip: Any, cfg: CurateConfig, layout: StoreLayout,
                stages: Sequence[Any] = ()) -> ClipResult | ClipFailure:
    """Run the clip stages on one extracted clip, encode its sample and stage it (fragment + JSON)."""
    from fleetcore.store.sample import (
        EncodedImage,
        SampleError,
        encode_images,
        encode_sample,
    )
    from fleetcore.store.shards import write_fragment

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
            with stage_time("encode"):
                return encode_images(task.clip_id, clip.frames, jpeg_quality=cfg.jpeg_quality, threads=threads)
        except SampleError:  # bad options: encode_sample raises it below, among its own checks
            return None

    try:
        rows, images = run_stages_then(stages, encode_now, clip=clip, telemetry=tel, drive=vd, record=extra)
        labels.extend(rows)
    except FleetError as exc:
        return ClipFailure(task.clip_id, DriveError(None, f"clip {task.clip_id}: {exc}", code=getattr(exc, "code", None) or "clip_stage_failed"))
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
    with stage_time("encode"):
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
    with stage_time("stage"):
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
    with stage_time("stage"):
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
    from fleetcore.store.sample import rekey_sample
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
    with stage_time("stage"):
        atomic_write_bytes(layout.staged(task.clip_id, "json"), dumps_json(asdict(res)))
    return res


def relabel_clip(drive: Mapping[str, Any], src: StoredClip, labels_stage: Any, cfg: CurateConfig, layout: StoreLayout) -> ClipResult:
    """Stage a stored clip with its labels made again by ``labels_stage`` from its stored frames
    (JPEG-decoded: no video is decoded; the frames are the stored, privacy-blurred ones). Its frames
    and telemetry members are kept byte for byte; the JSON and the label rows are new."""
    from fleetcore.store.sample import decode_sample, rekey_sample
    from fleetcore.store.shards import write_fragment
    from fleetcore.video.extract import ClipFrames

    assert src.task is not None
    version = cfg.version()
    old = src.task
    task = ClipTask(clip_id_for(drive["vehicle_id"], drive["drive_id"], old.start_ns, old.end_ns, version), old.start_ns, old.end_ns, old.triggers,
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
        raise DriveError(None, f"clip {src.clip_id}: {exc}", code=getattr(exc, "code", None) or "clip_stage_failed") from exc
    update = {"clip_id": task.clip_id, "config_version": version, "labels": record.get("labels")}
    frag = write_fragment(layout.staging, task.clip_id, rekey_sample(members, task.clip_id, update))
    rec = {**sample.record, **update}
    row = clip_row(drive, task, cameras=list(sample.cameras), n_samples=sample.n_samples,
                   n_missing=sum(len(v) for v in sample.meta["missing_frames"].values()), summary=rec["telemetry_summary"],
                   digests=dict(rec["source_digests"]), rate_hz=cfg.rate_hz, config_version=version)
    res = ClipResult(clip_id=task.clip_id, date=drive["date"], drive_key=layout.drive_name(drive["vehicle_id"], drive["drive_id"]),
                     fragment=str(frag.path), fragment_bytes=int(frag.bytes), row=row, frames_decoded=0, labels=list(rows), reused=True)
    with stage_time("stage"):
        atomic_write_bytes(layout.staged(task.clip_id, "json"), dumps_json(asdict(res)))
    return res
