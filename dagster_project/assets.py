"""Assets. Each is thin: it calls a Beam job in ``pipelines`` or a function in ``fleetcore`` and reports
what happened as metadata (numbers, so the UI plots them across materialisations).

Graph::

    landing_drives (observed) -> curated_drives -> trigger_events -> clip_store -> clip_catalog
        -> coverage_report;  clip_catalog -> dataset_<spec> (one per datasets/*.yaml)

``curated_drives``, ``trigger_events``, ``clip_store`` and ``clip_catalog`` are one Beam run of the curate
job per daily partition (a multi-asset: the job writes all four at once).

The Beam jobs run in their own processes, launched through Dagster Pipes (``dagster_project.beam_pipes``):
this module never imports ``pipelines`` or Apache Beam.
"""


import logging
import time
from pathlib import Path
from typing import Any, Iterator

import dagster as dg

from dagster_project import dataset_specs, facts
from dagster_project.beam_pipes import BeamPipesClient, curate_args, merged_results, run_job
from dagster_project.landing_scan import scan_landing
from dagster_project.resources import BeamRunner, FleetPaths
from fleetcore.clips import CurateConfig, curate_stages
from fleetcore.stages.options import LabelsOptions, PrivacyOptions

log = logging.getLogger(__name__)

LANDING = dg.AssetKey("landing_drives")
CURATED = dg.AssetKey("curated_drives")
TRIGGERS = dg.AssetKey("trigger_events")
CLIP_STORE = dg.AssetKey("clip_store")
CLIP_CATALOG = dg.AssetKey("clip_catalog")
COVERAGE = dg.AssetKey("coverage_report")

GROUP_INGEST = "ingest"
GROUP_CURATE = "curate"
GROUP_DATASETS = "datasets"

#: Transient errors (I/O, a lost Dask worker) are retried; domain errors fail at once (Failure(allow_retries=False)).
RETRY = dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL)
DECODE_POOL = "decode"

#: Checks the Beam jobs report themselves through Pipes (pipelines.pipes.RUN_QUARANTINE_CHECK / DATASET_VERIFIED_CHECK).
RUN_QUARANTINE_CHECK = "quarantine_this_run"
DATASET_VERIFIED_CHECK = "dataset_verified"


def _permanent(exc: BaseException, what: str) -> dg.Failure:
    return dg.Failure(description=f"{what}: {type(exc).__name__}: {exc}", allow_retries=False)


def _report_dir(paths: FleetPaths, *parts: str) -> Path:
    return paths.reports() / "dagster" / Path(*parts)


def _image_md(png: bytes, alt: str) -> dg.MetadataValue:
    from dagster_project.visuals import markdown_image

    return dg.MetadataValue.md(markdown_image(png, alt))


def _counts_md(pairs: list[tuple[str, int]], what: str) -> dg.MetadataValue:
    rows = "\n".join(f"| {k} | {v} |" for k, v in pairs) or "| (none) | 0 |"
    return dg.MetadataValue.md(f"| {what} | count |\n|---|---|\n{rows}")


# --------------------------------------------------------------------------------------
# landing_drives: observed, not produced
# --------------------------------------------------------------------------------------
@dg.observable_source_asset(
    key=LANDING,
    group_name=GROUP_INGEST,
    description="Drives uploaded by the fleet (<landing>/<vehicle>/<drive>/). Observed: counts of complete "
    "and incomplete uploads; the data version changes when a drive completes.",
)
def landing_drives(paths: FleetPaths) -> dg.ObserveResult:
    import hashlib

    root = paths.landing()
    complete, incomplete = scan_landing(root)
    keys = "\n".join(r.key for r in complete)
    return dg.ObserveResult(
        data_version=dg.DataVersion(hashlib.sha256(keys.encode()).hexdigest()[:16]),
        metadata={
            "complete_drives": len(complete),
            "incomplete_uploads": len(incomplete),
            "vehicles": len({r.vehicle_id for r in complete}),
            "landing_root": dg.MetadataValue.path(str(root)),
        },
    )


