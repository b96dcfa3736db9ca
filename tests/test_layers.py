"""Imports point down only: dagster_project -> pipelines -> fleetcore -> schemas (import-linter)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 7 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize("pkg", ["fleetcore", "schemas"])
def test_pure_layers_have_no_engine_imports_in_source(pkg):
    # A second, dumb check that also sees imports inside functions and strings passed to importlib.
    bad = []
    for p in (ROOT / pkg).rglob("*.py"):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            s = line.strip()
            if s.startswith(("import ", "from ")) and any(
                s.split()[1].split(".")[0] == m for m in ("dagster", "apache_beam", "pipelines", "dagster_project", "fleet_cli")
            ):
                bad.append(f"{p.relative_to(ROOT)}:{i}: {s}")
    assert not bad, bad
