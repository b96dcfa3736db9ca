"""The relabel job: new labels for stored clips from their stored frames, without decoding video.

Run it as::

    fleet relabel --store STORE [--vehicle V] [--date D] [curate options] [Beam options]

For each drive whose current generation was curated with the same frames (the ``extract``
fingerprint) and windows as the given config but other labels, the job reads each clip's sample by
range, JPEG-decodes its frames, runs the labels stage on them, re-keys the sample with the new
labels (frames and telemetry copied byte for byte) and packs a new generation under the config's
version; one commit at the end makes them current. Drives whose stored frames or windows differ
from the config are listed under ``skipped`` with the reason (re-curate them instead); drives
already labelled this way are left alone.

The labels are made from the stored frames, which the privacy stage has already blurred: a
labeller that looks at faces or plates can give other values than on the source video.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from fleetcore.clips import CurateConfig, curate_fingerprints, pack_drive, relabel_clip, stored_clips
from fleetcore.errors import DriveError
from fleetcore.store.fs import atomic_write_bytes, join, read_bytes, read_parquet, remove
from fleetcore.store.layout import StoreLayout
from fleetcore.store.manifest import Generation, read_manifest
from fleetcore.ingest.validate import quarantine_record
from pipelines.curate import QUARANTINE, WriteQuarantine, _Finish, _tag, _untag
from pipelines.runner import pipeline_options, run_to_completion

log = logging.getLogger(__name__)

NS = "relabel"


def plan_relabel(store: str, cfg: CurateConfig, *, vehicles: Sequence[str] | None = None,
                 dates: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(current generations to relabel, as JSON; drives skipped with their reason)."""
    fps = curate_fingerprints(cfg)
    version = cfg.version()
    todo, skipped = [], []
    for g in read_manifest(StoreLayout(store)).current():
        if (vehicles and g.vehicle_id not in vehicles) or (dates and g.date not in dates):
            continue
        if g.config_version == version or g.fingerprint("labels") == fps["labels"]:
            continue  # already labelled this way
        for part, why in (("extract", "its stored frames were made under other extraction options"),
                          ("windows", "its clips were cut under another trigger library")):
            if g.fingerprint(part) != fps[part]:
                skipped.append({"drive": g.drive, "config_version": g.config_version, "reason": f"{why}; re-curate it"})
                break
        else:
            todo.append(g.to_json())
    return todo, skipped


class _RelabelDriveFn(beam.DoFn):
    """One drive's generation -> a new generation with new labels (packed), or quarantine records."""

    def __init__(self, store: str, cfg: CurateConfig, fingerprints: dict[str, str]):
        self.store, self.cfg, self.fingerprints = store, cfg, fingerprints
        self.clips = Metrics.counter(NS, "clips_relabelled")
        self.images = Metrics.counter(NS, "images_decoded")

    def setup(self):
        from fleetcore.stages.registry import build_stages

        self.layout = StoreLayout(self.store)
        self.stage = build_stages(["labels"], options=self.cfg.stage_options())[0]

    def process(self, gen_json: dict[str, Any]) -> Iterable[Any]:
        gen = Generation.from_json(gen_json)
        drive = read_parquet(self.layout.resolve(gen.table("drives"))).to_pylist()[0]
        results = []
        for src in sorted(stored_clips(self.layout, gen).values(), key=lambda c: c.clip_id):
            try:
                res = relabel_clip(drive, src, self.stage, self.cfg, self.layout)
            except DriveError as exc:
                yield QUARANTINE, quarantine_record(gen.drive, exc, stage="relabel", vehicle_id=gen.vehicle_id, drive_id=gen.drive_id,
                                                    clip_id=src.clip_id)
                continue
            self.clips.inc()
            self.images.inc(sum(1 for name, *_ in src.members if name.endswith((".jpg", ".png"))))
            results.append(res)
        new = pack_drive(self.layout, drive, results, self.cfg, fingerprints=self.fingerprints)
        yield "packed", {"generation": new.to_json(), "staged": [(c.clip_id, c.fragment) for c in results], "reused": len(results),
                         "frames_decoded": 0}


def run_relabel(store: str, cfg: CurateConfig, *, beam_args: Sequence[str] = (), vehicles: Sequence[str] | None = None,
                dates: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the relabel job; returns its summary (``relabelled`` drives, ``skipped`` with reasons)."""
    from fleetcore.landing.drives import dumps_json

    t0 = time.monotonic()
    todo, skipped = plan_relabel(store, cfg, vehicles=vehicles, dates=dates)
    summary: dict[str, Any] = {"config_version": cfg.version(), "drives_relabelled": 0, "clips": 0, "frames_decoded": 0,
                               "skipped": skipped, "quarantined": []}
    if todo:
        layout = StoreLayout(store)
        out = join(layout.runs_dir, f"relabel-pending-{time.time_ns()}-{os.getpid()}.json")
        p = beam.Pipeline(options=pipeline_options(beam_args))
        tagged = (p | "Generations" >> beam.Create(todo) | "Spread" >> beam.Reshuffle()
                  | "Relabel" >> beam.ParDo(_RelabelDriveFn(store, cfg, curate_fingerprints(cfg))))
        bad = tagged | "Bad" >> beam.Filter(_tag(QUARANTINE)) | "UntagBad" >> beam.Map(_untag) | "WriteQuarantine" >> WriteQuarantine(store)
        packed = tagged | "Packed" >> beam.Filter(_tag("packed")) | "UntagPacked" >> beam.Map(_untag)
        _ = ((packed, bad) | "All" >> beam.Flatten() | "Collect" >> beam.combiners.ToList()
             | "Commit" >> beam.ParDo(_Finish(store, cfg.version()))
             | "WriteSummary" >> beam.Map(lambda s: atomic_write_bytes(out, dumps_json(s))))
        run_to_completion(p)
        done = json.loads(read_bytes(out))
        remove(out)
        summary.update(drives_relabelled=done["drives_curated"], clips=done["clips"], quarantined=done["quarantined"],
                       store_revision=done["store_revision"])
    summary["seconds"] = round(time.monotonic() - t0, 3)
    summary["config"] = cfg.as_dict()
    log.info("relabel: %d drives, %d clips, %d skipped", summary["drives_relabelled"], summary["clips"], len(skipped))
    return summary