# --------------------------------------------------------------------------------------
# The curate job, one daily partition per run
# --------------------------------------------------------------------------------------
class CurateRunConfig(dg.Config):
    """The Launchpad's options of a curate run; ``to_curate_config()`` makes the job's run config
    (``fleetcore.clips.CurateConfig``, the same the CLI builds from its options)."""

    labels: bool = True  # the labelling stage
    privacy: bool = True  # blur faces and plates before encoding (off is recorded in every sample)
    extra_stages: list[str] = []  # further registered clip stages
    rate_hz: float = CurateConfig.rate_hz
    max_side: int = CurateConfig.max_side
    extra_triggers: list[str] = []
    privacy_config: str | None = None  # YAML/JSON privacy options file (docs/labels.md), read when the run starts
    labels_config: str | None = None  # YAML/JSON labels options file (docs/labels.md), read when the run starts

    def to_curate_config(self) -> CurateConfig:
        return CurateConfig(
            rate_hz=self.rate_hz,
            max_side=self.max_side,
            trigger_paths=tuple(self.extra_triggers),
            stages=curate_stages(labels=self.labels, privacy=self.privacy, extra=self.extra_stages),
            privacy=PrivacyOptions.from_file(self.privacy_config) if self.privacy_config else PrivacyOptions(),
            labels=LabelsOptions.from_file(self.labels_config) if self.labels_config else LabelsOptions(),
        )


def run_curate_partition(context: Any, date: str, config: CurateRunConfig, paths: FleetPaths, beam: BeamRunner,
                         pipes: BeamPipesClient) -> tuple[dg.PipesClientCompletedInvocation, dict[str, Any]]:
    """Launch ``python -m pipelines.curate ... --date <date>`` through Pipes; returns the invocation and
    the job's run summary. A bad option or a domain error in the job fails the run without a retry."""
    from fleetcore.errors import FleetError

    from fleetcore.store.fs import is_dir

    landing, store = paths.landing(), paths.store()
    if not is_dir(landing):
        raise dg.Failure(description=f"{landing}: landing root is not a directory (set FleetPaths.landing_root or $FLEET_LANDING_ROOT)", allow_retries=False)
    try:
        config.to_curate_config()  # a bad option (or option file) fails here, before a process starts
    except FleetError as exc:
        raise _permanent(exc, f"curate {date}") from exc
    inv, msg = run_job(context, pipes, beam, "pipelines.curate", curate_args(str(landing), str(store), date, config))
    return inv, dict(msg.get("summary") or {})


