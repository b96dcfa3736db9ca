"""Jobs: the per-day curate job (asset job over the curate multi-asset and its checks), the dataset
rebuild job, and ``mine_dataset`` (ad hoc mining from the Launchpad)."""


import re
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from dagster_project import assets as A
from dagster_project.beam_pipes import BeamPipesClient
from dagster_project.resources import BeamRunner, FleetPaths

CURATE_JOB = "curate_job"
DATASETS_JOB = "datasets_job"
MINE_JOB = "mine_dataset"


def curate_job(partitions_def: dg.PartitionsDefinition) -> Any:
    return dg.define_asset_job(
        CURATE_JOB,
        selection=dg.AssetSelection.assets(A.CURATED, A.TRIGGERS, A.CLIP_STORE, A.CLIP_CATALOG),
        partitions_def=partitions_def,
        description="Curate one UTC drive date: the curate Beam job for that partition, then its checks.",
    )


def datasets_job() -> Any:
    return dg.define_asset_job(
        DATASETS_JOB,
        selection=dg.AssetSelection.groups(A.GROUP_DATASETS) | dg.AssetSelection.assets(A.COVERAGE),
        description="Rebuild the coverage report and every dataset asset (one per datasets/*.yaml).",
    )


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


class MineConfig(dg.Config):
    """Ad hoc mining. ``query``: a full ``SELECT ... FROM clips ...`` (polars SQL; label names are
    columns) or just a predicate (``primary_trigger = 'hard_brake'``). The dataset is built like a
    spec file's, under ``<datasets_root>/<dataset_name>/<version>/``."""

    query: str = "SELECT * FROM clips WHERE primary_trigger <> 'random_sample'"
    dataset_name: str = "mined"
    description: str = ""
    cameras: list[str] = ["front"]
    frames_per_clip: int = 4
    frame_rate_hz: float = 2.0
    resolution: list[int] = [224, 128]


def write_mined_spec(config: MineConfig, paths: FleetPaths) -> Path:
    """``<datasets_root>/_mined_specs/<dataset_name>.yaml`` (kept beside the datasets, for lineage)."""
    from fleetcore.landing.drives import atomic_write_bytes

    from dagster_project.dataset_specs import mined_spec

    if not _NAME_RE.match(config.dataset_name):
        raise dg.Failure(description=f"dataset_name {config.dataset_name!r}: expected letters, digits, _ or - (max 64)", allow_retries=False)
    spec = mined_spec(config.dataset_name, config.query, cameras=config.cameras, frames_per_clip=config.frames_per_clip,
                      frame_rate_hz=config.frame_rate_hz, resolution=config.resolution, description=config.description)
    path = paths.datasets() / "_mined_specs" / f"{config.dataset_name}.yaml"
    atomic_write_bytes(path, yaml.safe_dump(spec, sort_keys=True).encode())
    return path


@dg.op(description="Write a dataset spec from the run config, then gate and build it like a dataset asset; "
       "records an AssetMaterialization of mined/<dataset_name>.")
def mine(context: dg.OpExecutionContext, config: MineConfig, paths: FleetPaths, beam: BeamRunner, pipes: BeamPipesClient) -> str:
    spec_path = write_mined_spec(config, paths)
    key = dg.AssetKey(["mined", config.dataset_name])
    context.log.info("mined spec written to %s", spec_path)
    for ev in A.build_dataset_from_spec(context, spec_path, key, paths, beam, pipes):
        if isinstance(ev, dg.AssetCheckResult):
            context.log.info("gate %s: %s", "passed" if ev.passed else "FAILED", ev.description)
        elif isinstance(ev, dg.MaterializeResult):
            context.log_event(dg.AssetMaterialization(asset_key=key, metadata=ev.metadata))
    return str(spec_path)


@dg.job(name=MINE_JOB, description="Ad hoc mining: set ops.mine.config.query / dataset_name in the Launchpad.")
def mine_dataset() -> None:
    mine()
