"""The curate job: landing drives -> validated drives -> telemetry / frame index / triggers ->
multi-camera clips -> (labels, privacy) -> WebDataset shards + Parquet clip catalog.

Run it as::

    python -m pipelines.curate --input LANDING --output STORE [--vehicle V] [--date YYYY-MM-DD]
        [--runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2]

Every stage is a composite PTransform over fleetcore functions. Bad drives and bad clips travel as
tagged values (``("quarantine", record)``) that a ``Filter`` routes to the quarantine sink, so the job
runs the same on runners that do not keep ``with_outputs`` apart (DaskRunner). The job ends in one
sink (the run summary and store manifest), which every branch feeds through a ``Flatten``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions

from fleetcore.clips import (
    ClipFailure,
    ClipResult,
    CurateConfig,
    already_curated,
    clip_tasks,
    curate_fingerprints,
    curate_stages,
    extract_clips,
    find_drive_events,
    load_trigger_library,
    no_clips_reason,
    pack_drive,
    remove_staged,
    stored_clips,
    write_drive_tables,
    write_quarantine,
)
from fleetcore.errors import ConfigError, DriveError, DriveIncomplete, FleetError
from fleetcore.ingest.validate import ValidatedDrive, quarantine_record, validate_drive
from fleetcore.landing.drives import list_drives
from fleetcore.stages.options import LabelsOptions, PrivacyOptions
from fleetcore.store.fs import is_local
from fleetcore.store.layout import StoreLayout
from fleetcore.store.manifest import Generation, commit, read_manifest
from fleetcore.store.shards import StoreError
from fleetcore.timing import STAGES, stage_time, take_stage_times
from pipelines.runner import DEFAULT_RUNNER, pipeline_options, run_to_completion, beam_counters as runner_counters  # noqa: F401 (DEFAULT_RUNNER re-exported)

log = logging.getLogger(__name__)

NS = "curate"

OK, QUARANTINE, CLIP, DRIVE, SKIP, WHY = "ok", "quarantine", "clip", "drive", "skip", "why"


def _tag(kind: str):
    return lambda kv: kv[0] == kind


def _untag(kv: tuple[str, Any]) -> Any:
    return kv[1]


# --------------------------------------------------------------------------------------
# Stage 1: read complete landing drives
# --------------------------------------------------------------------------------------
class ReadLandingDrives(beam.PTransform):
    """Lists complete drives under ``root`` (optionally only some vehicles); yields drive paths."""

    def __init__(self, root: str, *, vehicles: Sequence[str] | None = None):
        super().__init__()
        self.root = root
        self.vehicles = list(vehicles) if vehicles else None

    def expand(self, pbegin):
        root, vehicles = self.root, self.vehicles
        return (
            pbegin
            | "Root" >> beam.Create([root])
            | "List" >> beam.FlatMap(lambda r: [d.location for d in list_drives(r, vehicles=vehicles)])
            | "Spread" >> beam.Reshuffle()
        )


# --------------------------------------------------------------------------------------
# Stage 2: validate (bad drives -> quarantine records)
# --------------------------------------------------------------------------------------
class _ValidateFn(beam.DoFn):
    def __init__(self, store: str, config_version: str, dates: Sequence[str] | None):
        self.store = store
        self.config_version = config_version
        self.dates = set(dates) if dates else None
        self.curated = Metrics.counter(NS, "drives_validated")
        self.quarantined = Metrics.counter(NS, "drives_quarantined")
        self.skipped = Metrics.counter(NS, "drives_skipped")

    def setup(self):
        self.manifest = read_manifest(StoreLayout(self.store))  # read once per worker

    def process(self, location: str) -> Iterable[tuple[str, Any]]:
        vehicle_id, drive_id = location.rstrip("/").split("/")[-2:]
        if already_curated(self.manifest, vehicle_id, drive_id, self.config_version):
            self.skipped.inc()
            return
        try:
            with stage_time("validate"):
                vd = validate_drive(location)  # an object-store drive is read in place, by byte ranges
        except DriveIncomplete as exc:
            log.info("%s", exc)
            self.skipped.inc()
            return
        except DriveError as exc:
            self.quarantined.inc()
            yield QUARANTINE, quarantine_record(location, exc, vehicle_id=vehicle_id, drive_id=drive_id)
            return
        finally:
            report_stage_times()
        for w in vd.warnings:  # accepted, but worth a look (fleetcore.ingest.validate.drive_warnings)
            log.warning("%s/%s: %s", vehicle_id, drive_id, w)
        if self.dates is not None and vd.date not in self.dates:
            return
        self.curated.inc()
        yield OK, vd


class ValidateDrives(beam.PTransform):
    """Drive paths -> tagged ("ok", ValidatedDrive) | ("quarantine", record)."""

    def __init__(self, store: str, config_version: str, *, dates: Sequence[str] | None = None):
        super().__init__()
        self.store, self.config_version, self.dates = store, config_version, dates

    def expand(self, paths):
        return paths | "Validate" >> beam.ParDo(_ValidateFn(self.store, self.config_version, self.dates))


# --------------------------------------------------------------------------------------
# Stage 3+4: write drive tables, find trigger windows
# --------------------------------------------------------------------------------------
class _DriveTablesFn(beam.DoFn):
    def __init__(self, store: str, cfg: CurateConfig):
        self.store, self.cfg = store, cfg
        self.bytes = Metrics.counter(NS, "bytes_written")
        self.events = Metrics.counter(NS, "trigger_events")

    def setup(self):
        self.layout = StoreLayout(self.store)
        self.specs = load_trigger_library(self.cfg)

    def process(self, vd: ValidatedDrive):
        with stage_time("tables"):
            events = find_drive_events(vd, self.specs, self.cfg)
            self.events.inc(events.num_rows)
            self.bytes.inc(write_drive_tables(vd, events, self.layout, self.cfg))
            tasks = clip_tasks(vd, events, self.cfg)
        report_stage_times()
        yield vd, tasks, no_clips_reason(vd, events, tasks)


class WriteDriveTables(beam.PTransform):
    """ValidatedDrive -> (ValidatedDrive, [ClipTask], why no clip or None); writes telemetry, frame index and triggers."""

    def __init__(self, store: str, cfg: CurateConfig):
        super().__init__()
        self.store, self.cfg = store, cfg

    def expand(self, drives):
        return drives | "TablesAndTriggers" >> beam.ParDo(_DriveTablesFn(self.store, self.cfg))


# --------------------------------------------------------------------------------------
# Stage 5 (+ label / privacy stages): extract clips
# --------------------------------------------------------------------------------------
class _ExtractFn(beam.DoFn):
    def __init__(self, store: str, cfg: CurateConfig, fingerprints: dict[str, str]):
        self.store, self.cfg, self.fingerprints = store, cfg, fingerprints
        self.reused = Metrics.counter(NS, "clips_reused")
        self.clips = Metrics.counter(NS, "clips_extracted")
        self.frames = Metrics.counter(NS, "frames_decoded")
        self.bad = Metrics.counter(NS, "clips_quarantined")
        self.drives = Metrics.counter(NS, "drives_curated")

    def setup(self):
        from fleetcore.video import ArenaPool, hold_opencv_threads

        self.layout = StoreLayout(self.store)
        self.manifest = read_manifest(self.layout)  # the drives' stored generations, read once per worker
        hold_opencv_threads(self.cfg.opencv_threads)
        # Heavy objects (detectors, models) are built once per worker here, and the frame arenas
        # are kept from drive to drive (fresh memory costs more page faults than the decoding).
        self.arena_pool = ArenaPool()
        self.stages = self.cfg.build_stages()

    def teardown(self):
        from fleetcore.video import release_opencv_threads

        self.arena_pool.clear()
        release_opencv_threads()  # the in-process runners share the caller's OpenCV

    def process(self, item):
        vd, tasks, why = item  # vd.path: a local folder or an object-store URI, decoded in place by byte ranges
        n = 0
        stored = None
        old = self.manifest.generation(vd.vehicle_id, vd.drive_id)
        if old is not None and all(old.fingerprint(k) == self.fingerprints[k] for k in ("extract", "labels")):
            stored = stored_clips(self.layout, old)  # same frames and labels: windows it holds are re-keyed, not decoded
        for res in extract_clips(vd, tasks, self.cfg, self.layout, stages=self.stages, arena_pool=self.arena_pool, stored=stored):
            if isinstance(res, ClipFailure):
                self.bad.inc()
                yield QUARANTINE, quarantine_record(vd.path, res.error, stage="extract", vehicle_id=vd.vehicle_id,
                                                    drive_id=vd.drive_id, clip_id=res.clip_id)
                continue
            n += 1
            self.clips.inc()
            self.reused.inc(int(res.reused))
            self.frames.inc(res.frames_decoded)
            yield CLIP, res
        self.drives.inc()
        report_stage_times()
        if n == 0:  # the run summary says why (drives_without_clips)
            yield WHY, {"vehicle_id": vd.vehicle_id, "drive_id": vd.drive_id, "reason": why or f"all {len(tasks)} clip(s) quarantined"}
        yield DRIVE, vd.drive_index_row()


class ExtractClips(beam.PTransform):
    """(drive, tasks, why) -> tagged ("clip", ClipResult) | ("drive", drive row) | ("why", why it has no clip) | ("quarantine", record)."""

    def __init__(self, store: str, cfg: CurateConfig, fingerprints: dict[str, str]):
        super().__init__()
        self.store, self.cfg, self.fingerprints = store, cfg, fingerprints

    def expand(self, items):
        return items | "Spread" >> beam.Reshuffle() | "Extract" >> beam.ParDo(_ExtractFn(self.store, self.cfg, self.fingerprints))


# --------------------------------------------------------------------------------------
# Stage 6: pack each drive's shards + catalog files (a new generation)
# --------------------------------------------------------------------------------------
class _PackFn(beam.DoFn):
    def __init__(self, store: str, cfg: CurateConfig, fingerprints: dict[str, str]):
        self.store, self.cfg, self.fingerprints = store, cfg, fingerprints
        self.bytes = Metrics.counter(NS, "shard_bytes_written")
        self.shards = Metrics.counter(NS, "shards_written")
        self.quarantined = Metrics.counter(NS, "drives_quarantined")

    def setup(self):
        self.layout = StoreLayout(self.store)

    def process(self, kv):
        _, items = kv
        clips = [v for k, v in items if k == CLIP]
        drives = [v for k, v in items if k == DRIVE]
        why = {f'{v["vehicle_id"]}/{v["drive_id"]}': v["reason"] for k, v in items if k == WHY}
        if len(drives) != 1:  # a drive's clips always arrive with its one drive row
            raise RuntimeError(f"drive {kv[0]}: expected one drive row with its clips, got {len(drives)}")
        drive = drives[0]
        try:  # a repeated sample key is pack_shards' StoreError (duplicate_key): quarantined below
            with stage_time("pack"):
                gen = pack_drive(self.layout, drive, clips, self.cfg, fingerprints=self.fingerprints)
        except FileNotFoundError:
            # A concurrent run on this store packed and committed the same drive, then removed the
            # staged clips this run was about to pack: the drive is curated, nothing is lost.
            current = read_manifest(self.layout).generation(drive["vehicle_id"], drive["drive_id"])
            if current is None or current.config_version != self.cfg.version():
                raise
            log.info("drive %s: committed by a concurrent run meanwhile; not packed again", kv[0])
            return
        except FleetError as exc:  # a key collision or a bad fragment: this drive is quarantined, the others go on
            err = exc if isinstance(exc, DriveError) else DriveError(None, str(exc), code=exc.code or "pack_failed")
            log.warning("drive %s not packed: %s", kv[0], err)
            self.quarantined.inc()
            record = quarantine_record(drive["path"], err, stage="pack", vehicle_id=drive["vehicle_id"], drive_id=drive["drive_id"])
            yield {"quarantine": {**record, "record": str(write_quarantine(self.layout, record))}}
            return
        finally:
            report_stage_times()
        self.bytes.inc(sum(s["bytes"] for s in gen.shards))
        self.shards.inc(len(gen.shards))
        yield {"generation": gen.to_json(), "staged": [(c.clip_id, c.fragment) for c in clips],
               "reused": sum(c.reused for c in clips), "frames_decoded": sum(c.frames_decoded for c in clips), "without_clips": why}


def _drive_of(kv: tuple[str, Any]) -> tuple[str, tuple[str, Any]]:
    kind, v = kv
    key = v.drive_key if isinstance(v, ClipResult) else StoreLayout.drive_name(v["vehicle_id"], v["drive_id"])
    return key, kv


class WriteClipStore(beam.PTransform):
    """Tagged clips and drive rows -> one packed generation per drive (shards, catalog files)."""

    def __init__(self, store: str, cfg: CurateConfig, fingerprints: dict[str, str]):
        super().__init__()
        self.store, self.cfg, self.fingerprints = store, cfg, fingerprints

    def expand(self, tagged):
        return (
            tagged
            | "KeyByDrive" >> beam.Map(_drive_of)
            | "GroupByDrive" >> beam.GroupByKey()
            | "Pack" >> beam.ParDo(_PackFn(self.store, self.cfg, self.fingerprints))
        )


class WriteQuarantine(beam.PTransform):
    def __init__(self, store: str):
        super().__init__()
        self.store = store

    def expand(self, records):
        store = self.store
        return records | "WriteRecord" >> beam.Map(lambda r: {"quarantine": {**r, "record": str(write_quarantine(StoreLayout(store), r))}})


class _Finish(beam.DoFn):
    """Commits every packed generation in one manifest revision, then removes their staged pieces."""

    def __init__(self, store: str, config_version: str):
        self.store, self.config_version = store, config_version

    def process(self, results: list[dict[str, Any]]):
        layout = StoreLayout(self.store)
        gens = sorted((Generation.from_json(r["generation"]) for r in results if "generation" in r), key=lambda g: g.drive)
        with stage_time("commit"):
            manifest = commit(layout, add=gens) if gens else read_manifest(layout)
            for r in results:
                for clip_id, fragment in r.get("staged", ()):
                    remove_staged(layout, clip_id, fragment)
        report_stage_times()
        shards = [s for g in gens for s in g.shards]
        current = manifest.current()
        summary = {
            "config_version": self.config_version,
            "dates": sorted({g.date for g in gens}),
            "drives_curated": len(gens),
            "clips": sum(g.clips for g in gens),
            # "<vehicle>/<drive>": why a curated drive has no clip (no trigger fired, no telemetry...)
            "drives_without_clips": dict(sorted(kv for r in results for kv in r.get("without_clips", {}).items())),
            "clips_reused": sum(r.get("reused", 0) for r in results),
            "clips_decoded": sum(g.clips for g in gens) - sum(r.get("reused", 0) for r in results),
            "frames_decoded": sum(r.get("frames_decoded", 0) for r in results),
            "shards_written": len(shards),
            "bytes_written": sum(s["bytes"] for s in shards),
            "quarantined": sorted((r["quarantine"] for r in results if "quarantine" in r), key=lambda q: (q["path"], q.get("clip_id") or "")),
            "store_revision": manifest.revision,
            "store_samples": sum(g.clips for g in current),
            "store_shards": sum(len(g.shards) for g in current),
        }
        yield summary


class Curate(beam.PTransform):
    """The whole job as one composite transform: landing root -> run summary (one element)."""

    def __init__(self, landing: str, store: str, cfg: CurateConfig, *, vehicles: Sequence[str] | None = None,
                 dates: Sequence[str] | None = None):
        super().__init__()
        self.landing, self.store, self.cfg = landing, store, cfg
        self.vehicles, self.dates = vehicles, dates

    def expand(self, pbegin):
        version = self.cfg.version()
        fingerprints = curate_fingerprints(self.cfg)
        validated = (
            pbegin
            | "ReadLandingDrives" >> ReadLandingDrives(self.landing, vehicles=self.vehicles)
            | "ValidateDrives" >> ValidateDrives(self.store, version, dates=self.dates)
        )
        good = validated | "OnlyValid" >> beam.Filter(_tag(OK)) | "UntagValid" >> beam.Map(_untag)
        extracted = (
            good
            | "WriteDriveTables" >> WriteDriveTables(self.store, self.cfg)
            | "ExtractClips" >> ExtractClips(self.store, self.cfg, fingerprints)
        )
        bad_drives = validated | "BadDrives" >> beam.Filter(_tag(QUARANTINE))
        bad_clips = extracted | "BadClips" >> beam.Filter(_tag(QUARANTINE))
        quarantined = (
            (bad_drives, bad_clips)
            | "AllBad" >> beam.Flatten()
            | "UntagBad" >> beam.Map(_untag)
            | "WriteQuarantine" >> WriteQuarantine(self.store)
        )
        packed = (
            extracted
            | "ClipsAndDrives" >> beam.Filter(lambda kv: kv[0] in (CLIP, DRIVE, WHY))
            | "WriteClipStore" >> WriteClipStore(self.store, self.cfg, fingerprints)
        )
        return (
            (packed, quarantined)
            | "AllResults" >> beam.Flatten()
            | "Collect" >> beam.combiners.ToList()
            | "Finish" >> beam.ParDo(_Finish(self.store, version))
        )


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    # Dashed options also take their underscore spelling (--rate_hz), the form of Beam's own options and of
    # Dataflow Flex Template parameters (passed as --name=value; infra/dataflow/flex-template-metadata.json).
    p = argparse.ArgumentParser(prog="python -m pipelines.curate", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="landing zone root (path or URI)")
    p.add_argument("--output", required=True, help="clip store root (path or URI)")
    p.add_argument("--vehicle", action="append", default=None, help="only these vehicles (repeatable)")
    p.add_argument("--date", action="append", default=None, help="only drives of these UTC dates YYYY-MM-DD (repeatable)")
    p.add_argument("--rate-hz", "--rate_hz", type=float, default=CurateConfig.rate_hz, help="shared sample rate of clip frames")
    p.add_argument("--max-side", "--max_side", type=int, default=CurateConfig.max_side, help="longest side of stored frames")
    p.add_argument("--shard-bytes", "--shard_bytes", type=int, default=CurateConfig.shard_bytes, help="target shard size in bytes")
    p.add_argument("--triggers", action="append", default=None, help="extra trigger YAML files or folders")
    p.add_argument("--labels", action=argparse.BooleanOptionalAction, default=True, help="run the labelling stage")
    p.add_argument("--labels-config", "--labels_config", default=None, help="YAML/JSON labels options (built-in and model labellers; docs/labels.md), read now")
    p.add_argument("--privacy", action=argparse.BooleanOptionalAction, default=True,
                   help="blur faces and plates before encoding (on by default; --no-privacy is recorded in every sample)")
    p.add_argument("--privacy-config", "--privacy_config", default=None, help="YAML/JSON privacy options (detectors, detect_every ...; docs/labels.md), read now")
    p.add_argument("--stage", action="append", default=None, help="further registered clip stages to run after those")
    p.add_argument("--post-workers", "--post_workers", type=int, default=CurateConfig.post_workers,
                   help="threads per worker that label, blur and encode decoded clips while the next clip decodes (0: none)")
    p.add_argument("--opencv-threads", "--opencv_threads", type=int, default=CurateConfig.opencv_threads,
                   help="OpenCV's own threads per worker process (1: the job's threads do the parallel work)")
    p.add_argument("--encode-threads", "--encode_threads", type=int, default=CurateConfig.encode_threads,
                   help="threads that JPEG-encode the frames of one clip")
    p.add_argument("--summary-json", "--summary_json", default=None, help="also write the run summary here")
    return p


def config_from_args(args: argparse.Namespace) -> CurateConfig:
    """The run config of ``build_parser()``'s arguments (option files read here, at launch)."""
    return CurateConfig(
        rate_hz=args.rate_hz,
        max_side=args.max_side,
        shard_bytes=args.shard_bytes,
        trigger_paths=tuple(args.triggers or ()),
        stages=curate_stages(labels=args.labels, privacy=args.privacy, extra=args.stage or ()),
        privacy=PrivacyOptions.from_file(args.privacy_config) if args.privacy_config else PrivacyOptions(),
        labels=LabelsOptions.from_file(args.labels_config) if args.labels_config else LabelsOptions(),
        post_workers=args.post_workers,
        opencv_threads=args.opencv_threads,
        encode_threads=args.encode_threads,
    )