def curate_metadata(date: str, summary: dict[str, Any], paths: FleetPaths) -> dict[dg.AssetKey, dict[str, Any]]:
    """Metadata of the four curate assets: this run's work (Beam counters, run summary) and the state of
    the partition in the store (catalog rows)."""
    from fleetcore.store.catalog import Catalog

    from dagster_project.visuals import bar_chart, contact_sheet

    store = paths.store()
    catalog = Catalog(store)  # one manifest revision for every number below
    metrics = summary.get("metrics") or {}
    seconds = float(summary.get("seconds") or 0.0)
    frames = int(metrics.get("frames_decoded", 0))
    run_common = {
        "run_seconds": seconds,
        "runner": str(summary.get("runner")),
        "config_version": str(summary.get("config_version")),
    }
    drives = facts.table(catalog, "drives", date=date)
    triggers = facts.table(catalog, "triggers", date=date)
    clips = facts.table(catalog, "clips", date=date)
    labels_all = facts.table(catalog, "labels")
    labels = labels_all.filter(labels_all["clip_id"].is_in(clips["clip_id"].to_list())) if not labels_all.is_empty() and not clips.is_empty() else labels_all.head(0)
    quarantined = [q for q in summary.get("quarantined", []) if not q.get("clip_id")]
    from dagster_project.store_sync import DIGEST_KEY, partition_digest

    digest = {DIGEST_KEY: partition_digest(catalog.manifest, date) or ""}  # the store sensor compares it
    out: dict[dg.AssetKey, dict[str, Any]] = {}

    out[CURATED] = {
        **run_common,
        **digest,
        "drives": drives.height,
        "drives_curated_this_run": int(summary.get("drives_curated", 0)),
        "quarantined_this_run": len(quarantined),
        "quarantined_total": len(facts.quarantine_records(store)),
        "video_seconds": float(drives["video_seconds"].sum()) if drives.height else 0.0,
        "telemetry_rows": int(drives["telemetry_rows"].sum()) if drives.height else 0,
        "vehicles": drives["vehicle_id"].n_unique() if drives.height else 0,
    }
    trig_counts = facts.counts(triggers, "trigger")
    tdir = _report_dir(paths, "trigger_events", date)
    out[TRIGGERS] = {
        **digest,
        "events": triggers.height,
        "events_this_run": int(metrics.get("trigger_events", 0)),
        "trigger_types": len(trig_counts),
        "events_by_trigger": _counts_md(trig_counts, "trigger"),
        "trigger_chart": _image_md(bar_chart(trig_counts, tdir / "triggers.png", title=f"trigger events {date}"), "trigger events"),
    }
    man = catalog.store_manifest() if catalog.manifest.revision else {}
    cdir = _report_dir(paths, "clip_store", date)
    sheet = contact_sheet(catalog, clips, cdir / "contact_sheet.png", labels=labels)
    out[CLIP_STORE] = {
        **run_common,
        **digest,
        "clips": clips.height,
        "clips_this_run": int(summary.get("clips", 0)),
        "frames_decoded": frames,
        "frames_per_second": round(frames / seconds, 2) if seconds > 0 else 0.0,
        "shards_written": int(summary.get("shards_written", 0)),
        "bytes_written": int(summary.get("bytes_written", 0)),
        "store_shards": int(man.get("n_shards", 0)),
        "store_samples": int(man.get("n_samples", 0)),
        "store_bytes": int(man.get("total_bytes", 0)),
        "clips_quarantined_total": facts.clip_quarantine_count(store),
        "contact_sheet": _image_md(sheet, "contact sheet"),
        "contact_sheet_path": dg.MetadataValue.path(str(cdir / "contact_sheet.png")),
    }
    label_counts = facts.label_counts(labels)
    primary = facts.counts(clips, "primary_trigger")
    kdir = _report_dir(paths, "clip_catalog", date)
    all_clips = facts.table(catalog, "clips")
    out[CLIP_CATALOG] = {
        **digest,
        "clips": clips.height,
        "clips_total": all_clips.height,
        "clip_seconds": float(clips["duration_s"].sum()) if clips.height else 0.0,
        "labelled_clips": labels["clip_id"].n_unique() if not labels.is_empty() else 0,
        "label_distribution": _image_md(bar_chart(label_counts, kdir / "labels.png", title=f"labels {date}"), "labels"),
        "trigger_distribution": _image_md(bar_chart(primary, kdir / "primary_triggers.png", title=f"clips by primary trigger {date}"), "primary triggers"),
        "snapshot_id": catalog.snapshot_id(),
    }
    return out


def build_curate_assets(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="curate",
        partitions_def=partitions_def,
        pool=DECODE_POOL,
        retry_policy=RETRY,
        specs=[
            dg.AssetSpec(CURATED, deps=[LANDING], group_name=GROUP_CURATE, kinds={"beam", "parquet"},
                         description="Validated drives of the day: drive index, curated telemetry and frame index (bad drives quarantined)."),
            dg.AssetSpec(TRIGGERS, deps=[CURATED], group_name=GROUP_CURATE, kinds={"parquet"},
                         description="Trigger events found in the day's telemetry (triggers/date=D/)."),
            dg.AssetSpec(CLIP_STORE, deps=[TRIGGERS], group_name=GROUP_CURATE, kinds={"webdataset"},
                         description="Time-synced multi-camera clips as WebDataset shards (clips/date=D/*.tar + clips/manifest.json)."),
            dg.AssetSpec(CLIP_CATALOG, deps=[CLIP_STORE], group_name=GROUP_CURATE, kinds={"parquet", "polars"},
                         description="Parquet clip catalog, shard index and labels of the day (catalog/*/date=D/)."),
        ],
        check_specs=[dg.AssetCheckSpec(RUN_QUARANTINE_CHECK, asset=CURATED,
                                       description="Reported by the curate job: WARN when this run quarantined drives or clips.")],
        description="One run of the curate Beam job (pipelines.curate) for one UTC drive date.",
    )
    def curate(context: dg.AssetExecutionContext, config: CurateRunConfig, paths: FleetPaths, beam: BeamRunner,
               pipes: BeamPipesClient) -> Iterator[Any]:
        date = context.partition_key
        t0 = time.monotonic()
        inv, summary = run_curate_partition(context, date, config, paths, beam, pipes)
        context.log.info("curate %s: %d drives, %d clips, %d quarantined in %.1f s (runner %s)", date,
                         summary.get("drives_curated", 0), summary.get("clips", 0), len(summary.get("quarantined", [])),
                         time.monotonic() - t0, summary.get("runner"))
        yield from merged_results(inv, curate_metadata(date, summary, paths))

    return curate


