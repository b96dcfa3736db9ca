"""Resources: where the fleet's data lives (``FleetPaths``), how Beam jobs run (``BeamRunner``) and the
thresholds of the asset checks (``QualityThresholds``).

Nothing here reads the environment at import time. ``FleetPaths`` falls back, at run time, to the
environment variables ``FLEET_LANDING_ROOT`` / ``FLEET_STORE_ROOT`` / ``FLEET_DATASETS_ROOT`` /
``FLEET_REPORTS_ROOT`` and then to project-local folders under ``demo_out/`` (what ``make demo`` writes),
so ``make demo && make ui`` shows data. The clip store may be a URI (``s3://bucket/store``).
Any field can also be set to ``dg.EnvVar("...")`` in the definitions or in the Launchpad's run config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import dagster as dg

#: The repository root (the folder holding pyproject.toml), for project-local defaults.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: Beam's local engine, named explicitly (an unnamed runner / "DirectRunner" first tries to download Prism).
DEFAULT_RUNNER = "FnApiRunner"

ENV_LANDING = "FLEET_LANDING_ROOT"
ENV_STORE = "FLEET_STORE_ROOT"
ENV_DATASETS = "FLEET_DATASETS_ROOT"
ENV_REPORTS = "FLEET_REPORTS_ROOT"


def _pick(value: Optional[str], env: str, default: Path) -> Path:
    if value:
        return Path(value)
    from_env = os.environ.get(env)  # read at run time, never at import time
    return Path(from_env) if from_env else default


class FleetPaths(dg.ConfigurableResource):
    """The landing zone, the clip store, the datasets folder and where the assets' pictures go.

    Empty fields resolve at run time to ``$FLEET_LANDING_ROOT`` / ``$FLEET_STORE_ROOT`` /
    ``$FLEET_DATASETS_ROOT`` / ``$FLEET_REPORTS_ROOT``, else to
    ``<project>/demo_out/{landing,store,datasets}``; reports default to the store's ``reports/``
    folder for a local store and to ``<project>/demo_out/reports`` for one on object storage.
    """

    landing_root: str = ""
    store_root: str = ""
    datasets_root: str = ""
    reports_root: str = ""

    def landing(self) -> str:
        """The landing zone root: a local path or a URI (``s3://bucket/landing``), as given."""
        return self.landing_root or os.environ.get(ENV_LANDING) or str(PROJECT_ROOT / "demo_out" / "landing")

    def store(self) -> str:
        """The clip store root: a local path or a URI (``s3://bucket/store``), as given."""
        return self.store_root or os.environ.get(ENV_STORE) or str(PROJECT_ROOT / "demo_out" / "store")

    def reports(self) -> Path:
        """A local folder for the pictures embedded in asset metadata."""
        from fleetcore.store.fs import resolve
        from fleetcore.store.layout import StoreLayout

        remote, local = resolve(self.store())
        default = PROJECT_ROOT / "demo_out" / "reports" if remote is not None else Path(StoreLayout(local).reports_dir)
        return _pick(self.reports_root, ENV_REPORTS, default)

    def datasets(self) -> Path:
        return _pick(self.datasets_root, ENV_DATASETS, PROJECT_ROOT / "demo_out" / "datasets")


class BeamRunner(dg.ConfigurableResource):
    """How the assets launch their Beam jobs.

    ``runner`` is a Beam runner name (default ``FnApiRunner``, Beam's local engine; e.g. ``DaskRunner``
    with ``options=["--dask_client_address=tcp://host:8786"]``). ``options`` are extra Beam pipeline
    options passed verbatim (e.g. ``--direct_running_mode=multi_processing``, ``--direct_num_workers=2``).
    ``python`` is the interpreter that runs the jobs (``python -m pipelines.curate ...``, launched through
    Dagster Pipes); empty: the Dagster process's own.
    """

    runner: str = DEFAULT_RUNNER
    options: list[str] = []
    python: str = ""

    def beam_args(self) -> list[str]:
        opts = [o for o in self.options if not o.startswith("--runner")]
        return [f"--runner={self.runner}", *opts]


class QualityThresholds(dg.ConfigurableResource):
    """Thresholds of the asset checks (fractions are 0..1)."""

    quarantine_warn: float = 0.05  # WARN above 5 % of drives quarantined
    quarantine_error: float = 0.20  # ERROR above 20 %
    telemetry_min_coverage: float = 0.9  # fraction of curated drives that carry telemetry
    telemetry_max_gap_s: float = 1.0  # WARN when a drive's longest telemetry gap is longer
    clips_per_event_min: float = 0.1  # clips per trigger event: expected band
    clips_per_event_max: float = 1.5
    label_min_coverage: float = 0.5  # fraction of clips with at least one label
