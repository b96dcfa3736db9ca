"""The curate job on a real multi-process Dask cluster: ``dask scheduler`` and two ``dask worker``
processes (one thread each, loopback, free ports), landing zone and clip store on moto's S3 server, the
job launched as ``python -m pipelines.curate --runner=...DaskRunner``. Same shard bytes and catalog as
the local runner; a worker killed mid-job leaves either a finished job or a clear error, and a rerun
gives the same bytes; and the Dagster curate asset runs the job on the cluster through Pipes.

The DaskRunner computes only what the last transform needs, mixes ``with_outputs`` tags, drops
``finish_bundle`` output and has no metrics: the job is built for that (one sink fed by a Flatten of
every branch, tagged values instead of side outputs; tests/test_curate_pipeline.py), so a quarantined
drive here checks that the quarantine branch runs too, and the summary has no counters.

Every process started here has its own process group and is killed by group id at teardown.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, start_empty_moto

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).with_name("dask")
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children of an exited leader (the nanny's worker)
    except ProcessLookupError:
        pass


@pytest.fixture
def moto_s3(monkeypatch):
    """moto's S3 server on 127.0.0.1 and the environment the job and the workers need to reach it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    start_empty_moto(endpoint)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint}
    for k, v in env.items():  # this process reads the store too
        monkeypatch.setenv(k, v)
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3", endpoint_url=endpoint, key="test", secret="test")
    fs.mkdir("fleet")
    try:
        yield fs, env
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Cluster:
    """A scheduler and two single-threaded workers, each its own process group."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env = tmp, env
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.dead: list[subprocess.Popen] = []

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen([str(DASK), *args], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        log.close()

    def start(self, n_workers: int = 2) -> "Cluster":
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"])
        for i in range(n_workers):
            self.add_worker(f"worker-{i}")
        self.wait_for_workers(n_workers)
        return self

    def add_worker(self, name: str) -> None:
        self._start(name, ["worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                           "--name", name, "--death-timeout", "60", "--local-directory", str(self.tmp / f"{name}-space")])

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30)

    def wait_for_workers(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                assert p.poll() is None, f"{name} exited:\n{(self.tmp / f'{name}.log').read_text()[-3000:]}"
            try:
                with self.client() as c:
                    c.wait_for_workers(n, timeout=5)
                    return
            except (OSError, TimeoutError):
                time.sleep(1)
        raise AssertionError(f"{n} dask workers did not join {self.address}")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)  # nanny and worker: a lost machine
        proc.wait(timeout=10)
        self.dead.append(proc)

    def stop(self) -> None:
        for p in [*self.procs.values(), *self.dead]:
            _stop(p)


@pytest.fixture
def cluster(tmp_path, moto_s3):
    _, env = moto_s3
    c = Cluster(tmp_path, _env(env))
    try:
        yield c.start()
    finally:
        c.stop()


def _curate_cmd(address: str, summary: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.curate", "--input", "s3://fleet/landing", "--output", "s3://fleet/store",
            "--summary-json", str(summary), f"--runner={DASK_RUNNER}", f"--dask_client_address={address}", "--dask_npartitions=4"]


def _digests(paths: list[str]) -> list[str]:
    from fleetcore.store.fs import read_bytes

    return sorted(hashlib.sha256(read_bytes(p)).hexdigest() for p in paths)


def _store_state(store: str):
    """(shard sha256s, clips catalog sorted, labels catalog sorted, quarantined drive ids) of a store."""
    from fleetcore.store.catalog import Catalog
    from fleetcore.store.fs import glob
    from dagster_project import facts

    cat = Catalog(store)
    clips = cat.read("clips")
    clips = clips.sort("clip_id")
    labels = cat.read("labels")
    labels = labels.sort(labels.columns[:4])
    quarantined = sorted(q["drive_id"] for q in facts.quarantine_records(store))
    return _digests(glob(f"{store.rstrip('/')}/clips/date=*/*.tar")), clips, labels, quarantined


@pytest.fixture(scope="module")
def tiny_landing(tmp_path_factory) -> Path:
    """2 drives x 1 camera x 10 s at 160x96, plus a broken copy of one under another vehicle (quarantined)."""
    from fleetcore.landing.drives import list_drives
    from fleetcore.simulate import simulate_fleet

    root = tmp_path_factory.mktemp("dask-fleet") / "landing"
    simulate_fleet(root, vehicles=2, drives_per_vehicle=1, cameras=1, width=160, height=96, fps=10.0, duration_s=10.0, seed=5, workers=1)
    good = list_drives(root)[0].path
    broken = root / "veh-broken" / good.name
    shutil.copytree(good, broken)
    next((broken / "cameras").rglob("*.mp4")).write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def local_reference(tiny_landing, tmp_path_factory):
    from fleetcore.clips import CurateConfig
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    store = tmp_path_factory.mktemp("dask-ref") / "store"
    summary = run_curate(str(tiny_landing), str(store), CurateConfig(), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert summary["clips"] > 0 and len(summary["quarantined"]) == 1
    return str(store), summary


def _assert_same_store(remote: str, local: str) -> None:
    r_shards, r_clips, r_labels, r_q = _store_state(remote)
    l_shards, l_clips, l_labels, l_q = _store_state(local)
    assert r_shards and r_shards == l_shards  # byte-identical shards
    assert r_clips.equals(l_clips)
    assert r_labels.equals(l_labels)
    assert r_q == l_q and len(r_q) == 1  # the quarantine branch ran on Dask too


def test_curate_on_a_dask_cluster_matches_the_local_runner(tiny_landing, local_reference, moto_s3, cluster, tmp_path):
    fs, env = moto_s3
    fs.put(str(tiny_landing), "fleet/landing", recursive=True)
    summary_path = tmp_path / "summary.json"
    t0 = time.monotonic()
    proc = subprocess.run(_curate_cmd(cluster.address, summary_path), cwd=REPO, env=_env(env), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    summary = json.loads(summary_path.read_text())
    ref_store, ref = local_reference
    assert summary["metrics"] is None  # the DaskRunner has no metrics; the summary comes from the job's own sink
    assert summary["runner"].endswith("DaskRunner")
    assert summary["clips"] == ref["clips"] and summary["drives_curated"] == ref["drives_curated"] == 2
    assert [q["code"] for q in summary["quarantined"]] == [q["code"] for q in ref["quarantined"]]
    with cluster.client() as c:  # both workers took part
        assert len(c.scheduler_info()["workers"]) == 2
    _assert_same_store("s3://fleet/store", ref_store)
    assert time.monotonic() - t0 < 240


def test_a_worker_killed_mid_job_then_a_rerun_gives_the_same_bytes(tiny_landing, local_reference, moto_s3, cluster, tmp_path):
    fs, env = moto_s3
    fs.put(str(tiny_landing), "fleet/landing", recursive=True)
    summary_path = tmp_path / "summary.json"
    job = subprocess.Popen(_curate_cmd(cluster.address, summary_path), cwd=REPO, env=_env(env), stdout=subprocess.DEVNULL,
                           stderr=open(tmp_path / "job.log", "wb"), start_new_session=True)
    killed = None
    try:
        with cluster.client() as c:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and job.poll() is None:
                processing = c.processing()
                busy = sorted(w["name"] for addr, w in c.scheduler_info()["workers"].items() if processing.get(addr))
                if busy:  # a worker is running a task of the job: kill it (a lost machine)
                    killed = busy[0]
                    cluster.kill(killed)
                    break
                time.sleep(0.05)
        assert killed, "no worker ran a task of the job"
        rc = job.wait(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    log = (tmp_path / "job.log").read_text(errors="replace")
    print(f"job after losing {killed}: exit status {rc}")
    if rc != 0:
        # a clear error: the job names the lost worker / the failed task, not a hang or a partial store
        assert any(s in log for s in ("KilledWorker", "worker", "Worker")), log[-4000:]
        assert not summary_path.exists()
    # the rerun (on the surviving worker, plus a fresh one) finishes the job; same bytes as the local runner
    cluster.add_worker("worker-new")
    cluster.wait_for_workers(2)
    proc = subprocess.run(_curate_cmd(cluster.address, summary_path), cwd=REPO, env=_env(env), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    _assert_same_store("s3://fleet/store", local_reference[0])
    if rc == 0:  # the job survived the lost worker: the rerun has nothing left to do
        assert json.loads(summary_path.read_text())["drives_curated"] == 0


DAGSTER_DRIVER = r'''
import json, sys
import dagster as dg
from dagster_project import assets as A
from dagster_project.beam_pipes import BeamPipesClient
from dagster_project.partitions import DRIVE_DATES, drive_date_partitions
from dagster_project.resources import BeamRunner, FleetPaths

landing, store, reports, address, date, out = sys.argv[1:7]
instance = dg.DagsterInstance.ephemeral()
instance.add_dynamic_partitions(DRIVE_DATES, [date])
beam = BeamRunner(runner="apache_beam.runners.dask.dask_runner.DaskRunner", options=[f"--dask_client_address={address}", "--dask_npartitions=4"])
res = dg.materialize([A.build_curate_assets(drive_date_partitions())], partition_key=date, instance=instance, raise_on_error=False,
                     resources={"paths": FleetPaths(landing_root=landing, store_root=store, reports_root=reports), "beam": beam,
                                "pipes": BeamPipesClient()})
mats = {e.materialization.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items() if isinstance(v.value, (int, float, str))}
        for e in res.get_asset_materialization_events()}
json.dump({"success": res.success, "beam_imported": "apache_beam" in sys.modules, "materializations": mats,
           "failures": [e.event_specific_data.error.message for e in res.all_events if e.is_step_failure]}, open(out, "w"))
'''


def test_dagster_runs_the_curate_job_on_the_cluster_through_pipes(tiny_landing, local_reference, moto_s3, cluster, tmp_path):
    """The curate asset with ``BeamRunner(runner=DaskRunner, options=[--dask_client_address=...])``: the job
    runs on the cluster, out of the Dagster process; the runner has no metrics, the metadata says so."""
    _, env = moto_s3
    date = local_reference[1]["dates"][0]
    driver, out = tmp_path / "driver.py", tmp_path / "out.json"
    driver.write_text(DAGSTER_DRIVER)
    proc = subprocess.run([sys.executable, str(driver), str(tiny_landing), "s3://fleet/dagster-store", str(tmp_path / "reports"), cluster.address,
                           date, str(out)], cwd=REPO, env=_env(env), capture_output=True, text=True, timeout=600)
    assert out.is_file(), proc.stderr[-5000:]
    doc = json.loads(out.read_text())
    assert doc["success"], doc["failures"]
    assert doc["beam_imported"] is False
    md = doc["materializations"]["clip_store"]
    assert md["beam_metrics"] == "unavailable on this runner" and md["run/runner"].endswith("DaskRunner")
    assert md["run/clips"] == md["clips"] > 0
    r_shards = _store_state("s3://fleet/dagster-store")[0]
    l_shards = _store_state(local_reference[0])[0]
    assert r_shards == l_shards