# --------------------------------------------------------------------------------------
# Coverage report
# --------------------------------------------------------------------------------------
class CoverageConfig(dg.Config):
    """Dimensions of the coverage table (``fleetcore.query.coverage.available_dims``: catalog columns, label
    names, ``trigger``, ``speed_band``) and the count below which a cell is "thin"."""

    dims: list[str] = ["trigger", "speed_band"]
    min_count: int = 5


@dg.asset(key=COVERAGE, deps=[CLIP_CATALOG], group_name=GROUP_CURATE, kinds={"polars"},
          description="Coverage of the catalog over chosen dimensions (fleetcore.query.coverage) with a heatmap.")
def coverage_report(context: dg.AssetExecutionContext, config: CoverageConfig, paths: FleetPaths) -> dg.MaterializeResult:
    store = paths.store()
    out = _report_dir(paths, "coverage")
    out.mkdir(parents=True, exist_ok=True)
    from fleetcore.query.coverage import coverage_report as compute, render_heatmap

    report = compute(store, config.dims, min_count=config.min_count)
    png_path = out / "coverage_heatmap.png"
    render_heatmap(report, png_path)
    md: dict[str, Any] = {
        "clips_total": int(report.total_clips),
        "cells": int(report.table.height),
        "empty_cells": int(report.empty_cells.height),
        "thin_cells": int(report.thin_cells.height),
        "dims": " x ".join(report.dims),
        "source": "fleetcore.query.coverage",
        "heatmap": _image_md(png_path.read_bytes(), "coverage heatmap"),
        "heatmap_path": dg.MetadataValue.path(str(png_path)),
    }
    context.log.info("coverage over %s: %d cells, %d empty, %d thin", report.dims, md["cells"], md["empty_cells"], md["thin_cells"])
    return dg.MaterializeResult(metadata=md)


# --------------------------------------------------------------------------------------
# Datasets: one asset per datasets/*.yaml
# --------------------------------------------------------------------------------------
PREFLIGHT_CHECK = "privacy_and_selection"


class _BuildResult:
    """``pipelines.build_dataset.BuildResult`` as the job reported it (a custom Pipes message)."""

    def __init__(self, *, name: str, version: str, path: str, manifest_path: str, samples: int, shards: int, built: bool, **_: Any):
        self.name, self.version, self.path, self.manifest_path = name, version, path, manifest_path
        self.samples, self.shards, self.built = samples, shards, built