def report_stage_times() -> None:
    """Turn the wall time this worker charged to each stage since the last call (fleetcore.timing)
    into counters ``stage_ms.<stage>`` (the runner sums them over workers)."""
    for name, (wall, _blocks) in take_stage_times().items():
        Metrics.counter(NS, f"stage_ms.{name}").inc(int(round(wall * 1000)))


def stage_seconds(counters: dict[str, int] | None) -> dict[str, float] | None:
    """The run's seconds of work per stage from its counters (wall seconds summed over threads and
    workers), in pipeline order; None on runners without metrics."""
    if counters is None:
        return None
    order = {n: i for i, n in enumerate(STAGES)}
    names = sorted((n[len("stage_ms."):] for n in counters if n.startswith("stage_ms.")), key=lambda n: (order.get(n, len(order)), n))
    return {n: counters[f"stage_ms.{n}"] / 1000 for n in names}


def beam_counters(result: Any) -> dict[str, int] | None:
    """The job's Beam counters (namespace ``curate``), or None on runners without metrics (Dask)."""
    return runner_counters(result, NS)


def run_curate(landing: str, store: str, cfg: CurateConfig, *, beam_args: Sequence[str] = (),
               vehicles: Sequence[str] | None = None, dates: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the curate job and return its summary (also written to ``<store>/runs/last.json``)."""
    from fleetcore.landing.drives import dumps_json
    from fleetcore.store.fs import atomic_write_bytes, is_dir, join, read_bytes, remove

    if not is_dir(landing):
        raise FileNotFoundError(f"{landing}: landing zone not found (expected a folder of <vehicle>/<drive>/ folders)")
    from fleetcore.store.cleanup import no_space, remove_orphans, remove_own_tmp

    opts = pipeline_options(beam_args)
    t0 = time.monotonic()
    layout = StoreLayout(store)
    # temp files of runs killed earlier (older than any live write); on object storage only the
    # staging area is listed (a whole-store listing per run would cost more than it saves)
    remove_orphans(store if is_local(store) else layout.staging)
    summary_path = join(layout.runs_dir, f"pending-{time.time_ns()}-{os.getpid()}.json")
    p = beam.Pipeline(options=opts)
    (
        p
        | "Curate" >> Curate(landing, store, cfg, vehicles=vehicles, dates=dates)
        | "WriteSummary" >> beam.Map(lambda s: atomic_write_bytes(summary_path, dumps_json(s)))
    )
    try:
        result = run_to_completion(p)
    except Exception as exc:
        full = no_space(exc)
        if full is None:
            raise
        removed = remove_own_tmp(store)
        raise StoreError(store, f"no space left on device while writing the store ({len(removed)} temporary file(s) of this run "
                         "removed; every published file is complete): free space and rerun, the rerun resumes", code="no_space") from None
    summary = json.loads(read_bytes(summary_path))
    remove(summary_path)
    summary["metrics"] = beam_counters(result)
    summary["stage_seconds"] = stage_seconds(summary["metrics"])
    summary["seconds"] = round(time.monotonic() - t0, 3)
    summary["runner"] = opts.view_as(StandardOptions).runner
    summary["config"] = cfg.as_dict()
    atomic_write_bytes(layout.last_run, dumps_json(summary))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. Launched by Dagster Pipes (``dagster_project.beam_pipes``), the job also streams
    its logs to the Dagster run and reports its summary, Beam counters and checks (``pipelines.pipes``)."""
    from fleetcore.errors import FleetError
    from pipelines.pipes import EXIT_DOMAIN, pipes_session, report_curate

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    with pipes_session() as pipes:
        try:
            cfg = config_from_args(args)
        except ConfigError as exc:
            if pipes is None:
                parser.error(str(exc))  # one line on stderr, exit status 2
            log.error("curate: %s", exc)
            return EXIT_DOMAIN
        try:
            summary = run_curate(args.input, args.output, cfg, beam_args=beam_args, vehicles=args.vehicle, dates=args.date)
        except FleetError as exc:
            if pipes is None:
                raise
            log.error("curate: %s", exc)
            return EXIT_DOMAIN
        if args.summary_json:
            from pathlib import Path

            from fleetcore.landing.drives import atomic_write_bytes, dumps_json

            atomic_write_bytes(Path(args.summary_json), dumps_json(summary))
        log.info("curate: %s", json.dumps({k: v for k, v in summary.items() if k != "config"}))
        if pipes is not None:
            report_curate(pipes, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
