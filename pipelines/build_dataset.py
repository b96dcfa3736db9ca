"""The dataset build job: a dataset spec over a clip store's catalog -> an immutable, versioned
training dataset (WebDataset tar or Arrow IPC shards + manifest).

Run it as::

    python -m pipelines.build_dataset --spec datasets/braking_front.yaml --store STORE --datasets-root DATASETS
        [--runner FnApiRunner --direct_running_mode multi_processing --direct_num_workers 2]

Stages: select (polars, in the launcher: the catalog is small) -> render each sample (read its
members from the clip store by offset, resample, resize, encode; staged one file per sample) ->
assign samples to shards by size, in the seeded shuffled order (one step, deterministic) -> write
shards (in parallel) -> index + manifest (last) -> rename the temp folder into place. A clip that does
not render (its stored sample does not decode) is left out and listed in the manifest's ``skipped``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from fleetcore.datasets.build import (
    MANIFEST_NAME,
    DatasetError,
    Plan,
    Staged,
    assign_shards,
    finish_build,
    plan_build,
    stage_sample,
    write_shard,
)
from fleetcore.datasets.spec import DatasetSpec, load_spec
from fleetcore.errors import FleetError
from fleetcore.store.cleanup import no_space, remove_orphans
from pipelines.runner import DEFAULT_RUNNER, beam_counters, pipeline_options, run_to_completion  # noqa: F401 (DEFAULT_RUNNER re-exported)

log = logging.getLogger(__name__)

NS = "build_dataset"

STAGED, SKIPPED = "staged", "skipped"


@dataclass(frozen=True)
class BuildResult:
    name: str
    version: str
    path: str
    manifest_path: str
    samples: int
    shards: int
    built: bool  # False when the version already existed (no-op)


class _RenderFn(beam.DoFn):
    def __init__(self, spec: DatasetSpec, staging: str):
        self.spec, self.staging = spec, staging
        self.samples = Metrics.counter(NS, "samples_rendered")
        self.skipped = Metrics.counter(NS, "samples_skipped")

    def process(self, task):
        try:
            staged = stage_sample(task, self.spec, self.staging)
        except FleetError as exc:  # an undecodable stored clip: left out and listed, the build goes on
            log.warning("clip %s skipped: %s", task.clip_id, exc)
            self.skipped.inc()
            yield SKIPPED, {"clip_id": task.clip_id, "reason": str(exc)}
            return
        self.samples.inc()
        yield STAGED, staged


class _WriteShardFn(beam.DoFn):
    def __init__(self, spec: DatasetSpec, out_dir: str):
        self.spec, self.out_dir = spec, out_dir
        self.shards = Metrics.counter(NS, "shards_written")
        self.bytes = Metrics.counter(NS, "shard_bytes_written")

    def process(self, group: tuple[str, list[Staged]]):
        name, items = group
        entry = write_shard(self.out_dir, name, items, self.spec)
        self.shards.inc()
        self.bytes.inc(entry["bytes"])
        yield entry


class _FinishFn(beam.DoFn):
    def __init__(self, plan: Plan, out_dir: str):
        self.plan, self.out_dir = plan, out_dir

    def process(self, shards: list[dict[str, Any]], skipped: list[dict[str, str]]):
        yield finish_build(self.plan, self.out_dir, shards, skipped)


class BuildDataset(beam.PTransform):
    """Planned sample tasks -> one summary element; writes shards, index and manifest into ``out_dir``."""

    def __init__(self, plan: Plan, out_dir: str):
        super().__init__()
        self.plan, self.out_dir = plan, out_dir

    def expand(self, pbegin):
        spec = self.plan.spec
        staging = os.path.join(self.out_dir, "_staging")
        ext = "tar" if spec.format == "webdataset" else "arrow"
        rendered = (
            pbegin
            | "Samples" >> beam.Create(list(self.plan.tasks), reshuffle=False)
            | "Spread" >> beam.Reshuffle()
            | "Render" >> beam.ParDo(_RenderFn(spec, staging))
        )
        skipped = (
            rendered
            | "OnlySkipped" >> beam.Filter(lambda kv: kv[0] == SKIPPED)
            | "UntagSkipped" >> beam.Map(lambda kv: kv[1])
            | "GatherSkipped" >> beam.combiners.ToList()
        )
        return (
            rendered
            | "OnlyStaged" >> beam.Filter(lambda kv: kv[0] == STAGED)
            | "UntagStaged" >> beam.Map(lambda kv: kv[1])
            | "GatherStaged" >> beam.combiners.ToList()
            | "AssignShards" >> beam.FlatMap(lambda staged: assign_shards(staged, spec.shard_bytes, ext=ext))
            | "SpreadShards" >> beam.Reshuffle()
            | "WriteShards" >> beam.ParDo(_WriteShardFn(spec, self.out_dir))
            | "GatherShards" >> beam.combiners.ToList()
            | "Finish" >> beam.ParDo(_FinishFn(self.plan, self.out_dir), skipped=beam.pvalue.AsSingleton(skipped))
        )


def _result(spec: DatasetSpec, version: str, path: Path, built: bool) -> BuildResult:
    import json

    doc = json.loads((path / MANIFEST_NAME).read_text())
    return BuildResult(spec.name, version, str(path), str(path / MANIFEST_NAME), int(doc["n_samples"]), len(doc["shards"]), built)


def _refuse_empty(tmp: Path) -> None:
    """A build whose every selected clip was skipped (undecodable) is not a dataset."""
    import json

    doc = json.loads((tmp / MANIFEST_NAME).read_text())
    if not doc["n_samples"]:
        first = doc["skipped"][0]["reason"] if doc.get("skipped") else "no samples"
        raise DatasetError(str(tmp), f"every selected clip was skipped ({len(doc.get('skipped', []))}; first: {first})", code="all_skipped")


def run_build_dataset(spec: str | os.PathLike[str] | DatasetSpec, *, store: str | None = None, datasets_root: str | os.PathLike[str],
                      beam_args: Sequence[str] = (), counters: dict[str, int] | None = None) -> BuildResult:
    """Build (or find) the dataset version of ``spec`` over ``store`` (default: the spec's ``store``).

    Returns the BuildResult; ``built`` is False when that version already existed (nothing is
    written). Raises ConfigError for a bad spec, DatasetError for an empty selection. ``counters``, when
    given, receives the job's Beam counters (namespace ``build_dataset``; none on runners without metrics).
    """
    sp = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    store_root = store or sp.store
    if not store_root:
        raise DatasetError(sp.path, "no clip store: give --store or a 'store' field in the spec", code="no_store")
    plan = plan_build(sp, str(Path(store_root).resolve()) if "://" not in str(store_root) else str(store_root))
    base = Path(datasets_root).resolve() / sp.name
    final = base / plan.version
    if (final / MANIFEST_NAME).is_file():
        log.info("dataset %s@%s already built at %s; nothing to do", sp.name, plan.version, final)
        return _result(sp, plan.version, final, False)
    if final.exists():
        raise DatasetError(str(final), "version folder exists without a manifest (not written by a build); remove it", code="version_incomplete")
    if not plan.tasks:
        raise DatasetError(sp.path, f"the selection is empty ({plan.selection.counts})", code="empty_selection")
    base.mkdir(parents=True, exist_ok=True)
    remove_orphans(str(base))  # folders of builds killed earlier (never a live build's)
    tmp = base / f".tmp-{plan.version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        p = beam.Pipeline(options=pipeline_options(beam_args))
        _ = p | "BuildDataset" >> BuildDataset(plan, str(tmp))
        result = run_to_completion(p)
        if counters is not None:
            counters.update(beam_counters(result, NS) or {})
        if not (tmp / MANIFEST_NAME).is_file():
            raise DatasetError(str(tmp), "the job finished without writing the manifest", code="build_incomplete")
        _refuse_empty(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / MANIFEST_NAME).is_file():  # a concurrent build of the same version won
                shutil.rmtree(tmp)
                return _result(sp, plan.version, final, False)
            raise
    except BaseException as exc:
        if tmp.exists():
            shutil.rmtree(tmp)
        if isinstance(exc, Exception) and no_space(exc) is not None:
            raise DatasetError(str(final), "no space left on device while building (the partial build was removed): free space and rerun",
                               code="no_space") from None
        raise
    log.info("dataset %s@%s: %d samples built at %s", sp.name, plan.version, len(plan.tasks), final)
    return _result(sp, plan.version, final, True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.build_dataset", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--spec", required=True, help="dataset spec YAML")
    p.add_argument("--store", default=None, help="clip store root (overrides the spec's store)")
    p.add_argument("--datasets-root", required=True, help="folder holding <name>/<version>/ datasets")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. Launched by Dagster Pipes (``dagster_project.beam_pipes``), the job also streams
    its logs and reports its result, Beam counters and the ``dataset_verified`` check (``pipelines.pipes``)."""
    import json

    from fleetcore.errors import FleetError
    from pipelines.pipes import EXIT_DOMAIN, pipes_session, report_dataset

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args, beam_args = build_parser().parse_known_args(argv)
    with pipes_session() as pipes:
        counters: dict[str, int] = {}
        try:
            res = run_build_dataset(args.spec, store=args.store, datasets_root=args.datasets_root, beam_args=beam_args, counters=counters)
        except FleetError as exc:
            if pipes is None:
                raise
            log.error("build_dataset: %s", exc)
            return EXIT_DOMAIN
        log.info("build_dataset: %s", json.dumps(res.__dict__))
        if pipes is not None:
            from fleetcore.datasets.manifest import verify_dataset

            problems = [str(p) for p in verify_dataset(res.path)]
            report_dataset(pipes, res.__dict__, counters if counters or not res.built else None, problems)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
