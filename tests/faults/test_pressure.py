"""Faults under pressure: a full disk (a small tmpfs the test mounts), two curate runs on one store at
once, and the temporary files killed runs leave. Each must end in a one-line error or a clean result,
leave nothing partial visible, and a rerun (with space) must succeed and verify."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fleetcore.store.verify import verify_clip_store

pytestmark = pytest.mark.slow

FLEET = [sys.executable, "-m", "fleet_cli.main"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}


def _curate(landing: Path, store: Path) -> list[str]:
    return [*FLEET, "curate", "--input", str(landing), "--output", str(store), "--no-privacy", "--no-labels", "--rate-hz", "5"]


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    from fleetcore.simulate import simulate_fleet

    root = tmp_path_factory.mktemp("pressure") / "landing"
    simulate_fleet(root, vehicles=2, drives_per_vehicle=1, cameras=2, width=320, height=180, fps=10.0, duration_s=20.0, seed=11)
    return root


def _visible_partial(store: Path) -> list[str]:
    """Visible files that are not complete: none may exist (temporaries are hidden dot-files)."""
    bad = []
    for p in store.rglob("*.tar"):
        if not p.name.startswith(".") and p.stat().st_size % 512:
            bad.append(str(p))
    return bad


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs at tmp_path/disk (needs the right to mount: root in the CI sandbox)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {res.stderr.strip() or res.returncode}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_is_one_line_and_a_rerun_with_space_succeeds(landing, small_disk, ledger):
    store = small_disk / "store"
    res = subprocess.run(_curate(landing, store), capture_output=True, text=True, env=_env(), timeout=600)
    err_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    ok = (res.returncode != 0 and "Traceback" not in res.stderr and len(err_lines) == 1 and "no space left" in err_lines[0]
          and "[no_space]" in err_lines[0])
    left = [p.name for p in small_disk.rglob(".*.tmp")]
    partial = _visible_partial(store) if store.exists() else []
    ledger.record("pressure/full_disk", "handled" if ok and not left and not partial else ("traceback" if "Traceback" in res.stderr else "wrong"))
    assert ok, res.stderr[-3000:]
    assert not left and not partial, (left, partial)
    # more space (the same mount, grown): the rerun resumes and the store verifies
    grow = subprocess.run(["mount", "-o", "remount,size=400m", str(small_disk)], capture_output=True, text=True)
    assert grow.returncode == 0, grow.stderr
    res = subprocess.run(_curate(landing, store), capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    problems = verify_clip_store(str(store))
    ledger.record("pressure/full_disk_rerun", "handled" if res.returncode == 0 and not problems else "lost")
    assert problems == [], problems


def test_two_concurrent_runs_on_one_store(landing, tmp_path, ledger):
    """Two `fleet curate` processes on one landing zone and store at once: each ends cleanly (the
    second may find the work done), the store verifies, no clip id repeats."""
    import polars as pl

    from fleetcore.store.catalog import Catalog

    store = tmp_path / "store"
    procs = [subprocess.Popen(_curate(landing, store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    tracebacks = ["Traceback" in e for _, e in outs]
    problems = verify_clip_store(str(store))
    clips = Catalog(str(store)).read("clips")
    ok = codes == [0, 0] and not any(tracebacks) and not problems and clips.height > 0 and clips["clip_id"].n_unique() == clips.height
    ledger.record("pressure/two_concurrent_curate_runs", "handled" if ok else ("traceback" if any(tracebacks) else "wrong"))
    assert codes == [0, 0], [e[-2000:] for _, e in outs]
    assert problems == [], problems
    assert clips["clip_id"].n_unique() == clips.height
    assert clips.filter(pl.col("clip_id").is_duplicated()).is_empty()


def test_orphaned_temporaries_of_killed_runs_are_removed_live_ones_kept(landing, tmp_path, ledger):
    store = tmp_path / "store"
    res = subprocess.run(_curate(landing, store), capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr
    staging = store / "staging"
    staging.mkdir(exist_ok=True)
    old = staging / f".clip-x.tar.{uuid.uuid4().hex[:16]}.tmp"
    old.write_bytes(b"partial write of a run killed an hour ago")
    two_hours = time.time() - 7200
    os.utime(old, (two_hours, two_hours))
    fresh = store / "clips" / f".shard.tar.{uuid.uuid4().hex[:16]}.tmp"
    fresh.parent.mkdir(exist_ok=True)
    fresh.write_bytes(b"a live run's write in progress")
    res = subprocess.run(_curate(landing, store), capture_output=True, text=True, env=_env(), timeout=600)
    ok = res.returncode == 0 and not old.exists() and fresh.exists()
    ledger.record("pressure/orphaned_tmp_cleanup", "handled" if ok else "wrong")
    assert res.returncode == 0, res.stderr
    assert not old.exists() and fresh.exists()
