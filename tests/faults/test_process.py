"""Process faults: `fleet curate` and `fleet datasets build` killed with SIGKILL at seeded random
points, then rerun: the store (and the dataset) must come out byte-identical to an undisturbed run,
with nothing partial visible and no drive lost."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FLEET = [sys.executable, "-m", "fleet_cli.main"]
KILL_POINTS = 4


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}


def _curate_cmd(landing: Path, store: Path) -> list[str]:
    return [*FLEET, "curate", "--input", str(landing), "--output", str(store), "--no-privacy", "--rate-hz", "5",
            "--runner=apache_beam.runners.direct.direct_runner.BundleBasedDirectRunner"]


def _digests(root: Path, *, skip: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every visible file (not the run records, commit history or temporaries)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(skip) and "/." not in f"/{rel}":
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


STORE_SKIP = ("runs/", "_commits/", "clips/manifest.json", "staging/")


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)


def _kill_after(cmd: list[str], seconds: float) -> int:
    """Start ``cmd`` in its own process group and SIGKILL the group after ``seconds`` (or when done)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True)
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    from fleetcore.simulate import simulate_fleet

    root = tmp_path_factory.mktemp("kill") / "landing"
    simulate_fleet(root, vehicles=2, drives_per_vehicle=1, cameras=2, width=320, height=180, fps=10.0, duration_s=20.0, seed=5)
    return root


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory, landing) -> tuple[Path, float]:
    store = tmp_path_factory.mktemp("clean") / "store"
    t0 = time.monotonic()
    res = _run(_curate_cmd(landing, store))
    assert res.returncode == 0, res.stderr
    return store, time.monotonic() - t0


def test_curate_killed_at_random_points_reruns_byte_identical(tmp_path, landing, clean_store, ledger):
    store_ref, seconds = clean_store
    want = _digests(store_ref, skip=STORE_SKIP)
    rng = random.Random(20261202)
    for k in range(KILL_POINTS):
        store = tmp_path / f"store-{k}"
        at = rng.uniform(0.5, seconds)
        _kill_after(_curate_cmd(landing, store), at)
        _kill_after(_curate_cmd(landing, store), rng.uniform(0.5, seconds))  # killed twice at different points
        res = _run(_curate_cmd(landing, store))
        got = _digests(store, skip=STORE_SKIP)
        ok = res.returncode == 0 and got == want
        ledger.record(f"process/curate_kill9_{k}", "handled" if ok else ("traceback" if "Traceback" in res.stderr else "lost"))
        assert res.returncode == 0, res.stderr
        assert got == want, f"kill at {at:.2f}s: {sorted(set(got) ^ set(want)) or [k for k in got if got[k] != want[k]]}"


def test_dataset_build_killed_reruns_byte_identical(tmp_path, clean_store, ledger):
    store, _ = clean_store
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: faults\nstore: {store}\nwhere: \"true\"\ncameras: [front]\nframes_per_clip: 4\nframe_rate_hz: 2.0\n"
                    "resolution: [160, 90]\nformat: webdataset\nprivacy_required: false\n")
    cmd = [*FLEET, "datasets", "build", str(spec), "--store", str(store)]
    ref_root, root = tmp_path / "ref", tmp_path / "killed"
    t0 = time.monotonic()
    res = _run([*cmd, "--root", str(ref_root)])
    assert res.returncode == 0, res.stderr
    seconds = time.monotonic() - t0
    rng = random.Random(7)
    for k in range(2):
        _kill_after([*cmd, "--root", str(root)], rng.uniform(0.5, seconds))
    res = _run([*cmd, "--root", str(root)])
    ok = res.returncode == 0 and _digests(root, skip=()) == _digests(ref_root, skip=())
    ledger.record("process/dataset_build_kill9", "handled" if ok else "lost")
    assert res.returncode == 0, res.stderr
    assert _digests(root, skip=()) == _digests(ref_root, skip=())
