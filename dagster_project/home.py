"""Write a project-local DAGSTER_HOME (``dagster.yaml``): SQLite storage under the home folder, the
queued run coordinator, a run concurrency limit, and the ``decode`` pool limit (= CPU cores by
default; every pool without its own limit gets ``default_limit``).

    python -m dagster_project.home .dagster_home [--decode-limit N] [--max-runs N]
"""

import argparse
import os
from pathlib import Path
from typing import Sequence

import yaml

from fleetcore.landing.drives import atomic_write_bytes


def instance_config(home: Path, *, decode_limit: int | None = None, max_concurrent_runs: int = 2) -> dict:
    limit = decode_limit or os.cpu_count() or 1
    base = str(home.resolve())
    return {
        "storage": {"sqlite": {"base_dir": base}},
        "local_artifact_storage": {"module": "dagster._core.storage.root", "class": "LocalArtifactStorage", "config": {"base_dir": base}},
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"},
        "concurrency": {
            "runs": {"max_concurrent_runs": max_concurrent_runs},
            "pools": {"default_limit": limit, "granularity": "op"},
        },
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
    }


def write_home(home: str | Path, *, decode_limit: int | None = None, max_concurrent_runs: int = 2) -> Path:
    """Create ``home`` and (re)write its ``dagster.yaml``; returns the file."""
    h = Path(home)
    h.mkdir(parents=True, exist_ok=True)
    doc = instance_config(h, decode_limit=decode_limit, max_concurrent_runs=max_concurrent_runs)
    path = h / "dagster.yaml"
    atomic_write_bytes(path, yaml.safe_dump(doc, sort_keys=True).encode())
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dagster_project.home", description=__doc__.splitlines()[0])
    p.add_argument("home", help="the DAGSTER_HOME folder to create")
    p.add_argument("--decode-limit", type=int, default=None, help="concurrent steps in the decode pool (default: CPU cores)")
    p.add_argument("--max-runs", type=int, default=2, help="runs that may execute at once")
    args = p.parse_args(argv)
    write_home(args.home, decode_limit=args.decode_limit, max_concurrent_runs=args.max_runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
