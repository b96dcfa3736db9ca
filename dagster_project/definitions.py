"""The code location: ``dagster dev`` (with ``[tool.dagster] module_name = "dagster_project.definitions"``
in pyproject.toml) or ``make ui`` load ``defs``.

Dataset assets come from ``datasets/*.yaml`` at load time: a new spec file is a new asset after a
reload, no code change.
"""


from pathlib import Path

import dagster as dg

from dagster_project import assets as A
from dagster_project.beam_pipes import BeamPipesClient
from dagster_project.checks import CHECKS
from dagster_project.jobs import curate_job, datasets_job, mine_dataset
from dagster_project.loop import LOOP_ASSETS, LoopSettings, index_clips_job, loop_round_job
from dagster_project.partitions import DRIVE_DATES, drive_date_partitions
from dagster_project.resources import PROJECT_ROOT, BeamRunner, FleetPaths, QualityThresholds
from dagster_project.schedules import nightly_curate, weekly_datasets
from dagster_project.sensors import landing_sensor, store_sensor

DEFAULT_SPECS_DIR = PROJECT_ROOT / "datasets"


def build_defs(
    *,
    specs_dir: str | Path = DEFAULT_SPECS_DIR,
    paths: FleetPaths | None = None,
    beam: BeamRunner | None = None,
    limits: QualityThresholds | None = None,
    loop: LoopSettings | None = None,
) -> dg.Definitions:
    parts = drive_date_partitions()
    cjob = curate_job(parts)
    djob = datasets_job()
    return dg.Definitions(
        assets=[A.landing_drives, A.build_curate_assets(parts), A.coverage_report, *A.dataset_assets(specs_dir), *LOOP_ASSETS],
        asset_checks=CHECKS,
        jobs=[cjob, djob, mine_dataset, index_clips_job, loop_round_job],
        sensors=[landing_sensor(cjob, parts), store_sensor(parts, [A.CURATED, A.TRIGGERS, A.CLIP_STORE, A.CLIP_CATALOG])],
        schedules=[nightly_curate(cjob, partitions_name=DRIVE_DATES), weekly_datasets(djob)],
        resources={
            "paths": paths or FleetPaths(),
            "beam": beam or BeamRunner(),
            "limits": limits or QualityThresholds(),
            "loop": loop or LoopSettings(),
            "pipes": BeamPipesClient(),
        },
    )


defs = build_defs()