def build_dataset_from_spec(context: dg.OpExecutionContext, spec_path: Path, key: dg.AssetKey, paths: FleetPaths,
                            beam: BeamRunner, pipes: BeamPipesClient) -> Iterator[Any]:
    """Gate (blocking check result, then Failure if it fails) -> ``python -m pipelines.build_dataset``
    through Pipes -> metadata (the job's counters and the store's pictures) and the job's checks."""
    from fleetcore.errors import FleetError

    from dagster_project.visuals import bar_chart, contact_sheet

    store = paths.store()
    try:
        pf = dataset_specs.preflight(spec_path, store)
    except FleetError as exc:
        raise _permanent(exc, f"dataset spec {spec_path.name}") from exc
    check = dg.AssetCheckResult(
        asset_key=key,
        check_name=PREFLIGHT_CHECK,
        passed=pf.ok,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(pf.problems) or "selection non-empty, privacy on for every selected clip",
        metadata={"selected_clips": pf.selected.height, "clips_without_privacy": len(pf.without_privacy),
                  **{f"selection_{k}": int(v) for k, v in pf.counts.items()}},
    )
    yield check
    if not check.passed:
        raise dg.Failure(description=f"{spec_path.name}: not built: {check.description}", allow_retries=False,
                         metadata={"spec": dg.MetadataValue.path(str(spec_path))})
    t0 = time.monotonic()
    inv, msg = run_job(context, pipes, beam, "pipelines.build_dataset",
                       ["--spec", str(spec_path), "--store", str(store), "--datasets-root", str(paths.datasets())])
    res = _BuildResult(**msg["result"])
    seconds = time.monotonic() - t0
    md: dict[str, Any] = {
        "samples": int(res.samples),
        "shards": int(res.shards),
        "selected_clips": pf.selected.height,
        "built_now": str(bool(res.built)),
        "version": res.version,
        "seconds": round(seconds, 3),
        "dataset_path": dg.MetadataValue.path(res.path),
        "manifest": dg.MetadataValue.path(res.manifest_path),
        "spec": dg.MetadataValue.path(str(spec_path)),
        "dataset_bytes": sum(p.stat().st_size for p in Path(res.path).rglob("*") if p.is_file()),
    }
    if seconds > 0 and res.built:
        md["samples_per_second"] = round(res.samples / seconds, 2)
    rdir = _report_dir(paths, "datasets", key.path[-1])
    sel_ids = pf.selected["clip_id"].to_list()
    clips = facts.table(store, "clips")
    clips = clips.filter(clips["clip_id"].is_in(sel_ids)) if not clips.is_empty() else clips
    labels = facts.table(store, "labels")
    sel_labels = labels.filter(labels["clip_id"].is_in(sel_ids)) if not labels.is_empty() else labels
    sheet = contact_sheet(store, clips, rdir / "contact_sheet.png", labels=sel_labels)
    md["contact_sheet"] = _image_md(sheet, "contact sheet")
    md["contact_sheet_path"] = dg.MetadataValue.path(str(rdir / "contact_sheet.png"))
    md["label_distribution"] = _image_md(bar_chart(facts.label_counts(sel_labels), rdir / "labels.png", title="labels"), "labels")
    trig = facts.counts(pf.selected, "trigger") if "trigger" in pf.selected.columns else facts.counts(clips, "primary_trigger")
    md["trigger_distribution"] = _image_md(bar_chart(trig, rdir / "triggers.png", title="clips by trigger"), "triggers")
    context.log.info("dataset %s@%s: %d samples from %d clips in %.1f s", res.name, res.version, res.samples, pf.selected.height, seconds)
    results = merged_results(inv, {key: md})
    if not any(isinstance(r, dg.MaterializeResult) for r in results):  # an op (the mining job): nothing in scope
        results.append(dg.MaterializeResult(asset_key=key, metadata=md))
    yield from results


def dataset_asset(spec_path: Path) -> dg.AssetsDefinition:
    key = dg.AssetKey(dataset_specs.asset_name(spec_path))

    @dg.asset(
        key=key,
        deps=[CLIP_CATALOG],
        group_name=GROUP_DATASETS,
        kinds={"beam", "webdataset"},
        retry_policy=RETRY,
        pool=DECODE_POOL,
        description=dataset_specs.describe(spec_path),
        metadata={"spec_path": dg.MetadataValue.path(str(spec_path))},
        check_specs=[dg.AssetCheckSpec(PREFLIGHT_CHECK, asset=key, blocking=True,
                                       description="BLOCKS the build: empty selection, or clips curated with privacy off."),
                     dg.AssetCheckSpec(DATASET_VERIFIED_CHECK, asset=key,
                                       description="Reported by the build job: every shard matches the manifest and every member decodes.")],
    )
    def _dataset(context: dg.AssetExecutionContext, paths: FleetPaths, beam: BeamRunner, pipes: BeamPipesClient):
        yield from build_dataset_from_spec(context, spec_path, key, paths, beam, pipes)

    return _dataset


def dataset_assets(specs_dir: str | Path) -> list[dg.AssetsDefinition]:
    """One asset per spec file: a new YAML in ``datasets/`` is a new asset, no code change."""
    return [dataset_asset(p) for p in dataset_specs.spec_files(specs_dir)]
